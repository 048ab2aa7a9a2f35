"""Prometheus metrics of the daemon (issue 14), with prometheus_client (its exposition format and parser).

`ipvland run --metrics-file PATH` writes them after every reconcile, atomically (a temp file renamed
into place), for node_exporter's textfile collector, which refuses timestamps (there are none);
`--metrics-listen ADDR:PORT` serves them over HTTP (off by default).

Updated only on the daemon's loop thread, after each cycle (Daemon.observer), from what the daemon
already knows: nothing here reads the kernel or the files.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
    write_to_textfile,
)

from ipvland import __version__

log = logging.getLogger("ipvland")

__all__ = ["Metrics", "parse_listen"]

# the trigger a reconcile is counted under when several asked for it: the most deliberate one
_TRIGGER_ORDER = ("start", "SIGHUP", "config file", "retry", "netlink", "resync")
_TRIGGER_LABEL = {"start": "start", "SIGHUP": "reload", "config file": "config", "retry": "retry",
                  "netlink": "netlink", "resync": "resync"}
_CHANGE_KIND = {
    "NamespaceCreate": "netns", "LinkCreate": "link", "LinkDelete": "link", "PortModeSet": "mode",
    "LinkMtuSet": "mtu", "LinkStateSet": "state", "LinkSysctlSet": "sysctl", "AddressAdd": "address",
    "AddressDelete": "address", "RouteSet": "route", "RouteDelete": "route", "NeighborSet": "neighbor",
    "NeighborDelete": "neighbor",
}
RESULTS = ("ok", "errors", "pending", "failed", "no-config")


def change_kind(change: object) -> str:
    name = type(change).__name__
    return _CHANGE_KIND.get(name, name.lower())


def parse_listen(text: str) -> tuple[str, int]:
    """ADDR:PORT ([v6addr]:PORT for IPv6) -> (addr, port); raises ValueError with a reason."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"{text!r} is not ADDR:PORT (e.g. 127.0.0.1:9821 or [::1]:9821)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} is not between 1 and 65535")
    return host, port


class Metrics:
    """The daemon's metrics in their own registry (never the library's global one)."""

    def __init__(self, file: Path | None = None) -> None:
        self.file = file
        disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created series: they are timestamps by another name
        r = self.registry = CollectorRegistry()
        self.reconciles = Counter("ipvland_reconciles", "Reconciles, by what triggered them and their result",
                                  ["trigger", "result"], registry=r)
        self.duration = Histogram("ipvland_reconcile_duration_seconds", "Duration of a reconcile",
                                  buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120), registry=r)
        self.managed = Gauge("ipvland_managed_objects", "Objects the enforced config declares, by kind",
                             ["kind"], registry=r)
        self.not_converged = Gauge("ipvland_objects_not_converged", "Objects of the last reconcile that are "
                                   "pending (missing parent), in conflict, or failed", ["reason"], registry=r)
        self.repairs = Counter("ipvland_drift_repairs", "Changes that repaired drift (made while the config "
                               "stayed the same), by kind of object", ["kind"], registry=r)
        self.flapping = Gauge("ipvland_flapping_objects", "Objects ipvland keeps rewriting (something else "
                              "changes them back)", registry=r)
        self.generation = Gauge("ipvland_config_generation", "Generation of the config loaded last", registry=r)
        self.valid = Gauge("ipvland_config_valid", "1 when the config files as they are now load without "
                           "error, 0 when not (the last good config stays enforced)", registry=r)
        self.last_converged = Gauge("ipvland_last_converged_timestamp_seconds", "When the last reconcile "
                                    "that converged ended (Unix time; 0: never)", registry=r)
        self.rollbacks = Counter("ipvland_rollbacks", "Rollbacks after a change broke a probe, by whether "
                                 "the previous state was restored", ["restored"], registry=r)
        self.probe_ok = Gauge("ipvland_probe_success", "1 when the probe passed at its last run, 0 when not",
                              ["netns", "target"], registry=r)
        self.probe_runs = Counter("ipvland_probe_runs", "Probe runs, by result", ["result"], registry=r)
        self.info = Info("ipvland", "The running ipvland and the config it enforces", registry=r)
        self.server: Any = None
        self._generation_seen: int | None = None
        for result in RESULTS:  # every series exists from the start: rate() and absent() behave
            for trigger in _TRIGGER_LABEL.values():
                self.reconciles.labels(trigger, result)
        for reason in ("pending", "conflict", "failed"):
            self.not_converged.labels(reason).set(0)
        for restored in ("true", "false"):
            self.rollbacks.labels(restored)
        for result in ("ok", "failed"):
            self.probe_runs.labels(result)
        self.info.info({"version": __version__, "config_sha256": ""})

    # ------------------------------------------------------------------ outputs

    def listen(self, addr: str, port: int) -> None:
        """Serve /metrics over HTTP on a thread of the library; raises OSError (address in use...)."""
        from prometheus_client import start_http_server

        self.server = start_http_server(port, addr=addr, registry=self.registry)

    def stop(self) -> None:
        server = self.server[0] if isinstance(self.server, tuple) else None
        if server is not None:
            server.shutdown()
            server.server_close()
        self.server = None

    def write(self) -> None:
        """The textfile, atomically (the library writes a temp file beside it and renames it)."""
        if self.file is None:
            return
        try:
            write_to_textfile(str(self.file), self.registry)
        except OSError as e:
            log.error("cannot write the metrics file %s: %s", self.file, e)

    # ------------------------------------------------------------------ updates (the loop thread)

    def observe(self, daemon: Any, triggers: Iterable[str], last: dict[str, Any] | None, report: Any) -> None:
        """After one cycle of `daemon`: `last` is the status' view of the reconcile it ran (None: it ran
        none, e.g. a reload deferred), `report` the reconcile's Report (None if it raised)."""
        choice = daemon.choice
        self.generation.set(choice.generation)
        self.valid.set(0 if choice.errors is not None else 1)
        spec = daemon.spec
        self._managed(spec)
        self.flapping.set(len(daemon.flaps.flapping(daemon._clock())))
        self.info.info({"version": __version__, "config_sha256": choice.digest or ""})
        if last is not None:
            result = str(last.get("result", "failed"))
            self.reconciles.labels(self._trigger(triggers), result).inc()
            self.duration.observe(float(last.get("duration") or 0.0))
            self.not_converged.labels("pending").set(len(last.get("pending") or ()))
            self.not_converged.labels("conflict").set(len(last.get("conflicts") or ()))
            self.not_converged.labels("failed").set(len(last.get("errors") or ()))
            if result == "ok":
                self.last_converged.set_to_current_time()
        if report is not None:
            self._report(report, repair=self._generation_seen == choice.generation)
        if last is not None:
            self._generation_seen = choice.generation
        self.write()

    def _trigger(self, triggers: Iterable[str]) -> str:
        present = set(triggers)
        for t in _TRIGGER_ORDER:
            if t in present:
                return _TRIGGER_LABEL[t]
        return "other"

    def _managed(self, spec: Any) -> None:
        counts = {"parent": 0, "device": 0, "address": 0, "route": 0, "neighbor": 0, "netns": 0, "probe": 0}
        if spec is not None:
            counts["parent"] = len(spec.parents)
            counts["netns"] = len(spec.namespaces)
            counts["probe"] = len(spec.probes)
            for p in spec.parents:
                counts["route"] += len(p.routes)
                counts["neighbor"] += len(p.neighbors)
                for d in p.devices:
                    counts["device"] += 1
                    counts["address"] += len(d.addresses)
                    counts["route"] += len(d.routes)
                    counts["neighbor"] += len(d.neighbors)
        for kind, n in counts.items():
            self.managed.labels(kind).set(n)

    def _report(self, report: Any, repair: bool) -> None:
        if repair:
            for outcome in report.outcomes:
                if outcome.ok and not outcome.skipped:
                    self.repairs.labels(change_kind(outcome.change)).inc()
        rollback = getattr(report, "rollback", None)
        if rollback is not None:
            self.rollbacks.labels("true" if rollback.ok else "false").inc()
        for result in getattr(report, "probes", ()):
            self.probe_ok.labels(result.probe.netns or "", str(result.probe.target)).set(1 if result.ok else 0)
            self.probe_runs.labels("ok" if result.ok else "failed").inc()

