"""`ipvland reload` and `ipvland wait-online`: the decisions on plain status dicts, the loops on a fake clock."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ipvland import control
from ipvland import status as status_mod


def _status(result: str | None, **extra: object) -> dict[str, object]:
    last = None if result is None else {"result": result, "errors": [], "conflicts": [], "pending": []}
    return {"schema": status_mod.SCHEMA, "pid": os.getpid(), "last_reconcile": last,
            "config": {"generation": 1, "error": None}, **extra}


def test_online_only_when_the_last_reconcile_converged() -> None:
    assert control.online_verdict(_status("ok"), pid_alive=True).done
    assert not control.online_verdict(_status("errors"), pid_alive=True).done
    assert not control.online_verdict(_status("failed"), pid_alive=True).done
    assert not control.online_verdict(_status(None), pid_alive=True).done
    assert not control.online_verdict(None, pid_alive=False).done


def test_not_online_when_the_daemon_is_gone() -> None:
    verdict = control.online_verdict(_status("ok"), pid_alive=False)
    assert not verdict.done and "not running" in verdict.reason


def test_a_missing_parent_does_not_hold_the_host_unless_strict() -> None:
    """Review finding: with a parent that comes later (hot-plug, SR-IOV VFs), every boot held
    network-online.target for the whole timeout, then failed the unit."""
    s = _status("pending")
    s["last_reconcile"]["pending"] = ["link web0: parent eth1 missing"]  # type: ignore[index]
    relaxed = control.online_verdict(s, pid_alive=True)
    assert relaxed.done and "parent eth1 missing" in relaxed.reason
    strict = control.online_verdict(s, pid_alive=True, strict=True)
    assert not strict.done and "pending: link web0: parent eth1 missing" in strict.reason


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def _write(state_dir: Path, status: dict[str, object]) -> None:
    state_dir.mkdir(exist_ok=True)
    (state_dir / "status.json").write_text(json.dumps(status))


def test_not_online_while_an_address_is_in_dad() -> None:
    """A service ordered after network-online.target that binds to a container's IPv6 address got
    EADDRNOTAVAIL: the address was in place (converged) but still tentative."""
    line = "address 2001:db8::10/64 dev web0 netns web: IPv6 duplicate address detection in progress"
    for result in ("ok", "pending"):
        verdict = control.online_verdict(_status(result, settling=[line]), pid_alive=True)
        assert not verdict.done and "waiting for " + line in verdict.reason
    assert control.online_verdict(_status("ok", settling=[]), pid_alive=True).done


def test_wait_online_times_out_with_the_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _write(tmp_path, _status("errors"))
    clock = FakeClock()
    assert control.wait_online(tmp_path, 2.0, clock=clock, sleep=clock.sleep) == 1
    assert "not converged after 2s: last reconcile: errors" in capsys.readouterr().err
    assert clock.now >= 2.0


def test_wait_online_returns_once_converged(tmp_path: Path) -> None:
    _write(tmp_path, _status("errors"))
    clock = FakeClock()

    def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        if clock.now >= 1.0:
            _write(tmp_path, _status("ok"))

    assert control.wait_online(tmp_path, 60.0, clock=clock, sleep=sleep) == 0
    assert 1.0 <= clock.now < 1.5


def test_reload_waits_for_the_reload_counter(tmp_path: Path) -> None:
    _write(tmp_path, _status("ok", reloads=3))
    clock = FakeClock()
    sent: list[tuple[int, int]] = []

    def kill(pid: int, sig: int) -> None:
        sent.append((pid, sig))

    def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        if clock.now >= 0.5:
            _write(tmp_path, _status("ok", reloads=4))

    assert control.reload(os.getpid(), tmp_path, 10.0, clock=clock, sleep=sleep, kill=kill) == 0
    assert sent == [(os.getpid(), signal.SIGHUP)]
    assert clock.now >= 0.5


def test_reload_fails_when_nothing_happens(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _write(tmp_path, _status("ok", reloads=3))
    clock = FakeClock()
    assert control.reload(os.getpid(), tmp_path, 1.0, clock=clock, sleep=clock.sleep, kill=lambda p, s: None) == 1
    assert "no reload seen" in capsys.readouterr().err


def test_reload_never_signals_a_process_that_is_not_the_daemon(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """Review finding: `ipvland reload --pid N` sent SIGHUP to whatever N was (a `sleep` died of it)."""
    _write(tmp_path, _status("ok", reloads=3))
    sent: list[int] = []
    assert control.reload(1, tmp_path, 1.0, kill=lambda p, s: sent.append(p)) == 1
    assert sent == [] and "is not the daemon" in capsys.readouterr().err


def test_reload_of_a_missing_process(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _write(tmp_path, _status("ok", reloads=3))

    def kill(pid: int, sig: int) -> None:
        raise ProcessLookupError

    assert control.reload(os.getpid(), tmp_path, 1.0, kill=kill) == 1
    assert f"no process {os.getpid()}" in capsys.readouterr().err


def test_the_daemon_never_imports_pyroute2_so_no_tc_warning_under_procsubset_pid() -> None:
    """Issue 10, defect 5: the unit's ProcSubset=pid hides /proc/net/psched, and pyroute2's tc module
    warned at import, in the journal at every start. ipvland now encodes its requests itself and never
    imports pyroute2 (issue 13): run its modules, and a kernel write, under a procfs mounted
    subset=pid as systemd mounts it, and look."""
    code = ("import sys, logging; from ipvland import cli, daemon, reconcile, observe, apply, kernel, events; "
            "daemon.setup_logging('info'); k = kernel.Kernel(); k.create_veth('ipvprobe0', 'ipvprobeP'); "
            "k.links(None); k.close(); logging.getLogger('ipvland').warning('ours still shows'); "
            "print(sorted(m for m in sys.modules if m.startswith('pyroute2')))")
    done = subprocess.run(["unshare", "--net", "--mount", "--pid", "--fork", "sh", "-c",
                           'mount -t proc -o subset=pid proc /proc && test ! -e /proc/net/psched && exec "$@"',
                           "sh", sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "ours still shows" in done.stderr
    assert done.stdout.strip() == "[]", done.stdout
    assert "psched" not in done.stderr and "tc subsystem" not in done.stderr, done.stderr


def test_reload_fails_when_the_new_config_has_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _write(tmp_path, _status("ok", reloads=1))
    clock = FakeClock()

    def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        broken = _status("ok", reloads=2)
        broken["config"] = {"generation": 1, "error": {"since": "t", "errors": ["/etc/ipvland/x.yaml:2:1: bad"]}}
        _write(tmp_path, broken)

    assert control.reload(os.getpid(), tmp_path, 5.0, clock=clock, sleep=sleep, kill=lambda p, s: None) == 1
    err = capsys.readouterr().err
    assert "/etc/ipvland/x.yaml:2:1: bad" in err and "last good config stays enforced" in err


def test_reload_command_signals_a_real_process_and_waits(tmp_path: Path) -> None:
    """`ipvland reload --pid PID` end to end, against a real process that handles SIGHUP as the daemon does
    (bumps `reloads` in its status file). Regression: --pid was parsed as a float and os.kill refused it,
    so `systemctl reload ipvland` failed (seen in the systemd host image)."""
    child = subprocess.Popen([sys.executable, "-c", f"""
import json, os, signal, time
path = {str(tmp_path / "status.json")!r}
def hup(*_):  # written as the daemon writes it: a new file renamed over the old (never half a file)
    s = json.load(open(path)); s["reloads"] += 1
    with open(path + ".tmp", "w") as f:
        json.dump(s, f)
    os.replace(path + ".tmp", path)
signal.signal(signal.SIGHUP, hup)
print("ready", flush=True)
time.sleep(30)
"""], stdout=subprocess.PIPE, text=True)
    try:
        _write(tmp_path, _status("ok", reloads=0, pid=child.pid))
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        from ipvland import cli

        assert cli.main(["reload", "--pid", str(child.pid), "--state-dir", str(tmp_path), "--timeout", "10"]) == 0
        assert json.loads((tmp_path / "status.json").read_text())["reloads"] == 1
    finally:
        child.kill()
        child.wait()
