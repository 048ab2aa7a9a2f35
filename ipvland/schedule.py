"""When the daemon reconciles, and what that reconcile reads: two pure state machines.

Nothing here reads a clock or takes a lock: every method gets `now` (monotonic seconds), and the
daemon calls them under its own lock. So the rules below are unit-tested step by step.

Which trigger leads to which reconcile:

    trigger                       runs                                        reloads  reads         backoff
    start                         at once                                     yes      everything    -
    SIGHUP                        at once                                     yes      everything    ignored
    config file closed / renamed  QUIET after the last one (at most           yes      everything    ignored
      / deleted                   CONFIG_MAX_DELAY after the first)
    netlink events                DEBOUNCE after the last (at most            no       their namespaces (*)  waits
                                  MAX_DELAY after the first)
    resync                        `interval` after the last full reconcile    yes      everything    waits
    retry                         when the backoff ends                       yes      everything    -

    (*) only after a reconcile that converged ("ok"), see `choose_scope`; everything otherwise.

Backoff: a reconcile that did not converge (errors, something still differs, it raised) or that
rewrote an object that flaps (see flaps.py) holds every following reconcile that ipvland could set
off itself (netlink events, its own echoes included, and the resync) until `now + delay`; the delay
doubles each time (BACKOFF_MIN .. the cap) and comes back to BACKOFF_MIN after a reconcile that
converged without rewriting a flapping object. When the hold ends, a retry runs even if nothing
asked. An operator's action (SIGHUP, a config file written) is never held: it is not ipvland's own
doing, so it cannot make a loop.

A reload asked while a config file is still being written (see watch.py) is deferred: `defer_reload`
keeps it until a later config event or the given time, whichever comes first.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

DEBOUNCE = 0.15  # netlink: a burst ends this long after its last event ...
MAX_DELAY = 0.6  # ... or this long after its first one, whichever comes first
QUIET = 0.3  # config files: this long after the last close/rename ...
CONFIG_MAX_DELAY = 3.0  # ... or this long after the first one
BACKOFF_MIN = 1.0
BACKOFF_MAX = 60.0

Ns = str | None


class Trigger(enum.Enum):
    START = "start"
    HUP = "SIGHUP"
    CONFIG = "config file"
    NETLINK = "netlink"
    RESYNC = "resync"
    RETRY = "retry"


@dataclass
class Job:
    """What one reconcile is for."""

    reasons: list[str] = field(default_factory=list)
    triggers: set[Trigger] = field(default_factory=set)
    namespaces: set[Ns] = field(default_factory=set)  # where the netlink events came from
    parents: set[str] = field(default_factory=set)  # links named in events of ipvland's own namespace
    # a parent's unchanged RTM_NEWLINK came (an ipvlan joined or left its port): read each port's mode
    ports: bool = False

    def note(self, reason: str) -> None:
        if len(self.reasons) < 20 and reason not in self.reasons:
            self.reasons.append(reason)

    @property
    def reload(self) -> bool:
        return bool(self.triggers - {Trigger.NETLINK})

    @property
    def hup(self) -> bool:
        return Trigger.HUP in self.triggers

    @property
    def full(self) -> bool:
        """Something other than netlink events asked: read everything."""
        return bool(self.triggers - {Trigger.NETLINK})

    def add(self, trigger: Trigger, reason: str, netns: Ns = None, parents: Iterable[str] = ()) -> None:
        self.triggers.add(trigger)
        self.note(reason)
        if trigger is Trigger.NETLINK:
            self.namespaces.add(netns)
            if netns is None:
                self.parents.update(parents)


class Scheduler:
    def __init__(self, interval: float, now: float, *, debounce: float = DEBOUNCE, max_delay: float = MAX_DELAY,
                 quiet: float = QUIET, config_max_delay: float = CONFIG_MAX_DELAY,
                 backoff_min: float = BACKOFF_MIN, backoff_max: float = BACKOFF_MAX) -> None:
        self.interval = interval
        self.debounce = debounce
        self.max_delay = max_delay
        self.quiet = quiet
        self.config_max_delay = config_max_delay
        self.backoff_min = backoff_min
        # never longer than the resync period: the hold replaces the resync while it lasts
        self.backoff_max = max(backoff_min, min(backoff_max, interval))
        self.delay = backoff_min  # the next hold's length
        self.hold_until: float | None = None  # no held trigger runs before this
        self.hold_why: str | None = None
        self.next_resync = now + interval
        self._job = Job()
        self._first: float | None = None  # netlink burst
        self._last: float | None = None
        self._cfg_first: float | None = None  # config burst
        self._cfg_last: float | None = None
        self._immediate = False  # start, SIGHUP
        self._reload_at: float | None = None  # a deferred reload

    # ---------------------------------------------------------------- input

    def request(self, trigger: Trigger, now: float, *, reason: str | None = None, netns: Ns = None,
                parents: Iterable[str] = ()) -> None:
        self._job.add(trigger, reason or trigger.value, netns, parents)
        self._burst(trigger, now)

    def request_port_check(self, now: float, reason: str) -> None:
        """A netlink job that reads no namespace for itself, only what shows each port's mode: an
        ipvlan joined or left a parent's port, from a namespace that may not be watched (a CNI's)."""
        self._job.triggers.add(Trigger.NETLINK)
        self._job.note(reason)
        self._job.ports = True
        self._burst(Trigger.NETLINK, now)

    def _burst(self, trigger: Trigger, now: float) -> None:
        if trigger is Trigger.NETLINK:
            self._first = now if self._first is None else self._first
            self._last = now
        elif trigger is Trigger.CONFIG:
            self._cfg_first = now if self._cfg_first is None else self._cfg_first
            self._cfg_last = now
            self._reload_at = None  # this event brings the deferred reload with it
        else:  # START, HUP (RESYNC and RETRY come from the timers below)
            self._immediate = True

    def defer_reload(self, until: float, *, hup: bool = False) -> None:
        """The reload of the job just taken must wait (a config file is being written)."""
        if hup:
            self._job.add(Trigger.HUP, Trigger.HUP.value)
        self._job.add(Trigger.CONFIG, "config file (written meanwhile)")
        self._reload_at = until if self._reload_at is None else min(self._reload_at, until)

    # ---------------------------------------------------------------- the timers

    def _held(self, now: float) -> bool:
        return self.hold_until is not None and now < self.hold_until

    def _due(self) -> float:
        """When the pending burst is due (inf: nothing pending)."""
        due = math.inf
        if self._immediate:
            return -math.inf
        if self._first is not None and self._last is not None:
            netlink = min(self._last + self.debounce, self._first + self.max_delay)
            if self.hold_until is not None:
                netlink = max(netlink, self.hold_until)
            due = min(due, netlink)
        if self._cfg_first is not None and self._cfg_last is not None:
            due = min(due, self._cfg_last + self.quiet, self._cfg_first + self.config_max_delay)
        if self._reload_at is not None:
            due = min(due, self._reload_at)
        return due

    def pending(self) -> bool:
        """Something was requested that no job has taken yet."""
        return self._due() != math.inf

    def next_deadline(self) -> float:
        """The next time take() may return a job (if nothing else is requested meanwhile)."""
        resync = self.next_resync if self.hold_until is None else max(self.next_resync, self.hold_until)
        deadlines = [resync, self._due()]
        if self.hold_until is not None:
            deadlines.append(self.hold_until)  # the retry
        return min(deadlines)

    def take(self, now: float) -> Job | None:
        """The job due now, or None."""
        if self.hold_until is not None and now >= self.hold_until:
            self._job.add(Trigger.RETRY, Trigger.RETRY.value)
            self.hold_until = None
            self.hold_why = None
            return self._take()
        if now >= self.next_resync and not self._held(now):
            # Before a due burst: under constant drift one always is, and the resync must still come.
            self._job.add(Trigger.RESYNC, Trigger.RESYNC.value)
            return self._take()
        if now >= self._due():
            return self._take()
        return None

    def _take(self) -> Job:
        job, self._job = self._job, Job()
        self._first = self._last = self._cfg_first = self._cfg_last = self._reload_at = None
        self._immediate = False
        return job

    # ---------------------------------------------------------------- output of a reconcile

    def finished(self, started: float, now: float, *, full: bool, settled: bool, flapping: bool) -> None:
        """A reconcile that started at `started` ended at `now`.

        full: it read everything (restarts the resync timer). settled: it converged, or what is left
        waits for something outside ipvland (a missing parent). flapping: it rewrote an object that
        flaps.
        """
        if full:
            self.next_resync = started + self.interval
        if settled and not flapping:
            self.delay = self.backoff_min
            self.hold_until = None
            self.hold_why = None
            return
        self.hold_until = now + self.delay
        self.hold_why = "an object flaps" if settled else "the last reconcile did not converge"
        self.delay = min(self.delay * 2, self.backoff_max)


def choose_scope(job: Job, *, last_converged: bool,
                 parent_namespaces: Callable[[str], Iterable[Ns]]) -> frozenset[Ns] | None:
    """The namespaces a reconcile reads (None: every one).

    Only a job of netlink events alone, after a reconcile that converged with the same config, is
    scoped: whatever changed elsewhere since would have sent an event of its own. An event in
    ipvland's own namespace that names a parent (its MTU changed, it appeared) also reaches that
    parent's devices in every namespace: a repair does not depend on which namespace the kernel
    reports the consequences in (it copies a parent's MTU to every ipvlan on it).
    """
    if job.full or not last_converged:
        return None
    scope: set[Ns] = set(job.namespaces)
    for parent in job.parents:
        scope.update(parent_namespaces(parent))
    return frozenset(scope)
