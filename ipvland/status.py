"""The daemon's status: a JSON file written atomically after every reconcile, its rendering for
`ipvland status`, and sd_notify (the systemd readiness/watchdog protocol) without a dependency.

The status file is `<state dir>/status.json` (default /run/ipvland). Its schema, version 1:

    schema          1
    pid             the daemon's pid
    started         when the daemon started (ISO 8601, UTC)
    updated         when this file was written
    config          {path, generation, sources, loaded, error: null | {since, errors: [str]},
                    enforced: {generation (null: none, or rolled back), rolled_back, devices, reason}}
    last_reconcile  null | {started, duration, result, trigger, changes, errors, conflicts, pending,
                    probes (run after an apply that changed something), scope: null (every
                    namespace was read) | [namespace, ...] (a drift repair; null = ipvland's own)}
                    result: ok | errors | pending | failed | no-config; rollback: whether it could
                    roll back (a new generation's first); attempted: whether it wrote (or
                    tried to); rewrote_flapping: [object, ...]}
    rolled_back     null | {generation, at, broken, restored, error, files_sha256, retried}
    reconciles      how many reconciles ran since start
    reloads         how many SIGHUPs were handled (the config read again, READY=1 sent)
    changes_total   how many changes were applied since start
    drift           {events, last, own}: relevant netlink events ipvland did not cause (somebody
                    changed something); own: the echoes of its own writes
    flapping        [{object, rewrites, since, last}]: objects ipvland rewrites again and again
    backoff         null | {until, why}: no self-made trigger runs before `until`
    pending         objects waiting for something outside ipvland (a missing parent), as lines
    settling        objects in place but not usable yet, as lines (IPv6 addresses in duplicate
                    address detection); wait-online waits for them
    marks           null | {checked: {mark: true|false|null}, missing: [mark], record: bool}: the
                    ownership marks this kernel drops, and whether owned.json stands in (marks.py)

Who may read it: the state directory is mode 0750 and the status file 0640 (error messages quote
short excerpts of config files), owned by root and, when the group `ipvland` exists, by that group:
root and the group's members can run `ipvland status`, nobody else.

`ipvland status` exits 0 when the daemon's last reconcile converged with no config error, 1 otherwise
(missing or unreadable status file included), so that scripts can use it as a health check.
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import socket
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

STATUS_FILE = "status.json"
SCHEMA = 1
GROUP = "ipvland"  # may read the state directory and the status file, when it exists
DIR_MODE = 0o750
FILE_MODE = 0o640

Status = dict[str, Any]


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def iso(ts: float | None) -> str | None:
    """A time.time() value as ISO 8601 UTC; None stays None."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


# ---------------------------------------------------------------- the file


def path_in(state_dir: Path) -> Path:
    return state_dir / STATUS_FILE


GROUP_FILE = "/etc/group"
GROUP_TTL = 60.0  # seconds a lookup is kept while GROUP_FILE is unchanged
_group_cache: tuple[object, float, int | None] | None = None  # (key, when, gid)


def group_id() -> int | None:
    """The gid of GROUP, or None when there is no such group.

    The daemon writes its status after every reconcile, and getgrnam() walks the NSS modules each
    time (nss-systemd asks systemd-userdb over a socket): 0.1 s of every drift repair under
    emulation. So the answer is kept while GROUP_FILE is the same file with the same mtime and
    size, for GROUP_TTL seconds at most: a group added by `groupadd` or sysusers (GROUP_FILE) is
    seen at the next write, one from another NSS source within GROUP_TTL."""
    global _group_cache
    try:
        st = os.stat(GROUP_FILE)
        key: object = (GROUP, st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
    except OSError:
        key = (GROUP, None)
    now = time.monotonic()
    if _group_cache is not None and _group_cache[0] == key and now - _group_cache[1] < GROUP_TTL:
        return _group_cache[2]
    try:
        gid: int | None = grp.getgrnam(GROUP).gr_gid
    except KeyError:
        gid = None
    _group_cache = (key, now, gid)
    return gid


def restrict(fd: int, mode: int) -> None:
    """Give an open file or directory `mode` and, when it exists, the group GROUP.

    Changing the group needs CAP_CHOWN (or a daemon already running with that group, as under
    systemd's Group=): where it is refused the file keeps its group, still closed to others.
    """
    os.fchmod(fd, mode)
    gid = group_id()
    if gid is not None and os.fstat(fd).st_gid != gid:
        with contextlib.suppress(PermissionError):
            os.fchown(fd, -1, gid)


def prepare_dir(state_dir: Path) -> None:
    """Create the state directory if needed and make it DIR_MODE, group GROUP (never world-readable)."""
    state_dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    fd = os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        restrict(fd, DIR_MODE)
    finally:
        os.close(fd)


def write(state_dir: Path, status: Status) -> Path:
    return write_json(state_dir, STATUS_FILE, status)


def write_json(state_dir: Path, name: str, value: Any) -> Path:
    """Write `<state_dir>/<name>` atomically: a temp file in the same directory, fsync, rename, fsync
    the directory.

    A reader sees the old file or the new one, never a half-written one, even across a crash.
    The file is FILE_MODE, group GROUP, from the moment it has content.
    """
    if not state_dir.is_dir():
        prepare_dir(state_dir)
    target = state_dir / name
    data = json.dumps(value, indent=2, sort_keys=True).encode() + b"\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=".tmp", dir=state_dir)
    try:
        with os.fdopen(fd, "wb") as f:
            restrict(f.fileno(), FILE_MODE)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dfd = os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return target


def read(state_dir: Path) -> Status:
    """Raises OSError (missing file) or ValueError (not a status file)."""
    with open(path_in(state_dir), encoding="utf-8") as f:
        status = json.load(f)
    if not isinstance(status, dict) or status.get("schema") != SCHEMA:
        raise ValueError(f"{path_in(state_dir)}: not an ipvland status file (schema {SCHEMA})")
    return status


def healthy(status: Status) -> bool:
    last = status.get("last_reconcile") or {}
    return last.get("result") == "ok" and not (status.get("config") or {}).get("error")


def pid_alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ---------------------------------------------------------------- rendering


def summary(status: Status) -> str:
    """One line, for systemd's STATUS= and the first line of `ipvland status`."""
    config = status.get("config") or {}
    last = status.get("last_reconcile")
    parts = [f"config generation {config.get('generation', 0)}"]
    if last is None:
        parts.append("not reconciled yet")
    else:
        result = last.get("result")
        n_changes = len(last.get("changes") or ())
        n_errors = len(last.get("errors") or ())
        if result == "no-config":
            parts.append("nothing enforced (no valid config yet)")
        elif result == "failed":
            parts.append(f"reconcile failed: {(last.get('errors') or [{}])[0].get('error', '?')}")
        else:
            parts.append(f"{result}, {n_changes} change(s)" + (f", {n_errors} error(s)" if n_errors else "")
                         + f" in {last.get('duration', 0):.2f}s")
    pending = status.get("pending") or ()
    if pending:
        parts.append(f"{len(pending)} pending")
    error = config.get("error")
    if error:
        errors = error.get("errors") or ["?"]
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        parts.append(f"config error: {errors[0]}{more}")
    return "; ".join(parts)


def render(status: Status, as_json: bool) -> str:
    if as_json:
        return json.dumps(status, indent=2, sort_keys=True)
    lines = []
    pid = status.get("pid")
    running = "running" if pid_alive(pid) else "NOT RUNNING (stale status file)"
    lines.append(f"ipvland: {running}, pid {pid}, since {status.get('started')}")
    lines.append(f"summary: {summary(status)}")
    config = status.get("config") or {}
    sources = config.get("sources") or []
    lines.append(f"config: {config.get('path')} generation {config.get('generation', 0)}, "
                 f"{len(sources)} file(s), loaded {config.get('loaded') or 'never'}")
    for source in sources:
        lines.append(f"  {source}")
    error = config.get("error")
    if error:
        enforced = ("the last good config is still enforced" if config.get("loaded")
                    else "no valid config yet: nothing is enforced")
        lines.append(f"config error since {error.get('since')} ({enforced}):")
        lines.extend(f"  {e}" for e in error.get("errors") or ())
    last = status.get("last_reconcile")
    if last is None:
        lines.append("last reconcile: none yet")
    else:
        scope = last.get("scope")
        where = "" if scope is None else " in " + ", ".join(ns or "host" for ns in scope)
        lines.append(f"last reconcile: {last.get('started')}, {last.get('duration', 0):.3f}s{where}, "
                     f"result {last.get('result')}, trigger {', '.join(last.get('trigger') or ()) or '-'}")
        for change in last.get("changes") or ():
            lines.append(f"  {change}")
        for err in last.get("errors") or ():
            lines.append(f"  ! {err.get('object')}: {err.get('error')}")
        for conflict in last.get("conflicts") or ():
            lines.append(f"  {conflict}")
        for probe in last.get("probes") or ():
            lines.append(f"  {probe}")
    rolled_back = status.get("rolled_back")
    if rolled_back:
        restored = "restored" if rolled_back.get("restored") else "restore INCOMPLETE"
        lines.append(f"rolled back: config generation {rolled_back.get('generation')} at {rolled_back.get('at')} "
                     f"({restored}); the previous state is enforced until the config changes")
        lines.extend(f"  {b}" for b in rolled_back.get("broken") or ())
    pending = status.get("pending") or []
    if pending:
        lines.append("pending:")
        lines.extend(f"  {p}" for p in pending)
    marks = status.get("marks") or {}
    if marks.get("missing"):
        stand_in = "ipvland records its neighbor entries in the state directory (owned.json)" if marks.get("record") \
            else "ipvland cannot stand in for them"
        lines.append(f"kernel marks missing: {', '.join(marks['missing'])}; {stand_in}")
    for flap in status.get("flapping") or ():
        lines.append(f"flapping: {flap.get('object')}: rewritten {flap.get('rewrites')} times "
                     f"since {flap.get('since')}")
    backoff = status.get("backoff")
    if backoff:
        lines.append(f"backing off until {backoff.get('until')}: {backoff.get('why')}")
    drift = status.get("drift") or {}
    lines.append(f"reconciles: {status.get('reconciles', 0)}, changes applied: {status.get('changes_total', 0)}, "
                 f"drift events: {drift.get('events', 0)} (last {drift.get('last') or 'never'})")
    return "\n".join(lines)


def main(state_dir: Path, as_json: bool) -> int:
    try:
        status = read(state_dir)
    except FileNotFoundError:
        print(f"ipvland status: {path_in(state_dir)}: no status file (is the daemon running?)", file=sys.stderr)
        return 1
    except PermissionError:
        print(f"ipvland status: {path_in(state_dir)}: permission denied: only root and the members of group "
              f"{GROUP} may read the daemon's status", file=sys.stderr)
        return 1
    except (OSError, ValueError) as e:
        print(f"ipvland status: {e}", file=sys.stderr)
        return 1
    print(render(status, as_json))
    return 0 if healthy(status) and pid_alive(status.get("pid")) else 1


# ---------------------------------------------------------------- sd_notify


def sd_notify(*fields: str) -> bool:
    """Send `FIELD=value` lines to systemd ($NOTIFY_SOCKET). False when not under a notify service.

    The protocol (sd_notify(3)): one datagram on an AF_UNIX socket; a name starting with '@' is in
    the abstract namespace (a leading NUL byte). Errors are swallowed: notification is best effort.
    """
    address = os.environ.get("NOTIFY_SOCKET")
    if not address or not fields:
        return False
    if address[0] == "@":
        address = "\0" + address[1:]
    elif address[0] != "/":
        return False  # vsock and others: not supported
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall("\n".join(fields).encode())
    except OSError:
        return False
    return True
