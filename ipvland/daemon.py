"""`ipvland run`: keep the kernel converged to the config, under systemd.

One thread (the caller's) runs every reconcile, so reconciles never overlap. Everything else only
*requests* one: the config watcher (watchdog thread), the netlink monitor (its thread), signals. The
decisions are small units with no I/O, each tested as a state machine:

- schedule.Scheduler: which trigger leads to which reconcile, when (debounce, quiet period, resync
  timer) and the backoff after a reconcile that did not converge or rewrote a flapping object;
- schedule.choose_scope: which namespaces a reconcile reads;
- enforce.ConfigChoice: which config is enforced and why (last good, rolled back, none), and whether
  a reconcile may roll back (only a new generation's first);
- flaps.FlapDetector: objects ipvland rewrites again and again;
- heartbeat.Feeder: WATCHDOG=1 only while the loop makes progress.

This class only wires them: it sleeps on a condition variable until the scheduler's next deadline (an
idle daemon does not poll), loads the config, runs the reconcile, and writes the status.

A config that does not load (syntax, schema, semantics, empty, missing) never replaces the last good
one: its errors are logged (FILE:LINE:COL) and shown in the status, and the last good config stays
enforced. With no good config at all nothing is touched; the daemon stays up and picks the config up
once it is valid. A config file being written is not read until it is closed (watch.py).

Signals: SIGHUP reloads (RELOADING=1 ... READY=1; `reloads` in the status counts them). SIGTERM and
SIGINT let the running reconcile finish, then exit 0; stopping never deletes anything.

systemd (sd_notify): READY=1 after the first reconcile attempt (even when the config is bad: the daemon
is up and reporting), STATUS=<summary> after each, WATCHDOG=1 (heartbeat.py), STOPPING=1.
"""

from __future__ import annotations

import contextlib
import faulthandler
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any, cast

from ipvland import status as status_mod
from ipvland.enforce import RECORD_FILE, ConfigChoice, RolledBack, from_record, legacy_files_digest, migrated
from ipvland.flaps import FlapDetector, object_key
from ipvland.heartbeat import Feeder, FeederThread, clamp_probes
from ipvland.model import Settling, Spec
from ipvland.schedule import (
    BACKOFF_MAX,
    CONFIG_MAX_DELAY,
    DEBOUNCE,
    MAX_DELAY,
    QUIET,
    Job,
    Scheduler,
    Trigger,
    choose_scope,
)

log = logging.getLogger("ipvland")

__all__ = ["DEBOUNCE", "MAX_DELAY", "Daemon", "JournalFormatter", "install_signals", "run", "setup_logging"]

LoadFn = Callable[[Path], Spec]
ReconcileFn = Callable[..., Any]  # (spec, kernel[, scope=namespaces][, rollback_on_probe_failure=True]) -> Report
NamespacesFn = Callable[[Spec, Any], frozenset[str | None]]


class _Ticking:
    """A Kernel whose every call is progress for the watchdog (a dump, a write)."""

    def __init__(self, kernel: Any, tick: Callable[[], None]) -> None:
        self._kernel = kernel
        self._tick = tick

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._kernel, name)
        if not callable(value):
            return value

        def call(*args: Any, **kwargs: Any) -> Any:
            self._tick()
            try:
                return value(*args, **kwargs)
            finally:
                self._tick()
        return call


class Daemon:
    """The wiring of the units above, with its collaborators injectable.

    load_fn(path) -> Spec raises spec.SpecError (with .errors) or OSError for a bad config.
    reconcile_fn(spec, kernel[, scope=...][, rollback_on_probe_failure=True]) -> Report.
    kernel_factory() -> a Kernel (created lazily, re-created after a reconcile raised).
    namespaces_fn(spec, kernel) -> the namespaces whose events matter.
    """

    def __init__(
        self,
        config: Path,
        *,
        state_dir: Path,
        interval: float = 300.0,
        load_fn: LoadFn | None = None,
        reconcile_fn: ReconcileFn | None = None,
        kernel_factory: Callable[[], Any] | None = None,
        namespaces_fn: NamespacesFn | None = None,
        watch_files: bool = True,
        watch_netlink: bool = True,
        debounce: float = DEBOUNCE,
        max_delay: float = MAX_DELAY,
        quiet: float = QUIET,
        config_max_delay: float = CONFIG_MAX_DELAY,
        backoff_max: float = BACKOFF_MAX,
        notify: Callable[..., bool] = status_mod.sd_notify,
        watchdog_usec: int | None = None,
        rollback_on_probe_failure: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.state_dir = state_dir
        self.interval = interval
        self._load_fn = load_fn
        self._loader: Any = None  # spec.Loader, made at the first read
        self._reconcile_fn = reconcile_fn
        self._kernel_factory = kernel_factory
        self._namespaces_fn = namespaces_fn
        self._notify = notify
        self._clock = clock
        self.watch_files = watch_files
        self.watch_netlink = watch_netlink
        self.rollback_on_probe_failure = rollback_on_probe_failure

        self._cond = threading.Condition()  # guards the scheduler, the event counters and _stop
        self._stop = False
        self.scheduler = Scheduler(interval, clock(), debounce=debounce, max_delay=max_delay, quiet=quiet,
                                   config_max_delay=config_max_delay, backoff_max=backoff_max)
        self.choice = ConfigChoice()
        self.flaps = FlapDetector()
        self.watchdog_timeout = watchdog_usec / 1e6 if watchdog_usec else None
        self.feeder: FeederThread | None = None
        if self.watchdog_timeout:
            self.feeder = FeederThread(Feeder(self.watchdog_timeout, clock()), notify, clock)
        self._clamp_said: str | None = None
        self._kept_rollback: dict[str, Any] | None = None  # what RECORD_FILE holds
        self._host: str | None = None  # the identity the last config was selected for (spec.default_host)

        self.kernel: Any = None
        self.reconciles = 0
        self.reloads = 0  # SIGHUPs handled (config read again, READY=1 sent)
        self.changes_total = 0
        self.drift_events = 0  # relevant netlink events ipvland did not cause
        self.own_events = 0  # the echoes of ipvland's own writes
        self.drift_last: float | None = None
        self._writing = False  # a reconcile runs: its events are ipvland's own
        self._flapped_generation = 0
        self.last: dict[str, Any] | None = None
        self.pending: list[str] = []
        # What is in place but not usable yet (IPv6 DAD), by namespace: a drift repair reads only
        # its own namespaces, so what it did not read is carried over (see carry_settling).
        self.settling: dict[str | None, tuple[str, ...]] = {}
        self._last_conflicts: tuple[str, ...] = ()
        self.started = time.time()
        self.ready = False
        self.watcher: Any = None
        self.watch_error: str | None = None  # why the config files are not watched (resync and SIGHUP only)
        self.monitor: Any = None
        # called after every cycle (metrics.py): (daemon, triggers, the reconcile's status view or None
        # when the cycle ran none, its Report or None)
        self.observer: Callable[[Daemon, list[str], dict[str, Any] | None, Any], None] | None = None
        self.last_report: Any = None
        self._try_said: float | None = None  # the pending try already logged
        self._try_armed: tuple[float, float] | None = None  # (try, deadline) a timer is set for
        self._held: Any = None  # the try this daemon holds off for (confirm.Try)

    # ------------------------------------------------------------------ compatibility views

    @property
    def spec(self) -> Spec | None:
        """The config enforced now."""
        return self.choice.enforced

    @property
    def generation(self) -> int:
        return self.choice.generation

    # ------------------------------------------------------------------ requests (any thread)

    def request(self, reason: str, trigger: Trigger = Trigger.NETLINK, *, netns: str | None = None,
                parents: frozenset[str] = frozenset()) -> None:
        with self._cond:
            self.scheduler.request(trigger, self._clock(), reason=reason, netns=netns, parents=parents)
            self._cond.notify()

    def request_reload(self) -> None:
        """SIGHUP."""
        self.request("SIGHUP", Trigger.HUP)

    def request_stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()

    def on_file_event(self, what: str) -> None:
        log.debug("config: %s", what)
        self.request("config file", Trigger.CONFIG)

    def on_netlink_event(self, netns: str | None, count: int, links: frozenset[str] = frozenset()) -> None:
        with self._cond:
            if self._writing:
                self.own_events += count
            else:
                self.drift_events += count
                self.drift_last = time.time()
        self.request(f"netlink {netns or 'host'}", netns=netns, parents=links)

    def on_port_echo(self, netns: str | None, links: frozenset[str]) -> None:
        """Links whose RTM_NEWLINK showed nothing new (events.scan): for a parent, an ipvlan joined
        or left its port. When that ipvlan is in a namespace ipvland does not watch (a CNI's), this
        message is all ipvland hears of it, and the port's mode may have changed with it (every
        create sets it for the whole port, with no event on the siblings); or a foreign ipvlan that
        held a parent in conflict is gone. So: a port check, which reads each port's mode through
        one sibling (cheap, unlike the host's objects), or a full turn after one not converged."""
        spec = self.spec
        if netns is not None or spec is None:
            return
        ports = {p.name for p in spec.parents if p.devices}  # a parent with routes or neighbors only has no port
        resolved = getattr(getattr(self.last_report, "plan", None), "resolved", ())
        parents = ports | {nic for name, nic in resolved if name in ports}
        hit = sorted(links & parents)
        if hit:
            with self._cond:
                self.scheduler.request_port_check(self._clock(), f"netlink host: an ipvlan joined or left "
                                                                 f"the port of {', '.join(hit)}")
                self._cond.notify()

    # ------------------------------------------------------------------ the loop (one thread)

    def _alive(self) -> None:
        if self.feeder is not None:
            self.feeder.alive()

    def _next_job(self) -> Job | None:
        """Block until a reconcile is due; None when asked to stop."""
        with self._cond:
            while True:
                if self._stop:
                    return None
                self._alive()
                now = self._clock()
                job = self.scheduler.take(now)
                if job is not None:
                    return job
                deadline = self.scheduler.next_deadline()
                if self.feeder is not None:  # wake to show the feeder that the loop is not stuck
                    deadline = min(deadline, now + self.feeder.feeder.interval)
                self._cond.wait(max(0.0, deadline - now))

    def serve(self) -> int:
        """Run until request_stop(). The first reconcile runs at once."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._recall_rollback()
        self._start_sources()
        try:
            self.request("start", Trigger.START)
            while True:
                job = self._next_job()
                if job is None:
                    break
                before = self.last
                self._cycle(job)
                self._observe(job, before)
        finally:
            self._notify("STOPPING=1")
            self._stop_sources()
        log.info("stopped; the network is left as it is")
        return 0

    @contextlib.contextmanager
    def sources(self) -> Iterator[None]:
        """The daemon's event sources running and its kernel sockets open, without serve()'s loop: for
        turns driven one by one with run_job() (bench/run --profile-resync). Leaves the network as it is."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._start_sources()
        try:
            yield
        finally:
            self._stop_sources()
            self._drop_kernel()

    def run_job(self, *triggers: Trigger) -> None:
        """One turn of serve()'s loop, now, for a job of these triggers (reload, reconcile, status)."""
        job = Job()
        for trigger in triggers:
            job.add(trigger, trigger.value)
        self._cycle(job)

    def next_job(self) -> Job | None:
        """serve()'s wait: the next job its scheduler makes of the requests (netlink events, debounced),
        for a turn driven by hand with cycle() (bench/run --profile-repair)."""
        return self._next_job()

    def has_requests(self) -> bool:
        """A request is waiting for next_job() (its own echoes after a turn, say)."""
        with self._cond:
            return self.scheduler.pending()

    def cycle(self, job: Job) -> None:
        """One turn of serve()'s loop for a job from next_job()."""
        self._cycle(job)

    def _start_sources(self) -> None:
        if self.feeder is not None:
            self.feeder.start()
        if self.watch_files:
            from ipvland.watch import ConfigWatcher

            watcher = ConfigWatcher(self.config, self.on_file_event)
            try:
                watcher.start()
                self.watcher = watcher
            except OSError as e:
                # A full inotify table (max_user_instances, often exhausted on Kubernetes nodes) must not
                # keep the network from converging: run without the watch, and say so.
                self.watch_error = f"cannot watch the config files ({e.strerror or e}): changes are read " \
                                   f"at SIGHUP (systemctl reload) and at every resync ({self.interval:g}s)"
                log.warning("%s", self.watch_error)
                with contextlib.suppress(Exception):
                    watcher.stop()
        if self.watch_netlink:
            from ipvland.events import NetlinkMonitor

            self.monitor = NetlinkMonitor(self.on_netlink_event, on_echo=self.on_port_echo)
            self.monitor.update({None})
            self.monitor.start()

    def _stop_sources(self) -> None:
        for source in (self.watcher, self.monitor, self.feeder):
            if source is not None:
                try:
                    source.stop()
                except Exception as e:
                    log.debug("stopping %s: %s", type(source).__name__, e)

    def _cycle(self, job: Job) -> None:
        if job.hup:
            self._notify("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")
            log.info("reloading (SIGHUP)")
        reload = job.reload
        if reload and not self._reload(job.hup):
            if not job.triggers - {Trigger.CONFIG, Trigger.HUP}:
                return  # nothing but the reload was asked: it comes once the files are complete
            reload = False
        if reload and job.hup:
            self.reloads += 1
        last_converged = self.last is not None and self.last.get("result") == "ok"
        scope = choose_scope(job, last_converged=last_converged, parent_namespaces=self._parent_namespaces)
        t0 = self._clock()
        self.reconcile_now(job.reasons, scope, ports=job.ports)  # reconcile ignores it without a scope
        # Not converged after writing (or raising): its own echoes could loop, so back off. A
        # conflict or a pending object with no write attempted cannot: events of others still run.
        last = self.last or {}
        settled = last.get("result") not in ("errors", "failed") or not last.get("attempted", True)
        flapping = bool(self.last and self.last.get("rewrote_flapping"))
        with self._cond:
            self.scheduler.finished(t0, self._clock(), full=scope is None, settled=settled, flapping=flapping)
            hold = self.scheduler.hold_until
        if hold is not None:
            log.info("next reconcile in %.0fs at the earliest (%s)", hold - self._clock(), self.scheduler.hold_why)
        self._keep_rollback()
        self.write_status()
        summary = status_mod.summary(self.status())
        if not self.ready or (job.hup and reload):
            self._notify("READY=1", f"STATUS={summary}")
            self.ready = True
        else:
            self._notify(f"STATUS={summary}")

    def _observe(self, job: Job, before: dict[str, Any] | None) -> None:
        if self.observer is None:
            return
        ran = self.last is not before
        try:
            self.observer(self, [t.value for t in job.triggers], self.last if ran else None,
                          self.last_report if ran else None)
        except Exception as e:  # metrics never stop the daemon
            log.error("metrics: %s: %s", type(e).__name__, e)

    def _parent_namespaces(self, parent: str) -> set[str | None]:
        spec = self.spec
        if spec is None:
            return set()
        return {d.netns for p in spec.parents if p.name == parent for d in p.devices} | {None}

    # ------------------------------------------------------------------ config

    def _reload(self, hup: bool) -> bool:
        """Re-read the config unless a file of it is being written; False when the read is deferred
        (until the file is closed: its close is an event). A read that a write overlapped is thrown
        away and done again after the quiet period."""
        watcher = self.watcher
        if watcher is None:
            self.load()
            return True
        watcher.rearm()
        writing = watcher.writing()
        if writing is not None:
            path, until = writing
            log.info("config: %s is being written: reading it once it is closed", path)
            with self._cond:
                self.scheduler.defer_reload(until, hup=hup)
            return False
        before = watcher.marker()
        loaded = self._read()
        if watcher.marker() != before:
            log.info("config: a file was written while it was read: reading it again")
            with self._cond:
                self.scheduler.defer_reload(self._clock() + self.scheduler.quiet, hup=hup)
            return False
        self._take(loaded)
        return True

    def _read(self) -> Spec | list[str]:
        """The config as it is on disk: a Spec, or its errors."""
        from ipvland import spec as spec_mod

        if self._load_fn is not None:
            load_fn = self._load_fn
        else:  # one per daemon: unchanged files are not parsed and checked again at every resync
            self._loader = self._loader or spec_mod.Loader()
            load_fn = self._loader
        host = spec_mod.default_host()
        if host != self._host:  # the hostname can change under a running daemon (DHCP, hostnamectl)
            if self._host is not None:
                log.warning("host identity changed from %s to %s: drop-ins' hosts: now select for %s",
                            self._host, host, host)
            self._host = host
        try:
            return load_fn(self.config)
        except spec_mod.SpecError as e:
            return [str(err) for err in e.errors] or [str(e)]
        except OSError as e:
            return [f"{e.filename or self.config}: {e.strerror or e}"]

    def load(self) -> bool:
        """Re-read the config. True when a new good config replaced the old one."""
        return self._take(self._read())

    def _take(self, loaded: Spec | list[str]) -> bool:
        if isinstance(loaded, list):
            self._config_error(loaded)
            return False
        if self.choice.errors is not None:
            log.info("config: valid again")
        rolled = self.choice.rolled_back
        if rolled is not None and rolled.legacy_digest and self.choice.is_rolled_back:
            self.choice.redigested(migrated(rolled, loaded))  # a record from before an upgrade
        what = self.choice.loaded(loaded, loaded.files_sha256, time.time())
        if what == "refused":
            return False
        if what == "same":
            return False
        self.flaps.reset()
        log.info("config generation %d loaded for host %s: %d parent(s), %d device(s) from %s", self.generation,
                 self._host, len(loaded.parents), len(loaded.devices),
                 ", ".join(loaded.sources) or str(self.config))
        return True

    def _config_error(self, errors: list[str]) -> None:
        if self.choice.failed(errors, time.time()):  # log each error once, not at every resync
            for err in errors:
                log.error("config: %s", err)
            log.error("config: %d error(s); enforcing %s", len(errors), self.choice.reason)

    # ------------------------------------------------------------------ a rollback outlives the daemon

    def _recall_rollback(self) -> None:
        """At start: the rollback in force when the daemon stopped (enforce.py), if any."""
        import json

        from ipvland import spec as spec_mod

        path = self.state_dir / RECORD_FILE
        try:
            rolled_back = from_record(json.loads(path.read_bytes()))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as e:
            log.warning("%s: %s: ignored (the config is tried with rollback armed)", path, e)
            return
        restored = None
        if rolled_back.restored_config is not None:
            try:
                restored = spec_mod.loads(rolled_back.restored_config,
                                          f"<state before generation {rolled_back.generation}>")
            except spec_mod.SpecError as e:
                log.warning("%s: the restored state does not load (%s): nothing is enforced", path, e)
        self.choice.remember(rolled_back, restored)
        self._kept_rollback = self.choice.record()
        log.warning("config generation %d was rolled back before this start (%s): its files are not applied "
                    "again until they change", rolled_back.generation, "; ".join(rolled_back.broken))

    def _keep_rollback(self) -> None:
        """Keep the rollback in force in the state directory (written when it changes, removed after)."""
        record = self.choice.record()
        if record == self._kept_rollback:
            return
        path = self.state_dir / RECORD_FILE
        try:
            if record is None:
                path.unlink(missing_ok=True)
            else:
                status_mod.write_json(self.state_dir, RECORD_FILE, record)
        except OSError as e:
            log.error("cannot keep the rollback in %s: %s (a restart would try that config again)", path, e)
            return
        self._kept_rollback = record

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

    def _enforced(self) -> Spec | None:
        """The enforced spec, with its probes clamped to the watchdog (said once per change)."""
        spec = self.spec
        if spec is None or self.watchdog_timeout is None:
            return spec
        clamped, message = clamp_probes(spec, self.watchdog_timeout)
        if message is not None and message != self._clamp_said:
            log.warning("%s", message)
        self._clamp_said = message
        return clamped

    def _call_reconcile(self, spec: Spec, kernel: Any, scope: frozenset[str | None] | None, rollback: bool,
                        ports: bool = False) -> Any:
        opts: dict[str, Any] = {}
        if scope is not None:
            opts["scope"] = scope
        if ports:
            opts["ports"] = True
        if rollback:
            opts["rollback_on_probe_failure"] = True
        if self._reconcile_fn is not None:
            return self._reconcile_fn(spec, kernel, **opts)
        from ipvland.reconcile import reconcile

        return reconcile(spec, cast(Any, _Ticking(kernel, self._alive)), progress=self._alive,
                         before_apply=self._no_try_started, **opts)

    def _no_try_started(self, observed: Any) -> None:
        """Right before applying: a try that began while this reconcile planned wins (nothing is applied)."""
        from ipvland import confirm

        if confirm.pending(self.state_dir, time.time()) is not None:
            raise confirm.TryStarted()

    def reconcile_now(self, reasons: list[str], scope: frozenset[str | None] | None = None, *,
                      ports: bool = False) -> None:
        """One reconcile; scope: only these namespaces (see reconcile.reconcile), None: everything;
        ports: also what shows each port's mode (a port check, see on_port_echo)."""
        if self._try_holds():
            return
        started = time.time()
        t0 = self._clock()
        spec = self._enforced()
        self.last_report = None
        if spec is None:
            self.last = {"started": status_mod.iso(started), "duration": 0.0, "result": "no-config",
                         "trigger": reasons, "changes": [], "errors": [], "conflicts": [], "pending": []}
            return
        with contextlib.ExitStack() as turn:
            self._reconcile_in(turn, spec, reasons, scope, started, t0, ports)

    def _reconcile_in(self, turn: contextlib.ExitStack, spec: Spec, reasons: list[str],
                      scope: frozenset[str | None] | None, started: float, t0: float, ports: bool = False) -> None:
        """reconcile_now's body, in one listing of /run/netns (Kernel.one_listing) held by `turn`."""
        rollback = self.rollback_on_probe_failure and self.choice.rollback_allowed
        log.debug("reconcile (%s)%s%s", ", ".join(reasons),
                  "" if scope is None else " in " + ", ".join(sorted(ns or "host" for ns in scope)),
                  " with rollback on probe failure" if rollback else "")
        try:
            kernel = self._kernel()
            if hasattr(kernel, "one_listing"):  # a stand-in kernel of the unit tests may not list
                # a repair may reuse the last listing while /run/netns is unchanged; a full turn, and
                # one that may roll back (it reads everything), lists afresh
                turn.enter_context(kernel.one_listing(reuse=scope is not None and not rollback))
            # Before too: a socket of ours in a namespace deleted by hand would keep it (and its
            # devices, and their addresses) alive, in the way of re-creating it.
            self._update_monitor(scope)
            with self._cond:
                self._writing = True  # from here on, the events are the echoes of our writes
            report = self._call_reconcile(spec, kernel, scope, rollback, ports)
        except Exception as e:
            if type(e).__name__ == "TryStarted":
                log.info("a try began while planning: nothing applied, holding off")
                return
            duration = self._clock() - t0
            log.error("reconcile failed: %s: %s", type(e).__name__, e)
            log.debug("reconcile failure", exc_info=True)
            self._drop_kernel()
            self.reconciles += 1
            self.last = {"started": status_mod.iso(started), "duration": round(duration, 4), "result": "failed",
                         "trigger": reasons, "changes": [], "conflicts": [], "pending": self.pending,
                         "errors": [{"object": "reconcile", "error": f"{type(e).__name__}: {e}"}]}
            return
        finally:
            self._echoes_read()
        self.reconciles += 1
        self.last_report = report
        self.last = self._digest(report, started, self._clock() - t0, reasons)
        # null: everything was read; else the namespaces read, null in the list for ipvland's own
        self.last["scope"] = None if scope is None else sorted(scope, key=lambda n: (n is not None, n or ""))
        self.last["rollback"] = rollback
        self.last["attempted"] = (any(not o.skipped for o in report.outcomes)
                                  or getattr(report, "rollback", None) is not None)
        final = report.remaining if report.remaining is not None else report.plan
        self.settling = carry_settling(self.settling, scope, getattr(final, "settling", ()))
        self._after(report)
        self._update_monitor(scope)

    def _try_holds(self) -> bool:
        """`apply --confirm-timeout` left a try pending (confirm.py): hold off until its deadline, then
        finish its revert if nobody confirmed it. A reverted try of the files this daemon enforces is
        treated as a rollback: those files are not applied again until they change."""
        from ipvland import confirm

        now = time.time()
        try:
            t = confirm.read(self.state_dir)
            if t is None and self._held is not None:
                self._try_ended(self._held)
            if t is not None and (now < t.deadline or confirm.in_progress(t, now)):
                self._held = t
                if self._try_said != t.started:
                    log.info("holding off: %s", t.describe())
                    self._try_said = t.started
                if now >= t.deadline:  # its apply is still making the change: look again in a second
                    if self._try_armed != (t.started, -1.0):
                        self._try_armed = (t.started, -1.0)
                        log.warning("holding off past the deadline: pid %d is still applying %s (waited for "
                                    "at most %.0f s more)", t.pid, t.config, t.deadline + confirm.APPLY_GRACE - now)
                    self._try_timer(1.0)
                elif self._try_armed != (t.started, t.deadline):  # once per deadline (apply moves it)
                    self._try_armed = (t.started, t.deadline)
                    self._try_timer(t.deadline - now + 0.05)
                return True
            done = confirm.finish(self.state_dir, self._kernel(), now) if t is not None else None
        except Exception as e:  # an unreadable try never stops the daemon
            log.error("pending try: %s", e)
            return False
        if done is not None:
            t, restored = done
            self._held = None
            log.warning("%s: not confirmed in time: reverted (%s)", t.describe(), restored.describe())
            self._refuse_tried(t, restored.ok, restored.error, restored.previous)
        return False

    def _try_timer(self, seconds: float) -> None:
        timer = threading.Timer(seconds, self.request, ("try deadline", Trigger.RETRY))
        timer.daemon = True
        timer.start()

    def _try_ended(self, held: Any) -> None:
        """The try this daemon held off for is gone: confirmed, or reverted by the apply that made it."""
        from ipvland import confirm
        from ipvland import spec as spec_mod

        self._held = None
        done = confirm.outcome(self.state_dir, held)
        if done is None or done.outcome != "reverted":
            log.info("the try of %s was confirmed: reconciling again", held.config)
            return
        log.warning("the try of %s was reverted by the apply that made it", held.config)
        try:
            previous = spec_mod.loads(held.before, "<state before the try>")
        except spec_mod.SpecError as e:
            self._refuse_tried(held, False, str(e), None)
            return
        self._refuse_tried(held, "NOT fully" not in done.detail, None, previous)

    def _refuse_tried(self, t: Any, restored: bool, error: str | None, previous: Spec | None) -> None:
        """A reverted try of the files this daemon enforces counts as a rollback: not applied again."""
        good = self.choice.good
        if t.digest == self.choice.digest or (  # or a try made by the version before an upgrade
                good is not None and t.digest == legacy_files_digest(good.sources)):
            self.choice.reconciled(RolledBack(self.generation, self.choice.digest or t.digest, time.time(),
                                              ("not confirmed",), restored, error), previous)

    def _echoes_read(self) -> None:
        """The kernel queued the events of our writes before acknowledging them: read them now, as ours."""
        if self.monitor is not None:
            try:
                self.monitor.flush()
            except Exception as e:
                log.debug("reading our own events: %s", e)
        with self._cond:
            self._writing = False

    def _after(self, report: Any) -> None:
        """What the reconcile means for the config choice (a rollback) and for flapping objects."""
        rollback = getattr(report, "rollback", None)
        if rollback is None:
            self.choice.reconciled(None, None)
        else:
            broken = tuple(p.describe() for p in rollback.broken)
            self.choice.reconciled(RolledBack(self.generation, self.choice.digest or "", time.time(), broken,
                                              rollback.ok, rollback.error,
                                              getattr(rollback, "previous_config", None)), rollback.previous)
            log.error("config generation %d broke %s: rolled back%s; it is not applied again until its files "
                      "change", self.generation, "; ".join(broken), "" if rollback.ok else " (restore incomplete)")
        keys = [object_key(o.change) for o in report.outcomes if o.ok]
        now = self._clock()
        started, again = self.flaps.record(keys, now)
        for key, rewrites, since, _last in self.flaps.flapping(now):
            if key in started:
                log.warning("flapping: %s rewritten %d times in %.0fs (something else changes it back?): "
                            "backing off", key, rewrites, now - since if since else 0)
            elif key in again:
                log.warning("flapping: %s rewritten again (%d times since it started flapping)", key, rewrites)
        self.last = {**(self.last or {}), "rewrote_flapping": sorted(set(started) | set(again))}

    def _update_monitor(self, scope: frozenset[str | None] | None = None) -> None:
        """The monitor's sockets to the namespaces the spec uses now. Scoped (a repair): only those in
        scope have their identity checked; the others' change is the /run/netns watch's to see."""
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
        self.monitor.update(wanted, check=scope)


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
        choice = self.choice
        error = None
        if choice.errors is not None:
            error = {"since": status_mod.iso(choice.error_since), "errors": choice.errors}
        now = self._clock()
        with self._cond:
            drift = {"events": self.drift_events, "last": status_mod.iso(self.drift_last), "own": self.own_events}
            hold = self.scheduler.hold_until
            backoff = None if hold is None else {
                "until": status_mod.iso(time.time() + max(0.0, hold - now)), "why": self.scheduler.hold_why}
        rolled = choice.rolled_back
        spec = self.spec
        return {
            "schema": status_mod.SCHEMA,
            "pid": os.getpid(),
            "started": status_mod.iso(self.started),
            "updated": status_mod.now_iso(),
            "config": {"path": str(self.config), "generation": choice.generation, "watch_error": self.watch_error,
                       "sources": list(choice.good.sources) if choice.good is not None else [],
                       "loaded": status_mod.iso(choice.loaded_at), "error": error,
                       "enforced": {"generation": choice.generation if choice.good is not None
                                    and not choice.is_rolled_back else None,
                                    "rolled_back": choice.is_rolled_back,
                                    "devices": len(spec.devices) if spec is not None else 0,
                                    "reason": choice.reason}},
            "last_reconcile": self.last,
            "rolled_back": None if rolled is None else {
                "generation": rolled.generation, "at": status_mod.iso(rolled.at), "broken": list(rolled.broken),
                "restored": rolled.restored, "error": rolled.error, "files_sha256": rolled.digest,
                "retried": not choice.is_rolled_back},
            "reconciles": self.reconciles,
            "reloads": self.reloads,
            "changes_total": self.changes_total,
            "drift": drift,
            "flapping": [{"object": key, "rewrites": n, "since": status_mod.iso(time.time() - (now - since)),
                          "last": status_mod.iso(time.time() - (now - last))}
                         for key, n, since, last in self.flaps.flapping(now)],
            "backoff": backoff,
            "pending": self.pending,
            "settling": [line for _, lines in sorted(self.settling.items(), key=lambda kv: kv[0] or "")
                         for line in lines],
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


def carry_settling(previous: dict[str | None, tuple[str, ...]], scope: frozenset[str | None] | None,
                   settling: Iterable[Settling]) -> dict[str | None, tuple[str, ...]]:
    """What is still settling after a reconcile that read `scope` (None: every namespace): the
    namespaces it read say so afresh; the others keep what an earlier reconcile saw there."""
    out = {ns: lines for ns, lines in previous.items() if scope is not None and ns not in scope}
    fresh: dict[str | None, list[str]] = {}
    for s in settling:
        fresh.setdefault(s.netns, []).append(s.describe())
    out.update((ns, tuple(lines)) for ns, lines in fresh.items())
    return out

def _quiet_libraries(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or record.name.split(".")[0] != "watchdog"


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
    # Libraries' debug output (watchdog's observer) would drown ours; a filter on the handler holds
    # whatever levels they set on their own loggers.
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
        rollback_on_probe_failure: bool = False, metrics_file: Path | None = None,
        metrics_listen: tuple[str, int] | None = None) -> int:
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
    metrics = None
    if metrics_file is not None or metrics_listen is not None:
        from ipvland.metrics import Metrics

        metrics = Metrics(metrics_file)
        if metrics_listen is not None:
            try:
                metrics.listen(*metrics_listen)
            except OSError as e:
                log.error("fatal: cannot serve metrics on %s:%d: %s", *metrics_listen, e.strerror or e)
                return 1
        daemon.observer = metrics.observe
    install_signals(daemon)
    log.info("starting: config %s, resync every %gs, status in %s", config, interval, state_dir)
    try:
        return daemon.serve()
    except OSError as e:
        log.error("fatal: %s", e)
        return 1
    finally:
        if metrics is not None:
            metrics.stop()
