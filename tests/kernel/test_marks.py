"""Kernels that drop ipvland's marks: detection, and the record that stands in for NDA_PROTOCOL.

This kernel keeps every mark, so the fallback is FORCED here: the RecordingKernel ignores the
protocol the kernel reports (what a kernel before 5.0 shows) and decides ownership from its record.
The same scenario, run once with the kernel's mark and once with the forced record, must give the
same plans, outcomes and final state.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ipvland import marks
from ipvland import spec as spec_mod
from ipvland.kernel import Kernel
from ipvland.reconcile import reconcile


def sh(*cmd: str) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout


@pytest.fixture
def wire() -> Iterator[None]:
    """veth mk0 (the NIC, fixed MAC: a MAC change would flush its neighbors) and its peer mk0p."""
    sh("ip", "link", "add", "mk0", "address", "02:00:00:00:0b:01", "type", "veth", "peer", "name", "mk0p")
    sh("ip", "link", "set", "mk0", "up")
    yield
    subprocess.run(["ip", "link", "del", "mk0"], check=False)
    subprocess.run(["ip", "netns", "del", "mk"], check=False)


def config(neighbors: str, device_neighbors: str = "[{address: 192.0.2.1, lladdr: \"02:00:00:00:0b:fe\"}]") -> str:
    return textwrap.dedent(f"""\
        version: 1
        parents:
          mk0:
            mode: l3
            neighbors: {neighbors}
            devices:
              mkweb0: {{netns: mk, addresses: [192.0.2.10/24], neighbors: {device_neighbors}}}
        """)


STEPS = [
    ("install", config('[{address: 192.0.2.50, lladdr: "02:00:00:00:0b:50"},'
                       ' {address: "2001:db8::50", lladdr: "02:00:00:00:0b:51"}]')),
    ("again: nothing to do", config('[{address: 192.0.2.50, lladdr: "02:00:00:00:0b:50"},'
                                    ' {address: "2001:db8::50", lladdr: "02:00:00:00:0b:51"}]')),
    ("one removed, one changed", config('[{address: 192.0.2.50, lladdr: "02:00:00:00:0b:5a"}]')),
    ("a foreign entry in the way", config('[{address: 192.0.2.50, lladdr: "02:00:00:00:0b:5a"},'
                                          ' {address: 192.0.2.60, lladdr: "02:00:00:00:0b:60"}]')),
    ("teardown", "version: 1\nparents: {}\n"),
]


def scenario(tmp_path: Path, open_kernel: Callable[[], Any]) -> list[Any]:
    """Every step's plan, outcomes and what is left; a foreign permanent entry sits at 192.0.2.60."""
    subprocess.run(["ip", "netns", "del", "mk"], check=False)  # each run starts from the same state
    sh("ip", "neigh", "replace", "192.0.2.60", "lladdr", "02:00:00:00:0b:66", "dev", "mk0", "nud", "permanent")
    seen: list[Any] = []
    for name, text in STEPS:
        (tmp_path / "config.yaml").write_text(text)
        with open_kernel() as kernel:
            report = reconcile(spec_mod.load(tmp_path / "config.yaml"), kernel)
        final = report.remaining or report.plan
        seen.append((name, [c.describe() for c in report.plan.changes], [c.describe() for c in report.plan.conflicts],
                     [o.describe() for o in report.outcomes], [c.describe() for c in final.changes]))
    left = json.loads(sh("ip", "-j", "neigh", "show", "dev", "mk0", "nud", "permanent") or "[]")
    seen.append(("left", sorted((e["dst"], e["lladdr"]) for e in left)))
    return seen


def test_this_kernel_keeps_every_mark() -> None:
    assert marks.detect() == {marks.ALIAS: True, marks.ROUTE: True, marks.NEIGHBOR: True, marks.FLAGS: True}
    assert marks.missing() == []


def test_forced_record_fallback_gives_the_same_plans_as_the_kernels_neighbor_protocol(
        wire: None, tmp_path: Path) -> None:
    with_mark = scenario(tmp_path, Kernel)
    state = tmp_path / "state"
    record = marks.Record(state)
    forced = scenario(tmp_path, lambda: marks.RecordingKernel(Kernel(), record, strip=True))
    assert forced == with_mark
    assert with_mark[0][1]  # the scenario did install entries ...
    assert with_mark[1][1:] == ([], [], [], [])  # ... converged with nothing left to do ...
    assert with_mark[3][2] and "192.0.2.60" in with_mark[3][2][0]  # ... met the foreign entry as a conflict ...
    assert with_mark[-1] == ("left", [("192.0.2.60", "02:00:00:00:0b:66")])  # ... and left only it
    assert record.read() == set()  # the teardown removed every recorded entry
    assert (state / marks.RECORD_FILE).stat().st_mode & 0o777 == 0o640


def test_forced_without_its_record_every_entry_looks_foreign(wire: None, tmp_path: Path) -> None:
    """The strip is real: with the kernel's protocol ignored and no record, ipvland's own entries
    read as foreign, which is what a kernel that drops NDA_PROTOCOL did to ipvland before."""
    (tmp_path / "config.yaml").write_text(STEPS[0][1])
    spec = spec_mod.load(tmp_path / "config.yaml")
    with marks.RecordingKernel(Kernel(), marks.Record(tmp_path / "kept"), strip=True) as kernel:
        assert reconcile(spec, kernel).ok
    with marks.RecordingKernel(Kernel(), marks.Record(tmp_path / "lost"), strip=True) as kernel:
        report = reconcile(spec, kernel, dry_run=True)
    assert len(report.plan.conflicts) == 3, [c.describe() for c in report.plan.conflicts]
    with marks.RecordingKernel(Kernel(), marks.Record(tmp_path / "kept"), strip=True) as kernel:
        assert reconcile(spec, kernel, dry_run=True).plan.empty
