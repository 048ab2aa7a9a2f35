"""One reconcile: observe -> plan -> apply -> verify. Shared by `plan`, `apply` and the daemon."""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import yaml

from ipvland import normalize
from ipvland import spec as spec_mod
from ipvland.apply import Outcome, apply
from ipvland.model import Change, Conflict, Observed, Plan, Probe, Spec
from ipvland.observe import observe
from ipvland.plan import plan
from ipvland.probe import ProbeResult, run_probe
from ipvland.show import to_document

if TYPE_CHECKING:
    from ipvland.kernel import Kernel

__all__ = ["Outcome", "Report", "Restored", "change_to_json", "reconcile", "restore", "watched_namespaces"]


def _jsonable(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.name.lower() if isinstance(value.value, int) else value.value
    if isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address, ipaddress.IPv4Interface,
                          ipaddress.IPv6Interface, ipaddress.IPv4Network, ipaddress.IPv6Network)):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    return value


def change_to_json(change: Change) -> dict[str, Any]:
    body: dict[str, Any] = {"op": type(change).__name__, "line": change.describe()}
    body.update(_jsonable(change))
    return body


def conflict_to_json(conflict: Conflict) -> dict[str, str]:
    return {"subject": conflict.subject, "message": conflict.message, "line": conflict.describe()}


def plan_to_json(p: Plan) -> dict[str, Any]:
    return {
        "changes": [change_to_json(c) for c in p.changes],
        "conflicts": [conflict_to_json(c) for c in p.conflicts],
        "pending": [conflict_to_json(c) for c in p.pending],
        "settling": [s.describe() for s in p.settling],
    }


@dataclass(frozen=True)
class Rollback:
    """A change broke a probe that passed before it: the state observed before was restored."""

    broken: tuple[ProbeResult, ...]  # the probes that passed before and failed after
    restore: Report | None  # the reconcile back to the previous state
    error: str | None = None  # why the previous state could not even be planned
    previous: Spec | None = None  # the state restored, as a spec (the daemon keeps enforcing it)
    previous_config: str | None = None  # the same as config text (the daemon keeps it across a restart)

    @property
    def ok(self) -> bool:
        return self.error is None and self.restore is not None and self.restore.ok

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "broken": [p.describe() for p in self.broken], "error": self.error,
                "restore": self.restore.to_json() if self.restore is not None else None}


@dataclass(frozen=True)
class Report:
    plan: Plan
    outcomes: tuple[Outcome, ...]
    remaining: Plan | None  # the plan computed after applying (None for a dry run)
    started: float  # wall clock, seconds since the epoch
    duration: float  # seconds
    probes: tuple[ProbeResult, ...] = ()  # run after an apply that changed something
    rollback: Rollback | None = None

    @property
    def failures(self) -> tuple[Outcome, ...]:
        return tuple(o for o in self.outcomes if not o.ok)

    @property
    def ok(self) -> bool:
        """Converged: nothing failed, nothing is in conflict or waiting, nothing still differs."""
        if self.rollback is not None:
            return False
        final = self.remaining if self.remaining is not None else self.plan
        # plan.conflicts too: one can be gone by the verification (a failed DAD, re-added) and still
        # be this reconcile's error
        return (not self.failures and not final.changes and not final.conflicts and not final.pending
                and not self.plan.conflicts
                and final.needs_full_view is None and all(p.ok for p in self.probes))

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "started": self.started,
            "duration": round(self.duration, 6),
            "plan": plan_to_json(self.plan),
            "outcomes": [{"line": o.change.describe(), "ok": o.ok, "error": o.error, "skipped": o.skipped}
                         for o in self.outcomes],
            "remaining": plan_to_json(self.remaining) if self.remaining is not None else None,
            "probes": [{"line": p.describe(), "ok": p.ok, "target": str(p.probe.target), "netns": p.probe.netns,
                        "tries": p.tries, "rtt_ms": p.rtt_ms, "error": p.error} for p in self.probes],
            "rollback": self.rollback.to_json() if self.rollback is not None else None,
        }


def watched_namespaces(spec: Spec, kernel: Kernel) -> frozenset[str | None]:
    """Where an event can concern us: our own namespace and every named one the spec uses."""
    return frozenset({None, *(spec.namespaces & kernel.list_namespaces())})


def _probes(probes: tuple[Probe, ...], progress: Callable[[], None] | None) -> tuple[ProbeResult, ...]:
    """run_probes, reporting progress between probes (the daemon's watchdog feeder)."""
    results = []
    for p in probes:
        if progress is not None:
            progress()
        results.append(run_probe(p))
    return tuple(results)


def reconcile(spec: Spec, kernel: Kernel, *, dry_run: bool = False,
              rollback_on_probe_failure: bool = False, scope: frozenset[str | None] | None = None,
              progress: Callable[[], None] | None = None,
              before_apply: Callable[[Observed], None] | None = None, ports: bool = False) -> Report:
    """Observe, plan, apply, verify (and probe, and roll back when asked).

    scope: the namespaces where something happened (the daemon's drift events). Only these are read,
    planned and verified, so a repair costs what one namespace costs, not what all of them do. Valid
    only when everything out of scope was converged by the previous reconcile: the daemon passes a
    scope only after one that ended "ok", with the same config. A plan that needs the whole picture
    (Plan.needs_full_view) is made again from a full view before anything is applied.

    before_apply(observed): called with the state observed before (the whole of it when scope is None),
    only when something is about to be applied: `apply --confirm-timeout` keeps it to restore, the
    daemon raises confirm.TryStarted there when a try began meanwhile (nothing is applied then).

    ports: with a scope, read from the start what shows each port's mode (Observed.ports_known):
    the daemon's check of a port an ipvlan joined or left (Daemon.on_port_echo).
    """
    with kernel.one_listing():  # one listing of /run/netns for the observes before and after
        return _reconcile(spec, kernel, dry_run, rollback_on_probe_failure, scope, progress, before_apply, ports)


def _reconcile(spec: Spec, kernel: Kernel, dry_run: bool, rollback_on_probe_failure: bool,
               scope: frozenset[str | None] | None, progress: Callable[[], None] | None,
               before_apply: Callable[[Observed], None] | None, ports: bool = False) -> Report:
    started, t0 = time.time(), time.monotonic()
    watch = rollback_on_probe_failure and bool(spec.probes)
    if watch:
        scope = None  # a rollback restores everything observed before: it needs the whole picture
    ports = ports and scope is not None
    before = observe(kernel, spec, scope, ports=ports)
    planned = plan(spec, before)
    if planned.needs_full_view is not None and scope is not None and not ports:
        # Most often a device re-created alone on its port: the port's mode is then all it needs
        # from elsewhere, and one sibling shows it (Observed.ports_known).
        before = observe(kernel, spec, scope, ports=True)
        planned = plan(spec, before)
    if planned.needs_full_view is not None:
        scope = None
        before = observe(kernel, spec)
        planned = plan(spec, before)
    if dry_run:
        return Report(planned, (), None, started, time.monotonic() - t0)
    if planned.empty:
        return Report(planned, (), planned, started, time.monotonic() - t0)
    if before_apply is not None:
        before_apply(before)
    baseline = _probes(spec.probes, progress) if watch else ()
    outcomes = apply(kernel, planned)
    remaining = plan(spec, observe(kernel, spec, scope))  # verify: what still differs after applying
    probes = _probes(spec.probes, progress)
    rollback = None
    if watch:
        broken = tuple(after for was, after in zip(baseline, probes, strict=True) if was.ok and not after.ok)
        if broken:
            rollback = _roll_back(kernel, before, broken)
    return Report(planned, outcomes, remaining, started, time.monotonic() - t0, probes, rollback)


def state_document(observed: Observed) -> str:
    """What ipvland owns in `observed`, as a config (what `show` prints): a state to restore."""
    return yaml.safe_dump(to_document(observed))


@dataclass(frozen=True)
class Restored:
    """A state restored (a rollback, a try reverted): the state as a spec and the reconcile to it."""

    previous: Spec | None
    report: Report | None
    error: str | None = None  # why the state could not even be planned
    # ip_forward of namespaces the state as a config cannot say (no device of it existed): put back
    # by hand, "~ netns web ipv4.ip_forward 1 -> 0", and the writes that failed, with the reason
    forwarding: tuple[str, ...] = ()
    forwarding_failed: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return (self.error is None and self.report is not None and self.report.ok
                and not self.forwarding_failed)

    def describe(self) -> str:
        if self.error is not None:
            return f"the previous state could not be planned: {self.error}"
        assert self.report is not None
        n = sum(o.ok for o in self.report.outcomes) + len(self.forwarding)
        failed = len(self.report.failures) + len(self.forwarding_failed)
        return f"{n} change(s) to restore the previous state, {failed} failed" + (
            "" if self.ok else ": NOT fully restored")


def restore(kernel: Kernel, document: str, source: str = "<state before apply>",
            ip_forward: Iterable[tuple[str | None, int]] = ()) -> Restored:
    """Reconcile the kernel to a state kept as a config (state_document): what a rollback and a
    reverted try share. `ip_forward`: the namespaces' values observed before (Observed.ip_forward).
    A config says ip_forward on a device, so a namespace that had no device before the change cannot
    be said in `document`; its value is written back here, after the reconcile (a namespace gone
    since is skipped: nothing forwards there any more)."""
    try:
        previous = spec_mod.loads(document, source)
    except spec_mod.SpecError as e:
        return Restored(None, None, "; ".join(str(x) for x in e.errors))
    report = reconcile(previous, kernel)
    said = {d.netns for d in previous.devices if d.ip_forward is not None}
    done: list[str] = []
    failed: list[str] = []
    names = kernel.list_namespaces() if any(ns is not None for ns, _ in ip_forward) else frozenset()
    for netns, value in ip_forward:
        # A path (/proc/PID/ns/net) may mean another namespace by now (a reused pid): only names.
        gone = netns is not None and ("/" in netns or netns not in names)
        if netns in said or gone:
            continue
        where = f" netns {netns}" if netns else ""
        try:
            now = kernel.ip_forward(netns)
            if now is not None and now != value:
                kernel.set_ip_forward(netns, value)
                done.append(f"~{where} {normalize.IP_FORWARD} {now} -> {value}")
        except Exception as e:  # KernelError carries the kernel's reason; one failure never stops the rest
            failed.append(f"{normalize.IP_FORWARD}{where}: {e}")
    return Restored(previous, report, forwarding=tuple(done), forwarding_failed=tuple(failed))


def _roll_back(kernel: Kernel, before: Observed, broken: tuple[ProbeResult, ...]) -> Rollback:
    """Restore what ipvland owned before the change: the observed state, as a spec, reconciled."""
    restored = restore(kernel, state_document(before), ip_forward=before.ip_forward)
    if restored.error is not None:
        return Rollback(broken, None, restored.error)
    return Rollback(broken, restored.report, previous=restored.previous,
                    previous_config=state_document(before))
