"""Try, then keep or revert (issue 14): `ipvland apply --confirm-timeout S` and `ipvland confirm`.

The pending try lives in the state directory (`try.json`), written BEFORE anything is applied: the
state observed before the change (as a config, what `show` prints), the deadline (wall clock), and the
hash of the tried config's files. So it outlives the apply process: if `apply` is killed, the daemon or
the next `apply` restores that state once the deadline passed; until then, the daemon holds off.

Every transition (confirm, revert) happens under an exclusive flock on `try.lock`, and leaves its
outcome in `try.done.json`, so a waiting `apply` learns whether someone confirmed or reverted it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["Done", "NothingPending", "Try", "TryError", "TryStarted", "close", "confirm", "finish", "outcome",
           "pending", "read", "write"]

TRY = "try.json"
DONE = "try.done.json"
LOCK = "try.lock"


class TryError(Exception):
    """The try file cannot be read (corrupt, unreadable)."""


class TryStarted(Exception):
    """Raised by the daemon's check right before it applies: a try began while it planned."""


class NothingPending(Exception):
    """confirm: there is no try to confirm (never was, confirmed, reverted, or too late)."""


@dataclass(frozen=True)
class Try:
    pid: int  # the apply that made it
    started: float  # wall clock: identifies the try
    deadline: float  # wall clock: reverted from then on, unless confirmed
    before: str  # the state observed before the change, as a config (YAML)
    digest: str  # of the tried config's files (the daemon refuses them after a revert)
    config: str  # the tried config's main file, for messages
    applied: bool = False  # the change was made (False: apply may have been killed while making it)
    # [netns, value] of ip_forward before, where the tried config sets it (reconcile.restore)
    ip_forward: tuple[tuple[str | None, int], ...] = ()
    pid_start: int | None = None  # the apply's start time (/proc/PID/stat), so a reused pid is not it

    def describe(self) -> str:
        until = time.strftime("%H:%M:%S", time.localtime(self.deadline))
        return f"the try of {self.config} by pid {self.pid}, reverted at {until} unless confirmed"


@dataclass(frozen=True)
class Done:
    started: float  # of the try
    outcome: str  # "confirmed" | "reverted"
    at: float
    detail: str = ""


def _write_json(state_dir: Path, name: str, body: dict[str, Any]) -> None:
    state_dir.mkdir(mode=0o750, parents=True, exist_ok=True)
    tmp = state_dir / f".{name}.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    try:
        data = json.dumps(body).encode()
        while data:  # a short write (a full tmpfs) must not leave half a file to be renamed into place
            data = data[os.write(fd, data):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, state_dir / name)
    dfd = os.open(state_dir, os.O_RDONLY)
    try:
        os.fsync(dfd)  # the rename itself survives a crash
    finally:
        os.close(dfd)


def write(state_dir: Path, t: Try) -> None:
    _write_json(state_dir, TRY, asdict(t))


def read(state_dir: Path) -> Try | None:
    try:
        body = json.loads((state_dir / TRY).read_text(encoding="utf-8"))
        if not isinstance(body, dict):
            raise TypeError("not a JSON object")
        body["ip_forward"] = tuple((ns, int(value)) for ns, value in body.get("ip_forward", ()))
        return Try(**body)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as e:
        raise TryError(f"{state_dir / TRY}: cannot read the pending try: {e}") from None


def outcome(state_dir: Path, t: Try) -> Done | None:
    """What became of try `t` (None: nothing recorded for it)."""
    try:
        done = Done(**json.loads((state_dir / DONE).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None
    return done if done.started == t.started else None


# An apply still making its change is waited for at most this long after its first deadline (one
# stopped with Ctrl-Z, or hung in the kernel, must not hold the daemon off forever).
APPLY_GRACE = 600.0


def process_start(pid: int) -> int | None:
    """The start time of process `pid` (clock ticks after boot, /proc/PID/stat field 22), None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()  # after the command name, which may hold anything
        return int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def in_progress(t: Try, now: float) -> bool:
    """The apply that started `t` is still making the change: its first deadline was written before
    it began, and an apply slower than the timeout must not be reverted under its feet. A dead apply
    (killed mid-way) is not in progress, nor a pid reused by another process (its start time differs),
    nor an apply still at it APPLY_GRACE after the deadline: those tries are reverted."""
    if t.applied or now >= t.deadline + APPLY_GRACE:
        return False
    return t.pid_start is not None and process_start(t.pid) == t.pid_start


def pending(state_dir: Path, now: float) -> Try | None:
    """The try whose deadline has not passed, or still being applied (what the daemon holds off
    for), else None."""
    t = read(state_dir)
    return t if t is not None and (now < t.deadline or in_progress(t, now)) else None


@contextlib.contextmanager
def locked(state_dir: Path) -> Iterator[None]:
    state_dir.mkdir(mode=0o750, parents=True, exist_ok=True)
    fd = os.open(state_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # drops the lock


def _close(state_dir: Path, t: Try, result: str, now: float, detail: str = "") -> None:
    _write_json(state_dir, DONE, asdict(Done(t.started, result, now, detail)))
    with contextlib.suppress(FileNotFoundError):
        (state_dir / TRY).unlink()


def close(state_dir: Path, t: Try, result: str, detail: str = "") -> None:
    """End try `t` with `result` (e.g. the apply rolled itself back after a probe broke)."""
    with locked(state_dir):
        _close(state_dir, t, result, time.time(), detail)


def confirm(state_dir: Path, now: float) -> Try:
    """Keep the pending try; raises NothingPending when there is none, or its deadline passed."""
    with locked(state_dir):
        t = read(state_dir)
        if t is None:
            raise NothingPending("no try is pending (never started, confirmed, or reverted already)")
        if in_progress(t, now):
            raise NothingPending(f"the change is still being made by pid {t.pid}: confirm it once `apply` "
                                 "asks (nothing was confirmed)")
        if now >= t.deadline:
            raise NothingPending(f"too late: {t.describe()}, and that time has passed")
        _close(state_dir, t, "confirmed", now)
        return t


def finish(state_dir: Path, kernel: Any, now: float, *, force: bool = False) -> tuple[Try, Any] | None:
    """Revert the pending try if its deadline passed (or `force`): restore the state observed before it.
    Returns (the try, reconcile.Restored), or None when there was nothing to revert (yet)."""
    from ipvland.reconcile import restore

    if read(state_dir) is None:
        return None  # the common case, without creating the state directory or its lock
    with locked(state_dir):
        t = read(state_dir)
        if t is None or ((now < t.deadline or in_progress(t, now)) and not force):
            return None
        restored = restore(kernel, t.before, f"<state before the try of {t.config}>", ip_forward=t.ip_forward)
        _close(state_dir, t, "reverted", time.time(), restored.describe())
        return t, restored
