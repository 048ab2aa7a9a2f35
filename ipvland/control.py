"""Commands that talk to a running daemon through its status file: `reload` and `wait-online`.

Both are for systemd units. `ipvland reload --pid $MAINPID` is the unit's ExecReload=: it sends SIGHUP and
returns once the daemon has handled that reload (systemd expects ExecReload= to be synchronous, and a
minimal Debian has no /bin/kill). `ipvland wait-online` is what `ipvland-wait-online.service` runs before
network-online.target: it returns once the daemon's last reconcile converged, so that a container or an
application ordered after it finds its namespace, device and addresses in place.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ipvland import status as status_mod

POLL = 0.1


@dataclass(frozen=True)
class Verdict:
    done: bool
    reason: str


def online_verdict(status: status_mod.Status | None, pid_alive: bool, strict: bool = False) -> Verdict:
    """Is the enforced config converged? Pure: the status as read (None: no status file yet).

    "pending" (devices whose parent does not exist yet) counts as online unless strict: a parent may come
    much later (hot-plug, SR-IOV VFs made by another unit), its devices follow at once, and holding
    network-online.target for it would hold every network consumer of the host.
    """
    if status is None:
        return Verdict(False, "no status file yet (is ipvland.service running?)")
    if not pid_alive:
        return Verdict(False, f"the daemon (pid {status.get('pid')}) is not running")
    last = status.get("last_reconcile") or {}
    result = last.get("result")
    settling = status.get("settling") or ()
    if result in ("ok", "pending") and settling:
        # Addresses a service would bind to are there but unusable until DAD ends (~1-2 s): online
        # only after. A DAD that fails is a conflict (another host has the address), not settling.
        return Verdict(False, "converged, waiting for " + "; ".join(str(s) for s in settling[:3])
                       + (", ..." if len(settling) > 3 else ""))
    if result == "ok":
        return Verdict(True, "converged")
    if result == "pending" and not strict:
        waiting = "; ".join(str(p) for p in (last.get("pending") or ())[:3])
        return Verdict(True, f"converged, except what waits for a missing parent: {waiting}")
    details = [*(f"{e.get('object')}: {e.get('error')}" for e in last.get("errors") or ()),
               *(last.get("conflicts") or ()), *(f"pending: {p}" for p in last.get("pending") or ())]
    config = status.get("config") or {}
    if config.get("error") and not config.get("generation"):
        details.insert(0, "no valid config")
    reason = f"last reconcile: {result or 'none yet'}"
    if details:
        reason += " (" + "; ".join(str(d) for d in details[:3]) + (", ..." if len(details) > 3 else "") + ")"
    return Verdict(False, reason)


def _read(state_dir: Path) -> status_mod.Status | None:
    try:
        return status_mod.read(state_dir)
    except (OSError, ValueError):
        return None


def _reload_mark(status: status_mod.Status | None) -> object:
    """What changes when the daemon has handled a SIGHUP: its reload counter (else its update time)."""
    if status is None:
        return None
    return ("reloads", status["reloads"]) if "reloads" in status else ("updated", status.get("updated"))


def wait_online(state_dir: Path, timeout: float, *, strict: bool = False,
                clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> int:
    deadline = clock() + timeout
    while True:
        status = _read(state_dir)
        verdict = online_verdict(status, status is not None and status_mod.pid_alive(status.get("pid")), strict)
        if verdict.done:
            print(f"ipvland: online: {verdict.reason}")
            return 0
        if clock() >= deadline:
            print(f"ipvland wait-online: not converged after {timeout:g}s: {verdict.reason}", file=sys.stderr)
            return 1
        sleep(POLL)


def reload(pid: int, state_dir: Path, timeout: float, *, clock: Callable[[], float] = time.monotonic,
           sleep: Callable[[float], None] = time.sleep, kill: Callable[[int, int], None] = os.kill) -> int:
    current = _read(state_dir)
    if current is None or current.get("pid") != pid:
        # Never signal a process that is not the daemon of this state directory (a stale or wrong pid).
        holder = "no status file" if current is None else f"its daemon is pid {current.get('pid')}"
        print(f"ipvland reload: pid {pid} is not the daemon of {state_dir} ({holder}); nothing sent",
              file=sys.stderr)
        return 1
    before = _reload_mark(current)
    try:
        kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        print(f"ipvland reload: no process {pid}", file=sys.stderr)
        return 1
    except PermissionError:
        print(f"ipvland reload: not allowed to signal process {pid} (run as root)", file=sys.stderr)
        return 1
    deadline = clock() + timeout
    while _reload_mark(after := _read(state_dir)) == before:
        if clock() >= deadline:
            print(f"ipvland reload: SIGHUP sent to {pid}; no reload seen in {state_dir} after {timeout:g}s",
                  file=sys.stderr)
            return 1
        sleep(POLL)
    error = ((after or {}).get("config") or {}).get("error")
    if error:  # like `nginx -s reload`: a config that does not load fails the reload; the old one stays
        errors = error.get("errors") or []
        for line in errors[:5]:
            print(line, file=sys.stderr)
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        print(f"ipvland reload: the new config has {len(errors)} error(s){more}; "
              "the last good config stays enforced", file=sys.stderr)
        return 1
    return 0
