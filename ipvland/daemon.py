"""`ipvland run`: keep the kernel converged to the config, under systemd.

One thread (the caller's) runs every reconcile, so reconciles never overlap. Everything else only
*requests* one: the config watcher (watchdog thread), the netlink monitor (its thread), signals, the
periodic resync and retries. A request sets a flag under a condition variable; the loop sleeps on it
with a timeout equal to the next deadline (resync, watchdog ping, debounce, retry), so an idle daemon
does not poll. Requests are debounced: a reconcile starts DEBOUNCE seconds after the last request of a
burst, or MAX_DELAY after the first one if requests keep coming (a flood yields at most one reconcile
per MAX_DELAY, and drift is still repaired within a second).

A reconcile triggered by netlink events alone reads and repairs only the namespaces the events came
from (reconcile's `scope`), when the previous reconcile ended "ok": everything else was converged
then, and any change to it since would have sent an event of its own. Every other trigger (start,
config, SIGHUP, retry, the periodic resync, which runs `interval` after the last *full* reconcile
whatever the drift) reads everything.

The config is re-read on file events, SIGHUP and every periodic resync. A config that does not load
(syntax, schema, semantics, empty, half-written, missing) never replaces the last good one: its errors
are logged (FILE:LINE:COL) and shown in the status, and the last good config stays enforced. With no
good config at all nothing is touched; the daemon stays up and picks the config up once it is valid.

Signals: SIGHUP reloads (RELOADING=1 ... READY=1). SIGTERM and SIGINT let the running reconcile finish,
then exit 0; stopping never deletes anything.

systemd (sd_notify): READY=1 after the first reconcile attempt (even when the config is bad: the daemon
is up and reporting), STATUS=<summary> after each, WATCHDOG=1 at half $WATCHDOG_USEC, STOPPING=1.
"""

from __future__ import annotations

import faulthandler
import functools
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

from ipvland import status as status_mod
from ipvland.model import Spec

log = logging.getLogger("ipvland")

DEBOUNCE = 0.15
MAX_DELAY = 0.6
RETRY_MIN = 1.0


class ConfigErrorLike(Protocol):
    def __str__(self) -> str: ...


LoadFn = Callable[[Path], Spec]
ReconcileFn = Callable[..., Any]  # (spec, kernel[, scope=namespaces]) -> reconcile.Report
NamespacesFn = Callable[[Spec, Any], frozenset[str | None]]


class _Everywhere:
    pass


EVERYWHERE = _Everywhere()  # a request not tied to one namespace's events


@dataclass
class _Requests:
    reasons: list[str] = field(default_factory=list)
    reload: bool = False
    hup: bool = False
    immediate: bool = False
    first: float | None = None  # monotonic time of the first and last request of the burst
    last: float | None = None
    namespaces: set[str | None] = field(default_factory=set)  # where the netlink events came from
    full: bool = False  # something other than netlink events asked: look at everything


class Daemon:
    """The trigger/debounce/last-good-config/status logic, with its collaborators injectable.

    load_fn(path) -> Spec raises spec.SpecError (with .errors) or OSError for a bad config.
    reconcile_fn(spec, kernel[, scope=...]) -> Report. kernel_factory() -> a Kernel (created lazily, re-created
    after a reconcile raised). namespaces_fn(spec, kernel) -> the namespaces whose events matter.
    """

    def __init__(
        self,
        config: Path,
        *,
        state_dir: Path,
        interval: float = 30.0,
        load_fn: LoadFn | None = None,
        reconcile_fn: ReconcileFn | None = None,
        kernel_factory: Callable[[], Any] | None = None,
        namespaces_fn: NamespacesFn | None = None,
        watch_files: bool = True,
        watch_netlink: bool = True,
        debounce: float = DEBOUNCE,
        max_delay: float = MAX_DELAY,
        notify: Callable[..., bool] = status_mod.sd_notify,
        watchdog_usec: int | None = None,
        rollback_on_probe_failure: bool = False,
    ) -> None:
        self.config = config
        self.state_dir = state_dir
        self.interval = interval
        self.debounce = debounce
        self.max_delay = max_delay
        self._load_fn = load_fn
        self._reconcile_fn = reconcile_fn
        self._kernel_factory = kernel_factory
        self._namespaces_fn = namespaces_fn
        self._notify = notify
        self.watch_files = watch_files
        self.watch_netlink = watch_netlink
        self.watchdog_interval = watchdog_usec / 2e6 if watchdog_usec else None
        self.rollback_on_probe_failure = rollback_on_probe_failure
        self.rolled_back: dict[str, Any] | None = None  # the last config generation that was rolled back

        self._cond = threading.Condition()
        self._req = _Requests()
        self._stop = False
        self._retry_at: float | None = None
        self._full_at = time.monotonic()  # when the last full reconcile started (the resync timer)
        self._backoff = RETRY_MIN

        self.spec: Spec | None = None  # the last good config
        self.generation = 0
        self.loaded_at: float | None = None
        self.config_errors: list[str] | None = None
        self.config_error_since: float | None = None
        self.kernel: Any = None
        self.reconciles = 0
        self.changes_total = 0
        self.drift_events = 0
        self.drift_last: float | None = None
        self.last: dict[str, Any] | None = None
        self.pending: list[str] = []
        self._last_conflicts: tuple[str, ...] = ()
        self.started = time.time()
        self.ready = False
        self.watcher: Any = None
        self.monitor: Any = None

    # ------------------------------------------------------------------ requests (any thread)

    def request(self, reason: str, *, reload: bool = False, immediate: bool = False, hup: bool = False,
                netns: str | _Everywhere | None = EVERYWHERE) -> None:
        now = time.monotonic()
        with self._cond:
            r = self._req
            if isinstance(netns, _Everywhere):
                r.full = True
            else:
                r.namespaces.add(netns)
            if len(r.reasons) < 20 and reason not in r.reasons:
                r.reasons.append(reason)
            r.reload |= reload
            r.immediate |= immediate
            r.hup |= hup
            r.first = now if r.first is None else r.first
            r.last = now
            self._cond.notify()

    def request_reload(self) -> None:
        """SIGHUP."""
        self.request("SIGHUP", reload=True, immediate=True, hup=True)

    def request_stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()

    def on_file_event(self, what: str) -> None:
        log.debug("config: %s", what)
        self.request("config file", reload=True)

    def on_netlink_event(self, netns: str | None, count: int) -> None:
        with self._cond:
            self.drift_events += count
            self.drift_last = time.time()
        self.request(f"netlink {netns or 'host'}", netns=netns)

    # ------------------------------------------------------------------ the loop (one thread)

    def _next_job(self) -> _Requests | None:
        """Block until a reconcile is due; None when asked to stop. Sends watchdog pings meanwhile."""
        now = time.monotonic()
        next_resync = self._full_at + self.interval
        next_ping = now if self.watchdog_interval else None
        with self._cond:
            while True:
                if self._stop:
                    return None
                now = time.monotonic()
                if next_ping is not None and now >= next_ping:
                    self._notify("WATCHDOG=1")
                    next_ping = now + (self.watchdog_interval or 0)
                if now >= next_resync:
                    # Before a due burst: under constant drift one always is, and the full resync
                    # must still come (it takes the burst's requests with it).
                    return self._req_take("resync")
                r = self._req
                deadlines = [next_resync]
                if next_ping is not None:
                    deadlines.append(next_ping)
                if r.first is not None and r.last is not None:
                    due = now if r.immediate else min(r.last + self.debounce, r.first + self.max_delay)
                    if now >= due:
                        return self._req_take()
                    deadlines.append(due)
                if self._retry_at is not None:
                    if now >= self._retry_at:
                        self._retry_at = None
                        return self._req_take("retry")
                    deadlines.append(self._retry_at)
                self._cond.wait(max(0.0, min(deadlines) - now))

    def _req_take(self, reason: str | None = None) -> _Requests:
        """Take the pending requests (with the lock held); a timer's reason re-reads the config too."""
        job, self._req = self._req, _Requests()
        if reason is not None:
            job.reasons.append(reason)
            job.reload = True
            job.full = True
        return job

    def serve(self) -> int:
        """Run until request_stop(). The first reconcile runs at once."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._start_sources()
        try:
            self._cycle(_Requests(reasons=["start"], reload=True, full=True))
            while True:
                job = self._next_job()
                if job is None:
                    break
                self._cycle(job)
        finally:
            self._notify("STOPPING=1")
            self._stop_sources()
        log.info("stopped; the network is left as it is")
        return 0

    def _start_sources(self) -> None:
        if self.watch_files:
            from ipvland.watch import ConfigWatcher

            self.watcher = ConfigWatcher(self.config, self.on_file_event)
            self.watcher.start()
        if self.watch_netlink:
            from ipvland.events import NetlinkMonitor

            self.monitor = NetlinkMonitor(self.on_netlink_event)
            self.monitor.update({None})
            self.monitor.start()

    def _stop_sources(self) -> None:
        for source in (self.watcher, self.monitor):
            if source is not None:
                try:
                    source.stop()
                except Exception as e:
                    log.debug("stopping %s: %s", type(source).__name__, e)

    def _cycle(self, job: _Requests) -> None:
        if job.hup:
            self._notify("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")
            log.info("reloading (SIGHUP)")
        if job.reload:
            if self.watcher is not None:
                self.watcher.rearm()
            self.load()
        # Netlink events alone (any other request, a reload among them, makes the job full), after
        # a reconcile that converged: everything out of the events' namespaces is as it left it.
        scoped = not job.full and self.last is not None and self.last.get("result") == "ok"
        self.reconcile_now(job.reasons, frozenset(job.namespaces) if scoped else None)
        self.write_status()
        summary = status_mod.summary(self.status())
        if not self.ready or job.hup:
            self._notify("READY=1", f"STATUS={summary}")
            self.ready = True
        else:
            self._notify(f"STATUS={summary}")

    # ------------------------------------------------------------------ config

    def load(self) -> bool:
        """Re-read the config. True when a new good config replaced the old one."""
        from ipvland import spec as spec_mod

        load_fn = self._load_fn or spec_mod.load
        try:
            loaded = load_fn(self.config)
        except spec_mod.SpecError as e:
            self._config_error([str(err) for err in e.errors] or [str(e)])
            return False
        except OSError as e:
            self._config_error([f"{e.filename or self.config}: {e.strerror or e}"])
            return False
        if self.config_errors is not None:
            log.info("config: valid again")
        self.config_errors = None
        self.config_error_since = None
        if loaded == self.spec:
            return False
        self.spec = loaded
        self.generation += 1
        self.loaded_at = time.time()
        log.info("config generation %d loaded: %d parent(s), %d device(s) from %s", self.generation,
                 len(loaded.parents), len(loaded.devices), ", ".join(loaded.sources) or str(self.config))
        return True

    def _config_error(self, errors: list[str]) -> None:
        if errors != self.config_errors:  # log each error once, not at every resync
            for err in errors:
                log.error("config: %s", err)
            keeping = (f"keeping config generation {self.generation}" if self.spec is not None
                       else "no valid config yet: nothing is enforced")
            log.error("config: %d error(s); %s", len(errors), keeping)
            self.config_error_since = time.time()
        self.config_errors = errors

    # ------------------------------------------------------------------ reconcile

    def _kernel(self) -> Any:
        if self.kernel is None:
            if self._kernel_factory is not None:
                self.kernel = self._kernel_factory()
            else:
                from ipvland.kernel import Kernel

                self.kernel = Kernel()
        return self.kernel

    def _drop_kernel(self) -> None:
        kernel, self.kernel = self.kernel, None
        close = getattr(kernel, "close", None)
        if close is not None:
            try:
                close()
            except Exception as e:
                log.debug("closing the kernel sockets: %s", e)

    def reconcile_now(self, reasons: list[str], scope: frozenset[str | None] | None = None) -> None:
        """One reconcile; scope: only these namespaces (see reconcile.reconcile), None: everything."""
        started = time.time()
        t0 = time.monotonic()
        if scope is None:
            self._full_at = t0
        if self.spec is None:
            self.last = {"started": status_mod.iso(started), "duration": 0.0, "result": "no-config",
                         "trigger": reasons, "changes": [], "errors": [], "conflicts": [], "pending": []}
            return
        log.debug("reconcile (%s)%s", ", ".join(reasons),
                  "" if scope is None else " in " + ", ".join(sorted(ns or "host" for ns in scope)))
        if self._reconcile_fn is not None:
            reconcile_fn = self._reconcile_fn
        else:
            from ipvland.reconcile import reconcile

            reconcile_fn = functools.partial(reconcile, rollback_on_probe_failure=self.rollback_on_probe_failure)
        try:
            kernel = self._kernel()
            # Before too: a socket of ours in a namespace deleted by hand would keep it (and its
            # devices, and their addresses) alive, in the way of re-creating it.
            self._update_monitor()
            report = reconcile_fn(self.spec, kernel) if scope is None else reconcile_fn(self.spec, kernel, scope=scope)
        except Exception as e:
            duration = time.monotonic() - t0
            log.error("reconcile failed: %s: %s", type(e).__name__, e)
            log.debug("reconcile failure", exc_info=True)
            self._drop_kernel()
            self.reconciles += 1
            self.last = {"started": status_mod.iso(started), "duration": round(duration, 4), "result": "failed",
                         "trigger": reasons, "changes": [], "conflicts": [], "pending": self.pending,
                         "errors": [{"object": "reconcile", "error": f"{type(e).__name__}: {e}"}]}
            self._schedule_retry()
            return
        self.reconciles += 1
        self.last = self._digest(report, started, time.monotonic() - t0, reasons)
        # null: everything was read; else the namespaces read, null in the list for ipvland's own
        self.last["scope"] = None if scope is None else sorted(scope, key=lambda n: (n is not None, n or ""))
        self._after_rollback(report)
        if self.last["result"] in ("errors", "failed"):
            self._schedule_retry()
        else:
            self._backoff = RETRY_MIN
            with self._cond:
                self._retry_at = None
        self._update_monitor()

    def _after_rollback(self, report: Any) -> None:
        """A rolled-back config is not retried: the restored state is enforced until the config changes."""
        rollback = getattr(report, "rollback", None)
        if rollback is None:
            return
        broken = [p.describe() for p in rollback.broken]
        self.rolled_back = {"generation": self.generation, "at": status_mod.now_iso(), "broken": broken,
                            "restored": rollback.ok, "error": rollback.error}
        log.error("config generation %d broke %s: rolled back%s", self.generation, "; ".join(broken),
                  "" if rollback.ok else " (restore incomplete)")
        if rollback.previous is not None:
            self.spec = rollback.previous

    def _schedule_retry(self) -> None:
        with self._cond:
            self._retry_at = time.monotonic() + self._backoff
        log.info("retrying in %.0fs", self._backoff)
        self._backoff = min(self._backoff * 2, max(self.interval, RETRY_MIN))

    def _update_monitor(self) -> None:
        if self.monitor is None or self.spec is None:
            return
        if self._namespaces_fn is not None:
            namespaces_fn = self._namespaces_fn
        else:
            from ipvland.reconcile import watched_namespaces as namespaces_fn
        try:
            wanted = set(namespaces_fn(self.spec, self.kernel)) | {None}
        except Exception as e:
            log.warning("cannot compute the namespaces to monitor: %s", e)
            return
        self.monitor.update(wanted)

    def _digest(self, report: Any, started: float, duration: float, reasons: list[str]) -> dict[str, Any]:
        """The status' view of a Report. apply already logged one line per change and per failure;
        here only what apply does not log: conflicts and pending objects (when they change, not at
        every resync) and what still differs after the apply."""
        changes: list[str] = []
        errors: list[dict[str, str]] = []
        for outcome in report.outcomes:
            line = outcome.change.describe()
            if outcome.skipped:
                errors.append({"object": line, "error": f"skipped: {outcome.error or 'its device failed'}"})
            elif outcome.error:
                errors.append({"object": line, "error": str(outcome.error)})
            else:
                changes.append(line)
        self.changes_total += len(changes)
        probes = [p.describe() for p in getattr(report, "probes", ())]
        for probe in getattr(report, "probes", ()):
            if not probe.ok:
                errors.append({"object": f"probe {probe.probe.netns or 'host'} -> {probe.probe.target}",
                               "error": probe.error or "no reply"})
        final = report.remaining if report.remaining is not None else report.plan
        conflicts = tuple(c.describe() for c in final.conflicts)
        if conflicts != self._last_conflicts:  # conflicts repeat at every resync: log when they change
            for c in conflicts:
                log.warning("%s", c)
            self._last_conflicts = conflicts
        pending = [p.describe() for p in final.pending]
        if pending != self.pending:
            for p in pending:
                log.info("pending: %s", p)
        self.pending = pending
        remaining = report.remaining
        if remaining is not None:
            for change in remaining.changes:
                log.warning("still differs after apply: %s", change.describe())
                errors.append({"object": change.describe(), "error": "still differs after apply"})
        if errors or conflicts:
            result = "errors"
        elif pending:
            result = "pending"
        else:
            result = "ok"
        if not report.ok and result == "ok":
            result = "errors"
        return {"started": status_mod.iso(started), "duration": round(duration, 4), "result": result,
                "trigger": reasons, "changes": changes, "errors": errors, "conflicts": list(conflicts),
                "pending": pending, "probes": probes}

    # ------------------------------------------------------------------ status

    def status(self) -> dict[str, Any]:
        error = None
        if self.config_errors is not None:
            error = {"since": status_mod.iso(self.config_error_since), "errors": self.config_errors}
        with self._cond:
            drift = {"events": self.drift_events, "last": status_mod.iso(self.drift_last)}
        return {
            "schema": status_mod.SCHEMA,
            "pid": os.getpid(),
            "started": status_mod.iso(self.started),
            "updated": status_mod.now_iso(),
            "config": {"path": str(self.config), "generation": self.generation,
                       "sources": list(self.spec.sources) if self.spec is not None else [],
                       "loaded": status_mod.iso(self.loaded_at), "error": error},
            "last_reconcile": self.last,
            "rolled_back": self.rolled_back,
            "reconciles": self.reconciles,
            "changes_total": self.changes_total,
            "drift": drift,
            "pending": self.pending,
            "marks": sys.modules["ipvland.marks"].report() if "ipvland.marks" in sys.modules else None,
        }

    def write_status(self) -> None:
        try:
            status_mod.write(self.state_dir, self.status())
        except OSError as e:
            log.error("cannot write the status file in %s: %s", self.state_dir, e)


# ---------------------------------------------------------------------- logging and entry point

_SYSLOG_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}


class JournalFormatter(logging.Formatter):
    """`<N>message`: journald reads the syslog priority from the prefix and adds its own timestamp."""

    def format(self, record: logging.LogRecord) -> str:
        priority = _SYSLOG_PRIORITY.get(record.levelno, 6)
        text = super().format(record)
        return "\n".join(f"<{priority}>{line}" for line in text.splitlines())


def _quiet_libraries(record: logging.LogRecord) -> bool:
    # pyroute2's tc module warns at import when /proc/net/psched is unreadable (the unit's ProcSubset=pid
    # hides it): ipvland never uses tc, so that warning says nothing true about ipvland.
    if record.name.startswith("pyroute2.netlink.rtnl.tcmsg") and record.levelno < logging.ERROR:
        return False
    return record.levelno >= logging.WARNING or record.name.split(".")[0] not in ("pyroute2", "watchdog")


def under_journal() -> bool:
    return bool(os.environ.get("JOURNAL_STREAM") or os.environ.get("INVOCATION_ID"))


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if under_journal():
        handler.setFormatter(JournalFormatter("%(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    # Libraries' debug output (pyroute2 logs every netlink message) would drown ours; a filter on the
    # handler holds whatever levels they set on their own loggers (pyroute2 resets its level on import).
    handler.addFilter(_quiet_libraries)


def _watchdog_usec() -> int | None:
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) or None
    except ValueError:
        return None


def install_signals(daemon: Daemon) -> None:
    """Handlers only hand the request to a short thread: taking the condition's lock inside a handler
    (which runs on the main thread, possibly while it holds that lock) could deadlock or race."""
    def later(fn: Callable[[], None]) -> Callable[[int, FrameType | None], None]:
        def handler(signum: int, frame: FrameType | None) -> None:
            log.info("%s received", signal.Signals(signum).name)
            threading.Thread(target=fn, daemon=True).start()
        return handler

    signal.signal(signal.SIGHUP, later(daemon.request_reload))
    signal.signal(signal.SIGTERM, later(daemon.request_stop))
    signal.signal(signal.SIGINT, later(daemon.request_stop))


def run(config: Path | None, interval: float, state_dir: Path, log_level: str,
        rollback_on_probe_failure: bool = False) -> int:
    setup_logging(log_level)
    if config is None:
        from ipvland import spec

        config = spec.default_config_path()
    if interval <= 0:
        log.error("--interval must be positive")
        return 1
    # `kill -USR2 <pid>` prints every thread's stack to the log: a cheap window into a stuck daemon.
    faulthandler.register(signal.SIGUSR2, all_threads=True)
    from ipvland import marks  # a kernel that drops ipvland's marks: a record stands in (marks.py)

    daemon = Daemon(Path(config), state_dir=state_dir, interval=interval, watchdog_usec=_watchdog_usec(),
                    rollback_on_probe_failure=rollback_on_probe_failure,
                    kernel_factory=lambda: marks.open_kernel(state_dir))
    install_signals(daemon)
    log.info("starting: config %s, resync every %gs, status in %s", config, interval, state_dir)
    try:
        return daemon.serve()
    except OSError as e:
        log.error("fatal: %s", e)
        return 1
