"""The systemd host image: ipvland as a real user installs it, under systemd as PID 1 (issue 10).

One image build and one boot (which reboots once by itself) for the whole module: the guest runs the checks
of tests/hostimage/guest/hosttest.py and reports each on the serial console; here each becomes one test.
tests/run runs this stage on the host (it boots its own qemu); it fails, never skips, when the image cannot
be built or booted.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

HERE = Path(__file__).parent
REPO = HERE.parents[1]
_spec = importlib.util.spec_from_file_location("hosttest", HERE / "guest" / "hosttest.py")
assert _spec is not None and _spec.loader is not None
hosttest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(hosttest)

CHECKS = [c.__name__ for c in (*hosttest.PHASE1, *hosttest.PHASE2)]
LINE = re.compile(r"HOSTCHECK (PASS|FAIL) (\S+) ?(.*)")

pytestmark = pytest.mark.hostimage


@pytest.fixture(scope="module")
def console() -> dict[str, tuple[str, str]]:
    """Build the image, boot it, and return {check: (PASS|FAIL, detail)} from its console."""
    if os.geteuid() != 0:
        pytest.fail("the host image needs root (mmdebstrap, chroot, mkfs)", pytrace=False)
    out = REPO / ".vm" / "hostimage"
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    built = subprocess.run([str(HERE / "build")], capture_output=True, text=True, check=False)
    if built.returncode != 0:
        pytest.fail(f"image build failed:\n{built.stderr[-3000:]}", pytrace=False)
    image = built.stdout.strip().splitlines()[-1]
    t1 = time.monotonic()
    log = out / "console.log"
    booted = subprocess.run([str(HERE / "boot"), image, str(log)], capture_output=True, text=True, check=False)
    t2 = time.monotonic()
    text = log.read_text(errors="replace") if log.exists() else ""
    print(f"\nhost image: built in {t1 - t0:.0f}s, guest ran {t2 - t1:.0f}s; {booted.stderr.strip()}")
    for line in text.splitlines():
        if "HOSTCHECK INFO" in line:
            print(line[line.index("HOSTCHECK"):])
    results: dict[str, tuple[str, str]] = {}
    for line in text.splitlines():
        m = LINE.search(line)
        if m:
            results[m.group(2)] = (m.group(1), m.group(3))
    if not results:
        pytest.fail(f"the guest reported nothing (qemu exit {booted.returncode}); console tail:\n{text[-3000:]}",
                    pytrace=False)
    if "HOSTCHECK DONE" not in text:
        print(f"the guest did not finish (qemu exit {booted.returncode}); console tail:\n{text[-2000:]}")
    return results


@pytest.mark.parametrize("check", CHECKS)
def test_host(console: dict[str, tuple[str, str]], check: str) -> None:
    assert check in console, f"{check}: the guest never reported it (see .vm/hostimage/console.log)"
    verdict, detail = console[check]
    print(f"{check}: {detail}")
    assert verdict == "PASS", detail
