"""Signals and sd_notify end to end: the daemon as a real process (its reconcile is a recording stub,
so this is about the process' behaviour, not the kernel's)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

SCRIPT = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from ipvland import daemon
    from ipvland.model import Plan, Spec
    from ipvland.reconcile import Report

    marks = Path(sys.argv[2])

    def load(path):
        return Spec(version=1, sources=(str(path), path.read_text()))

    def reconcile(spec, kernel):
        with marks.open("a") as f:
            f.write("begin\\n")
        time.sleep(float(spec.sources[1].split()[-1]))
        with marks.open("a") as f:
            f.write("end\\n")
        return Report(Plan(), (), Plan(), time.time(), 0.0)

    daemon.setup_logging("debug")
    d = daemon.Daemon(Path(sys.argv[1]), state_dir=Path(sys.argv[3]), load_fn=load, reconcile_fn=reconcile,
                      kernel_factory=object, namespaces_fn=lambda s, k: frozenset(), watch_netlink=False,
                      watchdog_usec=daemon._watchdog_usec())
    daemon.install_signals(d)
    sys.exit(d.serve())
""")


class Proc:
    def __init__(self, tmp: Path, delay: float, env: dict[str, str]) -> None:
        self.config = tmp / "config.yaml"
        self.config.write_text(f"delay {delay}\n")
        self.marks = tmp / "marks"
        self.rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.rx.bind(str(tmp / "notify"))
        self.rx.settimeout(10)
        self.messages: list[str] = []
        self.p = subprocess.Popen(
            [sys.executable, "-c", SCRIPT, str(self.config), str(self.marks), str(tmp / "state")],
            env={**os.environ, "NOTIFY_SOCKET": str(tmp / "notify"), "INVOCATION_ID": "x", **env},
            stderr=subprocess.PIPE, text=True)

    def expect(self, field: str) -> None:
        while True:
            data = self.rx.recv(4096).decode()
            self.messages.extend(data.split("\n"))
            if any(m.startswith(field) for m in data.split("\n")):
                return


@pytest.fixture
def proc(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Proc]:
    delay, env = getattr(request, "param", (0.0, {}))
    p = Proc(tmp_path, delay, env)
    yield p
    if p.p.poll() is None:
        p.p.kill()
        p.p.wait()
    p.rx.close()


def test_ready_reload_and_clean_stop(proc: Proc) -> None:
    proc.expect("READY=1")
    proc.config.write_text("delay 0.0 # edited\n")
    proc.p.send_signal(signal.SIGHUP)
    proc.expect("READY=1")
    i = proc.messages.index("RELOADING=1")
    assert proc.messages[i + 1].startswith("MONOTONIC_USEC=")
    proc.p.send_signal(signal.SIGTERM)
    assert proc.p.wait(10) == 0
    proc.expect("STOPPING=1")
    err = proc.p.stderr.read() if proc.p.stderr else ""
    assert "<6>SIGHUP received" in err
    assert "<6>config generation 2 loaded" in err
    # Under systemd (INVOCATION_ID set) lines carry a syslog prefix and no timestamp of our own.
    assert all(line.startswith("<") for line in err.splitlines() if line), err


@pytest.mark.parametrize("proc", [(1.0, {})], indirect=True)
def test_sigterm_mid_reconcile_finishes_it_then_exits_0(proc: Proc) -> None:
    deadline = time.monotonic() + 10
    while not (proc.marks.exists() and "begin" in proc.marks.read_text()):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.p.send_signal(signal.SIGTERM)
    assert proc.p.wait(10) == 0
    assert proc.marks.read_text().split() == ["begin", "end"]  # finished, and no reconcile after it


@pytest.mark.parametrize("proc", [(0.0, {"WATCHDOG_USEC": "200000"})], indirect=True)
def test_watchdog_pings_from_the_process(proc: Proc) -> None:
    proc.expect("READY=1")
    t0 = time.monotonic()
    for _ in range(3):
        proc.expect("WATCHDOG=1")
    assert time.monotonic() - t0 < 1.0


@pytest.mark.parametrize("proc", [(0.0, {"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"})], indirect=True)
def test_watchdog_for_another_pid_is_ignored(proc: Proc) -> None:
    proc.expect("READY=1")
    proc.rx.settimeout(0.5)
    with pytest.raises(TimeoutError):
        proc.expect("WATCHDOG=1")
