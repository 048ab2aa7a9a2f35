"""One daemon per state directory: the flock, tested with real processes."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ipvland import lock, status

ROOT = Path(__file__).resolve().parents[2]
HOLD = ("import sys, time; from pathlib import Path; from ipvland import lock; "
        "held = lock.acquire(Path(sys.argv[1])); print('held', flush=True); time.sleep(600)")


def holder(state_dir: Path) -> subprocess.Popen[str]:
    """Another process that takes the lock and keeps it."""
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(state_dir)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert p.stdout is not None and p.stdout.readline() == "held\n"
    return p


def test_a_second_process_is_refused_with_the_holders_pid_until_the_holder_dies(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = holder(state)
    try:
        with pytest.raises(lock.AlreadyRunning) as info:
            lock.acquire(state)
        assert info.value.pid == first.pid
        assert f"is locked by pid {first.pid}" in str(info.value)
        assert "another --state-dir" in str(info.value)
    finally:
        first.send_signal(signal.SIGKILL)  # the kernel drops a flock with its process: no stale lock
        first.wait()
    with lock.acquire(state) as held:
        assert (state / lock.LOCK_FILE).read_text() == f"{os.getpid()}\n"
        assert held.fd >= 0
    assert (state / lock.LOCK_FILE).stat().st_mode & 0o777 == status.FILE_MODE
    assert state.stat().st_mode & 0o777 == status.DIR_MODE


def test_release_lets_the_next_one_in(tmp_path: Path) -> None:
    held = lock.acquire(tmp_path)
    held.release()
    lock.acquire(tmp_path).release()


def test_the_lock_is_not_inherited_by_child_processes(tmp_path: Path) -> None:
    with lock.acquire(tmp_path):
        child = subprocess.Popen(["sleep", "30"])
    try:
        lock.acquire(tmp_path).release()  # the child does not keep it
    finally:
        child.kill()
        child.wait()


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root and unshare(1)")
def test_a_second_ipvland_run_exits_non_zero_naming_the_first(tmp_path: Path) -> None:
    """Two real `ipvland run` on one state directory, in a fresh network namespace."""
    (tmp_path / "config.yaml").write_text("version: 1\nparents: {}\n")
    state = tmp_path / "state"
    args = [sys.executable, "-m", "ipvland", "run", "-c", str(tmp_path / "config.yaml"), "--state-dir", str(state),
            "--interval", "600"]
    first = subprocess.Popen(["unshare", "--net", *args], stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while not (state / "status.json").exists():  # started and reconciled once
            assert first.poll() is None and time.monotonic() < deadline, first.stderr.read() if first.stderr else ""
            time.sleep(0.1)
        second = subprocess.run(["unshare", "--net", *args], capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert second.returncode == 1
        assert second.stderr == (f"ipvland run: another ipvland is running on this state directory: "
                                 f"{state / lock.LOCK_FILE} is locked by pid {first.pid}; stop it first, or give "
                                 "this one another --state-dir\n")
        assert status.read(state)["pid"] == first.pid  # the second one never wrote the status
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=60)
    assert first.returncode == 0
