"""The systemd watchdog feeder: WATCHDOG=1 while the main loop makes progress, and only then.

The main loop reports progress (`alive(now)`): each time it wakes while idle, and during a reconcile
at every netlink request and between probes. A thread pings every `interval` (half of
$WATCHDOG_USEC) as long as the last progress is at most `stall` old; a loop stuck for longer stops
the pings, and systemd kills it `timeout` later. So a long reconcile (a thousand devices, a probe
with many tries) is not killed, and a truly stuck one still is, within stall + timeout.

`probe_budget` bounds the time one round of probes may take without a progress report in between,
and `clamp_probes` makes a config's probes fit it, with a message.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Callable

from ipvland.model import Probe, Spec


class Feeder:
    """The decision, with an injectable clock: `due(now)` says whether to ping now."""

    def __init__(self, timeout: float, now: float) -> None:
        self.timeout = timeout  # $WATCHDOG_USEC in seconds
        self.interval = timeout / 2
        self.stall = timeout  # the longest a single step may take without a progress report
        self.last_progress = now
        self.next_ping = now

    def alive(self, now: float) -> None:
        self.last_progress = max(self.last_progress, now)

    def due(self, now: float) -> bool:
        """Whether to ping now (and advance the ping timer if so)."""
        if now < self.next_ping or now - self.last_progress > self.stall:
            return False
        self.next_ping = now + self.interval
        return True


class FeederThread:
    def __init__(self, feeder: Feeder, notify: Callable[..., bool],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.feeder = feeder
        self._notify = notify
        self._clock = clock
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ipvland-watchdog", daemon=True)

    def alive(self) -> None:
        with self._lock:
            self.feeder.alive(self._clock())

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                ping = self.feeder.due(self._clock())
            if ping:
                self._notify("WATCHDOG=1")
            self._stop.wait(self.feeder.interval / 2)


def probe_budget(probes: tuple[Probe, ...]) -> float:
    return sum(p.tries * p.timeout for p in probes)


def clamp_probes(spec: Spec, budget: float) -> tuple[Spec, str | None]:
    """Probes whose tries x timeout add up to more than `budget` seconds, made to fit: fewer tries
    first (at least one each), then shorter timeouts. Returns the spec and a message (None: unchanged)."""
    total = probe_budget(spec.probes)
    if total <= budget or not spec.probes:
        return spec, None
    scale = budget / total
    probes = tuple(dataclasses.replace(p, tries=max(1, math.floor(p.tries * scale))) for p in spec.probes)
    over = probe_budget(probes)
    if over > budget:
        probes = tuple(dataclasses.replace(p, timeout=p.timeout * budget / over) for p in probes)
    message = (f"probes: tries x timeout add up to {total:g}s, more than the systemd watchdog's "
               f"{budget:g}s; clamped to " + ", ".join(f"{p.tries} x {p.timeout:.3g}s" for p in probes))
    return dataclasses.replace(spec, probes=probes), message
