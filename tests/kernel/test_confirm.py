"""Try, then keep or revert (issue 14), on a real kernel: `ipvland apply --confirm-timeout` confirmed,
timed out, and killed with SIGKILL while it waits (the daemon, or the next apply, finishes the revert;
the daemon holds off until the deadline)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from iproute import addrs, lab_setup, link

REPO = Path(__file__).resolve().parents[2]
SLOW = 180.0  # seconds: Python under emulation

A = """
    version: 1
    parents:
      lab0:
        mode: l2
        devices:
          web0: {netns: web, addresses: [192.0.2.10/24], mtu: 1500}
    """
B = """
    version: 1
    parents:
      lab0:
        mode: l2
        devices:
          web0: {netns: web, addresses: [192.0.2.10/24, 192.0.2.20/24], mtu: 1400}
          app1: {netns: app, addresses: [192.0.2.21/24]}
    """


def ipvland(*args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ipvland", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=SLOW, **kw)


def wait_until(what: str, pred: Callable[[], bool], timeout: float = SLOW) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def state() -> tuple[int | None, set[str], bool]:
    """web0's MTU and addresses, and whether app1 exists (its namespace is made by B, never deleted)."""
    web0 = link("web0", "web")
    app1 = Path("/run/netns/app").exists() and link("app1", "app") is not None
    return (web0["mtu"] if web0 else None, addrs("web0", "web") if web0 else set(), app1)


STATE_A = (1500, {"192.0.2.10/24"}, False)
STATE_B = (1400, {"192.0.2.10/24", "192.0.2.20/24"}, True)


class Lab:
    def __init__(self, d: Path) -> None:
        self.dir = d
        self.a, self.b = d / "a" / "config.yaml", d / "b" / "config.yaml"
        for path, text in ((self.a, A), (self.b, B)):
            path.parent.mkdir(exist_ok=True)
            path.write_text(textwrap.dedent(text))
        self.state = d / "state"

    def reset(self) -> None:
        """State A, no try pending."""
        for name in ("try.json", "try.done.json"):
            (self.state / name).unlink(missing_ok=True)
        r = ipvland("apply", "-c", str(self.a), "--state-dir", str(self.state))
        assert r.returncode == 0, r.stdout + r.stderr
        assert state() == STATE_A

    def try_b(self, timeout: float) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "ipvland", "apply", "-c", str(self.b), "--state-dir",
                                 str(self.state), "--confirm-timeout", str(timeout)], cwd=REPO, text=True,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def kill_while_waiting(self, timeout: float) -> None:
        """State A, then `apply B --confirm-timeout` SIGKILLed once B is applied and it waits."""
        self.reset()
        p = self.try_b(timeout)
        wait_until("the change, waiting for confirm", lambda: self.pending().get("applied") is True)
        os.kill(p.pid, signal.SIGKILL)
        p.wait(SLOW)
        assert state() == STATE_B

    def pending(self) -> dict[str, Any]:
        try:
            return json.loads((self.state / "try.json").read_text())  # type: ignore[no-any-return]
        except (OSError, ValueError):
            return {}


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    setup = lab_setup(tmp_path_factory.mktemp("confirm"))
    d = next(setup)
    yield Lab(d)
    next(setup, None)


def test_a_confirmed_try_is_kept(lab: Lab) -> None:
    lab.reset()
    p = lab.try_b(SLOW)
    try:
        wait_until("the change, waiting for confirm", lambda: lab.pending().get("applied") is True)
        assert state() == STATE_B
        r = ipvland("confirm", "--state-dir", str(lab.state))
        assert r.returncode == 0 and "confirmed" in r.stdout, r.stdout + r.stderr
        out, err = p.communicate(timeout=SLOW)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, out + err
    assert "keep this change?" in out and "confirmed: the change is kept" in out
    assert state() == STATE_B and not (lab.state / "try.json").exists()
    r = ipvland("confirm", "--state-dir", str(lab.state))
    assert r.returncode == 1 and "no try is pending" in r.stderr


def test_a_try_not_confirmed_in_time_restores_the_state_before(lab: Lab) -> None:
    lab.reset()
    r = subprocess.run([sys.executable, "-m", "ipvland", "apply", "-c", str(lab.b), "--state-dir", str(lab.state),
                        "--confirm-timeout", "2"], cwd=REPO, text=True, capture_output=True, timeout=SLOW,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "not confirmed in time: reverted" in r.stdout and "NOT fully" not in r.stdout, r.stdout
    assert state() == STATE_A
    assert json.loads((lab.state / "try.done.json").read_text())["outcome"] == "reverted"
    r = ipvland("confirm", "--state-dir", str(lab.state))
    assert r.returncode == 1 and "no try is pending" in r.stderr


def test_apply_killed_while_waiting_the_daemon_holds_off_then_reverts_and_keeps_off(lab: Lab) -> None:
    # The daemon must be up before the deadline. Starting one took 15-40 s under emulation when the
    # guest's Python ran from 9p (with 30 s it sometimes came up after the deadline, reverted at once
    # and never said "holding off"); from tmpfs (tests/vm) it takes about 15 s.
    lab.kill_while_waiting(60)
    deadline = lab.pending()["deadline"]
    assert time.time() < deadline
    # A daemon whose config is the tried one: it must neither fight the try nor re-apply it after the revert.
    log = lab.dir / "daemon.log"
    with open(log, "ab") as out:
        d = subprocess.Popen([sys.executable, "-m", "ipvland", "run", "-c", str(lab.b), "--state-dir",
                              str(lab.state), "--interval", "600", "--log-level", "debug"], cwd=REPO,
                             stdout=out, stderr=out, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        wait_until("the daemon to hold off", lambda: "holding off" in log.read_text(errors="replace"))
        if time.time() < deadline - 0.5:
            assert state() == STATE_B, "the daemon must not touch a pending try"
        wait_until("the revert", lambda: state() == STATE_A)
        assert time.time() >= deadline
        status = lab.state / "status.json"
        wait_until("a reconcile after the revert",
                   lambda: status.exists() and json.loads(status.read_text()).get("reconciles", 0) >= 1)
        s = json.loads(status.read_text())
        assert s["rolled_back"]["broken"] == ["not confirmed"], s["rolled_back"]
        d.send_signal(signal.SIGHUP)  # the same files again: still not applied
        wait_until("the reload", lambda: json.loads(status.read_text()).get("reloads", 0) >= 1)
        assert state() == STATE_A
        assert "not confirmed in time: reverted" in log.read_text(errors="replace")
    finally:
        d.send_signal(signal.SIGTERM)
        assert d.wait(SLOW) == 0


def test_apply_killed_while_waiting_the_next_apply_reverts_it_first(lab: Lab) -> None:
    lab.kill_while_waiting(3)
    r = ipvland("apply", "-c", str(lab.a), "--state-dir", str(lab.state))
    if time.time() < lab.pending().get("deadline", 0):  # pragma: no cover - a fast machine: still pending
        assert r.returncode == 1 and "`ipvland confirm` keeps it" in r.stderr
        wait_until("the deadline", lambda: time.time() >= lab.pending()["deadline"])
        r = ipvland("apply", "-c", str(lab.a), "--state-dir", str(lab.state))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "not confirmed in time, reverted" in r.stderr
    assert state() == STATE_A and not (lab.state / "try.json").exists()


C = A.rstrip() + "\n          fwd0: {addresses: [192.0.2.30/24], ipv4: {ip_forward: true}}\n"  # A + a host device


def test_regression_a_reverted_try_puts_back_ip_forward_of_a_namespace_that_had_no_device(lab: Lab) -> None:
    # Review finding: the state before a try is kept as a config, and a config says ip_forward on a
    # device: the host had no device of ipvland's, so the revert left the host forwarding.
    lab.reset()
    forward = Path("/proc/sys/net/ipv4/ip_forward")
    forward.write_text("0")
    c = lab.dir / "c" / "config.yaml"
    c.parent.mkdir(exist_ok=True)
    c.write_text(textwrap.dedent(C))
    r = subprocess.run([sys.executable, "-m", "ipvland", "apply", "-c", str(c), "--state-dir", str(lab.state),
                        "--confirm-timeout", "2"], cwd=REPO, text=True, capture_output=True, timeout=SLOW,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "not confirmed in time: reverted" in r.stdout and "NOT fully" not in r.stdout, r.stdout
    assert "revert: ~ ipv4.ip_forward 1 -> 0" in r.stdout, r.stdout
    assert forward.read_text().strip() == "0"
    assert state() == STATE_A and link("fwd0") is None
