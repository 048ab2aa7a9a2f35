"""The pending try of `apply --confirm-timeout` (confirm.py) without a kernel: its file, confirm, the
daemon holding off, and the commands' refusals. The kernel side is tests/kernel/test_confirm.py."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from ipvland import confirm
from ipvland import daemon as daemon_mod
from ipvland.model import Plan, Spec
from ipvland.reconcile import Report

ROOT = Path(__file__).resolve().parents[2]


def a_try(deadline: float, started: float = 1000.0) -> confirm.Try:
    return confirm.Try(pid=4242, started=started, deadline=deadline, before="version: 1\nparents: {}\n",
                       digest="d" * 64, config="/etc/ipvland/config.yaml", applied=True)


def test_the_try_file_round_trips_and_is_not_world_readable(tmp_path: Path) -> None:
    state = tmp_path / "state"
    t = dataclasses.replace(a_try(time.time() + 60), ip_forward=((None, 0), ("web", 1)))
    confirm.write(state, t)
    assert confirm.read(state) == t and confirm.pending(state, time.time()) == t
    assert oct((state / "try.json").stat().st_mode & 0o777) == "0o640"
    assert confirm.pending(state, t.deadline) is None  # from the deadline on it is due for a revert
    assert [p.name for p in state.iterdir()] == ["try.json"]  # no temp file left


def test_confirm_keeps_it_once_and_records_the_outcome(tmp_path: Path) -> None:
    t = a_try(time.time() + 60)
    confirm.write(tmp_path, t)
    assert confirm.confirm(tmp_path, time.time()) == t
    assert confirm.read(tmp_path) is None
    done = confirm.outcome(tmp_path, t)
    assert done is not None and done.outcome == "confirmed"
    assert confirm.outcome(tmp_path, a_try(0, started=1.0)) is None  # another try's outcome is not ours
    with pytest.raises(confirm.NothingPending, match="no try is pending"):
        confirm.confirm(tmp_path, time.time())


def test_confirm_after_the_deadline_is_too_late(tmp_path: Path) -> None:
    t = a_try(time.time() - 1)
    confirm.write(tmp_path, t)
    with pytest.raises(confirm.NothingPending, match="too late"):
        confirm.confirm(tmp_path, time.time())
    assert confirm.read(tmp_path) == t  # still there: the revert is due


def test_regression_a_try_still_being_applied_is_not_reverted_at_its_first_deadline(tmp_path: Path) -> None:
    # Review finding: the first deadline is written before the apply starts; an apply slower than
    # --confirm-timeout was reverted by a daemon (or the next apply) while it was still writing.
    applying = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "ipvland-apply"])
    try:
        t = dataclasses.replace(a_try(time.time() - 5), pid=applying.pid, applied=False,
                                pid_start=confirm.process_start(applying.pid))
        confirm.write(tmp_path, t)
        assert confirm.in_progress(t, time.time())
        assert confirm.pending(tmp_path, time.time()) == t  # the daemon holds off
        assert confirm.finish(tmp_path, object(), time.time()) is None  # nothing reverted
        with pytest.raises(confirm.NothingPending, match="still being made by pid"):
            confirm.confirm(tmp_path, time.time())
        assert not confirm.in_progress(dataclasses.replace(t, applied=True), time.time())  # made: the deadline rules
        # an apply stopped (Ctrl-Z) or hung is waited for APPLY_GRACE past its deadline, not forever
        assert not confirm.in_progress(t, t.deadline + confirm.APPLY_GRACE)
    finally:
        applying.kill()
        applying.wait()
    assert not confirm.in_progress(t, time.time())  # the apply died mid-way: its try is due at the deadline
    assert confirm.pending(tmp_path, time.time()) is None
    reused = dataclasses.replace(t, pid=os.getpid())  # a live pid, another process: its start time differs
    assert not confirm.in_progress(reused, time.time())


def test_a_corrupt_try_file_is_an_error_not_a_crash(tmp_path: Path) -> None:
    for text in ("{not json", "[1, 2]", '"a string"'):  # the last two: valid JSON, not an object
        (tmp_path / "try.json").write_text(text)
        with pytest.raises(confirm.TryError, match="cannot read the pending try"):
            confirm.read(tmp_path)


def test_finish_without_a_try_creates_nothing(tmp_path: Path) -> None:
    state = tmp_path / "state"
    assert confirm.finish(state, object(), time.time()) is None
    assert not state.exists()  # a plain apply never creates the state directory


def serving_daemon(tmp_path: Path, state: Path, reconcile: Any) -> tuple[daemon_mod.Daemon, threading.Thread]:
    """A daemon on a stand-in config and reconcile, serving on a thread."""
    config = tmp_path / "c.yaml"
    config.write_text("x")
    d = daemon_mod.Daemon(config, state_dir=state, load_fn=lambda p: Spec(version=1, sources=(str(p),)),
                          reconcile_fn=reconcile, kernel_factory=object, namespaces_fn=lambda s, k: frozenset(),
                          watch_files=False, watch_netlink=False, debounce=0.01, max_delay=0.05)
    t = threading.Thread(target=d.serve, daemon=True)
    t.start()
    return d, t


def test_the_daemon_holds_off_while_a_try_is_pending_then_reconciles(tmp_path: Path) -> None:
    calls: list[float] = []

    def reconcile(spec: Spec, kernel: Any, **_: Any) -> Report:
        calls.append(time.time())
        return Report(Plan(), (), Plan(), time.time(), 0.0)

    state = tmp_path / "state"
    confirm.write(state, a_try(time.time() + 600))
    d, t = serving_daemon(tmp_path, state, reconcile)
    try:
        deadline = time.monotonic() + 10
        while not (state / "status.json").exists():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        d.on_netlink_event(None, 1)
        time.sleep(0.3)
        assert calls == [], "a pending try holds every reconcile off"
        confirm.confirm(state, time.time())
        d.on_netlink_event(None, 1)
        while not calls:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        d.request_stop()
        t.join(10)


def test_regression_the_daemon_holds_off_past_the_first_deadline_while_the_apply_is_still_making_it(
        tmp_path: Path) -> None:
    calls: list[float] = []

    def reconcile(spec: Spec, kernel: Any, **_: Any) -> Report:
        calls.append(time.time())
        return Report(Plan(), (), Plan(), time.time(), 0.0)

    applying = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "ipvland-apply"])
    state = tmp_path / "state"
    slow = dataclasses.replace(a_try(time.time() + 0.3), pid=applying.pid, applied=False,
                               pid_start=confirm.process_start(applying.pid))
    confirm.write(state, slow)
    d, t = serving_daemon(tmp_path, state, reconcile)
    try:
        time.sleep(1.5)  # past the first deadline, the apply still writing: neither revert nor reconcile
        d.on_netlink_event(None, 1)
        time.sleep(0.5)
        assert calls == [] and confirm.read(state) == slow
        made = dataclasses.replace(slow, deadline=time.time() + 1.0, applied=True)  # apply: made, waits
        confirm.write(state, made)
        time.sleep(0.5)
        assert calls == [] and confirm.read(state) == made
    finally:
        d.request_stop()
        t.join(10)
        applying.kill()
        applying.wait()


def ipvland(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["unshare", "--net", sys.executable, "-m", "ipvland", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for a network namespace")
def test_apply_refuses_while_another_try_is_pending_and_confirm_says_when_nothing_is(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("version: 1\nparents: {}\n")
    state = tmp_path / "state"
    r = ipvland("confirm", "--state-dir", str(state))
    assert r.returncode == 1 and "no try is pending" in r.stderr
    confirm.write(state, a_try(time.time() + 600))
    r = ipvland("apply", "-c", str(config), "--state-dir", str(state))
    assert r.returncode == 1 and "`ipvland confirm` keeps it; nothing changed" in r.stderr, r.stderr
    r = ipvland("confirm", "--state-dir", str(state))
    assert r.returncode == 0 and "is kept" in r.stdout
    r = ipvland("apply", "-c", str(config), "--state-dir", str(state), "--confirm-timeout", "5")
    assert r.returncode == 0 and "keep this change?" not in r.stdout  # nothing to change: nothing to confirm
    assert not (state / "try.json").exists()


@pytest.mark.parametrize("value", ["0", "nan", "-1", "86401"])
def test_confirm_timeout_bounds(value: str) -> None:
    r = subprocess.run([sys.executable, "-m", "ipvland", "apply", "--confirm-timeout", value], cwd=ROOT,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "--confirm-timeout" in r.stderr


# ---------------------------------------------------------------- the whole flow on this kernel, without IPVLAN
# A parent's route on a veth is a change every kernel can make: the try, its revert and the daemon's
# part run for real (netlink, processes, SIGKILL) in a throwaway network and mount namespace.
# tests/kernel/test_confirm.py does the same with ipvlan devices in the VM.

FLOW = r"""
set -e
ip link set lo up
ip link add vx0 type veth peer name vx1
ip link set vx0 up && ip link set vx1 up
ipv() { "$PY" -m ipvland "$@"; }
route() { ip route show 198.51.100.7/32 dev vx0 | grep -c . || true; }
echo "A $(route)"
ipv apply -c "$B" --state-dir "$S" --confirm-timeout 1 </dev/null >"$W/timeout.out" || echo "timeout rc $?"
echo "after-timeout $(route)"
"$PY" -m ipvland apply -c "$B" --state-dir "$S" --confirm-timeout 8 </dev/null >/dev/null 2>&1 & P=$!
i=0; until grep -q '"applied": true' "$S/try.json" 2>/dev/null; do i=$((i+1)); [ $i -lt 300 ] || exit 9; sleep 0.1; done
kill -9 $P; wait $P || true
echo "killed $(route)"
"$PY" -m ipvland run -c "$B" --state-dir "$S" --interval 600 >"$W/daemon.log" 2>&1 & D=$!
i=0; until grep -q "holding off" "$W/daemon.log"; do i=$((i+1)); [ $i -lt 300 ] || exit 8; sleep 0.1; done
echo "holding $(route)"
i=0; until [ "$(route)" = 0 ]; do i=$((i+1)); [ $i -lt 300 ] || exit 7; sleep 0.1; done
echo "reverted $(route)"
kill -HUP $D; i=0; until grep -q "reloading" "$W/daemon.log"; do i=$((i+1)); [ $i -lt 100 ] || exit 6; sleep 0.1; done
sleep 1
echo "after-hup $(route)"
kill $D; wait $D; echo "daemon rc $?"
# A daemon that enforces A (no route) all along, and a live apply trying B: the daemon holds off (it
# would remove the route at once otherwise), and the apply reverts its own try at the deadline.
rm -f "$S/status.json"
"$PY" -m ipvland run -c "$A" --state-dir "$S" --interval 600 >"$W/daemon2.log" 2>&1 & D=$!
i=0; until [ -f "$S/status.json" ]; do i=$((i+1)); [ $i -lt 300 ] || exit 5; sleep 0.1; done
"$PY" -m ipvland apply -c "$B" --state-dir "$S" --confirm-timeout 4 </dev/null >"$W/alive.out" & P=$!
i=0; until grep -q '"applied": true' "$S/try.json" 2>/dev/null; do i=$((i+1)); [ $i -lt 300 ] || exit 4; sleep 0.1; done
i=0; until grep -q "holding off" "$W/daemon2.log"; do i=$((i+1)); [ $i -lt 300 ] || exit 3; sleep 0.1; done
echo "during-try $(route)"
wait $P || echo "alive rc $?"
echo "self-reverted $(route)"
kill -HUP $D; sleep 1
echo "after-hup-2 $(route)"
kill $D; wait $D; echo "daemon rc $?"
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for a network namespace")
def test_timeout_sigkill_daemon_hold_off_revert_and_no_reapply_with_real_netlink(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "config.yaml").write_text("version: 1\nparents: {}\n")
    b = tmp_path / "b" / "config.yaml"
    b.write_text("version: 1\nparents:\n  vx0:\n    routes: [{to: 198.51.100.7/32}]\n")
    env = {**os.environ, "PY": sys.executable, "A": str(tmp_path / "a" / "config.yaml"), "B": str(b),
           "S": str(tmp_path / "state"), "W": str(tmp_path)}
    r = subprocess.run(["unshare", "--net", "--mount", "sh", "-c", "mount -t tmpfs t /run && exec sh -c \"$0\"",
                        FLOW], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    log = (tmp_path / "daemon.log").read_text() if (tmp_path / "daemon.log").exists() else ""
    assert r.returncode == 0, r.stdout + r.stderr + log
    assert r.stdout.splitlines() == ["A 0", "timeout rc 1", "after-timeout 0", "killed 1", "holding 1",
                                     "reverted 0", "after-hup 0", "daemon rc 0", "during-try 1", "alive rc 1",
                                     "self-reverted 0", "after-hup-2 0", "daemon rc 0"], r.stdout + r.stderr + log
    out = (tmp_path / "timeout.out").read_text()
    assert "not confirmed in time: reverted: 1 change(s)" in out and "revert: - route 198.51.100.7/32" in out
    assert "not confirmed in time: reverted" in log and "holding off: the try of" in log
    assert "was reverted by the apply that made it" in (tmp_path / "daemon2.log").read_text()
