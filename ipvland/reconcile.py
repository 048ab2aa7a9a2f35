"""One reconcile: observe -> plan -> apply -> verify. Shared by `plan`, `apply` and the daemon."""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ipvland.apply import Outcome, apply
from ipvland.model import Change, Conflict, Plan, Spec
from ipvland.observe import observe
from ipvland.plan import plan

if TYPE_CHECKING:
    from ipvland.kernel import Kernel

__all__ = ["Outcome", "Report", "change_to_json", "reconcile", "watched_namespaces"]


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
    }


@dataclass(frozen=True)
class Report:
    plan: Plan
    outcomes: tuple[Outcome, ...]
    remaining: Plan | None  # the plan computed after applying (None for a dry run)
    started: float  # wall clock, seconds since the epoch
    duration: float  # seconds

    @property
    def failures(self) -> tuple[Outcome, ...]:
        return tuple(o for o in self.outcomes if not o.ok)

    @property
    def ok(self) -> bool:
        """Converged: nothing failed, nothing is in conflict or waiting, nothing still differs."""
        final = self.remaining if self.remaining is not None else self.plan
        return not self.failures and not final.changes and not final.conflicts and not final.pending

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "started": self.started,
            "duration": round(self.duration, 6),
            "plan": plan_to_json(self.plan),
            "outcomes": [{"line": o.change.describe(), "ok": o.ok, "error": o.error, "skipped": o.skipped}
                         for o in self.outcomes],
            "remaining": plan_to_json(self.remaining) if self.remaining is not None else None,
        }


def watched_namespaces(spec: Spec, kernel: Kernel) -> frozenset[str | None]:
    """Where an event can concern us: our own namespace and every named one the spec uses."""
    return frozenset({None, *(spec.namespaces & kernel.list_namespaces())})


def reconcile(spec: Spec, kernel: Kernel, *, dry_run: bool = False) -> Report:
    started, t0 = time.time(), time.monotonic()
    planned = plan(spec, observe(kernel, spec))
    if dry_run:
        return Report(planned, (), None, started, time.monotonic() - t0)
    if planned.empty:
        return Report(planned, (), planned, started, time.monotonic() - t0)
    outcomes = apply(kernel, planned)
    remaining = plan(spec, observe(kernel, spec))  # verify: what still differs after applying
    return Report(planned, outcomes, remaining, started, time.monotonic() - t0)
