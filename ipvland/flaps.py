"""Objects that ipvland rewrites again and again: another agent fights it, or the kernel rewrites it.

Each successful change is recorded under its object's key (the object, not the change: "+ address"
and "- address" of one address are one object; an MTU set is "link X mtu" whatever the values). An
object rewritten COUNT times within WINDOW seconds, with one config generation, flaps: it is
reported by name with how often, and the scheduler backs off (see schedule.py) instead of rewriting
it at event speed. It stops being reported once it has been left alone for FORGET seconds; a new
config generation starts every count afresh (changes it asks for are not a fight).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from ipvland.model import (
    AddressAdd,
    AddressDelete,
    Change,
    LinkCreate,
    LinkDelete,
    LinkMtuSet,
    LinkStateSet,
    NamespaceCreate,
    NeighborDelete,
    NeighborSet,
    PortModeSet,
    Route,
    RouteDelete,
    RouteSet,
)

COUNT = 3
WINDOW = 60.0
FORGET = 600.0


def _where(netns: str | None) -> str:
    return f" netns {netns}" if netns is not None else ""


def object_key(change: Change) -> str:
    """The object a change writes, as a line a person can read."""
    match change:
        case NamespaceCreate(name=name):
            return f"netns {name}"
        case LinkCreate(spec=d):
            return f"link {d.name}{_where(d.netns)}"
        case LinkDelete(netns=ns, name=name):
            return f"link {name}{_where(ns)}"
        case PortModeSet(parent=parent):
            return f"parent {parent} mode"
        case LinkMtuSet(netns=ns, name=name):
            return f"link {name}{_where(ns)} mtu"
        case LinkStateSet(netns=ns, name=name):
            return f"link {name}{_where(ns)} state"
        case AddressAdd(netns=ns, dev=dev, address=a) | AddressDelete(netns=ns, dev=dev, address=a):
            return f"address {a} dev {dev}{_where(ns)}"
        case RouteSet(netns=ns, dev=dev, route=r) | RouteDelete(netns=ns, dev=dev, route=r):
            # the route's identity in the kernel: destination, table, metric (not the gateway)
            return f"route {Route(r.to, None, r.metric, r.table).describe()} dev {dev}{_where(ns)}"
        case NeighborSet(netns=ns, dev=dev, neighbor=n) | NeighborDelete(netns=ns, dev=dev, neighbor=n):
            return f"neighbor {n.address} dev {dev}{_where(ns)}"
    return change.describe()[2:]


@dataclass
class _Track:
    times: deque[float] = field(default_factory=deque)  # rewrites within the window
    flagged: float | None = None  # since when it flaps
    rewrites: int = 0  # since it was first seen rewritten
    last: float = 0.0


class FlapDetector:
    def __init__(self, count: int = COUNT, window: float = WINDOW, forget: float = FORGET) -> None:
        self.count = count
        self.window = window
        self.forget = forget
        self._tracks: dict[str, _Track] = {}

    def reset(self) -> None:
        """A new config generation: what it changes is asked for, not a fight."""
        self._tracks.clear()

    def record(self, keys: Iterable[str], now: float) -> tuple[list[str], list[str]]:
        """Rewrites done by one reconcile. Returns (objects that start flapping now, flapping objects
        rewritten again)."""
        started: list[str] = []
        again: list[str] = []
        for key in dict.fromkeys(keys):
            t = self._tracks.setdefault(key, _Track())
            t.times.append(now)
            while t.times and t.times[0] < now - self.window:
                t.times.popleft()
            t.rewrites += 1
            t.last = now
            if t.flagged is not None:
                again.append(key)
            elif len(t.times) >= self.count:
                t.flagged = now
                started.append(key)
        self._expire(now)
        return started, again

    def _expire(self, now: float) -> None:
        for key in [k for k, t in self._tracks.items() if now - t.last > max(self.forget, self.window)]:
            del self._tracks[key]

    def flapping(self, now: float) -> list[tuple[str, int, float, float]]:
        """(object, rewrites, flapping since, last rewrite) of every object that flaps, by name."""
        self._expire(now)
        return sorted((k, t.rewrites, t.flagged, t.last) for k, t in self._tracks.items() if t.flagged is not None)
