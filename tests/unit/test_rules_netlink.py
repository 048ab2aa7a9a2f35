"""Policy rules on this host's real kernel (rules need no IPVLAN), in a throwaway network namespace."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CONFIG = """\
version: 1
parents:
  lab0: {}
rules:
  - {priority: 101, fwmark: 0, fwmask: 0xff, table: 300}
  - {priority: 102, fwmark: 9, table: 300}
  - {priority: 103, fwmark: 7, fwmask: 0xff, action: prohibit}
"""


def test_fwmark_zero_with_a_mask_is_sent_read_back_and_converges(tmp_path: Path) -> None:
    """Review finding: `fwmark: 0, fwmask: 0xff` (unmarked packets only) was sent without the mark, so
    the kernel's rule matched every packet, and the plan never emptied (+ rule 101 / - rule 101)."""
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG)
    py = f"{sys.executable} -m ipvland"
    script = (f"ip link add lab0 type veth peer name lab0p && ip link set lab0 up && {py} apply -c {config} "
              f"&& {py} plan -c {config}; echo PLAN=$?; ip -4 rule show")
    r = subprocess.run(["unshare", "--net", "sh", "-c", script], cwd=ROOT, capture_output=True, text=True,
                       timeout=120, check=False)
    assert "PLAN=0" in r.stdout, r.stdout + r.stderr
    assert "101:\tfrom all fwmark 0/0xff lookup 300 proto 212" in r.stdout, r.stdout
    assert "102:\tfrom all fwmark 0x9 lookup 300 proto 212" in r.stdout, r.stdout
    assert "103:\tfrom all fwmark 0x7/0xff prohibit proto 212" in r.stdout, r.stdout
