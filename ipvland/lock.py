"""One daemon per state directory.

`ipvland run` takes an exclusive flock(2) on `<state dir>/ipvland.lock` before it starts and keeps
it until it exits (the kernel drops it with the process, even after SIGKILL: no stale lock). The
holder writes its pid into the file, so a second `ipvland run` on the same state directory can say
who holds it, and exits non-zero instead of fighting the first one over the same objects and
status file.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from pathlib import Path

from ipvland import status

LOCK_FILE = "ipvland.lock"


class AlreadyRunning(Exception):
    """Another process holds the state directory's lock."""

    def __init__(self, path: Path, pid: int | None) -> None:
        super().__init__(path, pid)
        self.path = path
        self.pid = pid

    def __str__(self) -> str:
        holder = f"pid {self.pid}" if self.pid is not None else "a process whose pid it has not written yet"
        return (f"another ipvland is running on this state directory: {self.path} is locked by {holder}; "
                "stop it first, or give this one another --state-dir")


class InstanceLock:
    """The held lock: an open file descriptor. Closing it (or exiting) releases the lock."""

    def __init__(self, fd: int, path: Path) -> None:
        self.fd = fd
        self.path = path

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> InstanceLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _holder(fd: int, wait: float = 1.0) -> int | None:
    """The pid written by the holder; it writes it right after locking, so wait a moment for it."""
    deadline = time.monotonic() + wait
    while True:
        with contextlib.suppress(ValueError, OSError):
            return int(os.pread(fd, 32, 0).decode().strip())
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.02)


def acquire(state_dir: Path) -> InstanceLock:
    """Lock `state_dir` (created 0750 if missing) for this process, or raise AlreadyRunning."""
    status.prepare_dir(state_dir)
    path = state_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, status.FILE_MODE)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            raise AlreadyRunning(path, _holder(fd)) from None
        status.restrict(fd, status.FILE_MODE)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except BaseException:
        os.close(fd)
        raise
    return InstanceLock(fd, path)
