"""Which config the daemon enforces, and why: a small state machine with no I/O.

    state            enforced                         how it is left
    none             nothing (no valid config yet)    a config loads
    generation N     the last config that loaded      another one loads (N+1); its probes break
                     (also while the files on disk     (with --rollback-on-probe-failure) -> rolled back
                     have errors: `errors` says so)
    rolled back N    the state observed before N      files whose content differs from N's load
                     was applied (nothing if that      (a new generation)
                     could not be planned)

Rollback belongs to config generations: only the first reconcile of a new generation (`trial`) runs
the baseline probes and may roll back; every later one is a repair, which never does. A generation
that was rolled back is remembered by the content hash of the files it was loaded from, so reloading
the same files (at every resync, SIGHUP or file event) does not apply it again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ipvland.model import Spec


def digest(paths: Iterable[str]) -> str:
    """The content hash of the files a config was loaded from (a missing one counts as missing)."""
    h = hashlib.sha256()
    for path in paths:
        h.update(path.encode() + b"\0")
        try:
            h.update(Path(path).read_bytes())
        except OSError as e:
            h.update(f"\0<unreadable: {e.errno}>".encode())
        h.update(b"\0\0")
    return h.hexdigest()


@dataclass(frozen=True)
class RolledBack:
    generation: int
    digest: str  # of the files generation `generation` was loaded from
    at: float  # wall clock
    broken: tuple[str, ...]  # the probes it broke
    restored: bool  # the restore converged
    error: str | None  # why the previous state could not even be planned


class ConfigChoice:
    def __init__(self) -> None:
        self.good: Spec | None = None  # the last config that loaded
        self.digest: str | None = None
        self.generation = 0
        self.loaded_at: float | None = None
        self.trial = False  # `good` has not been through a reconcile yet
        self.rolled_back: RolledBack | None = None  # the last rollback, for the status
        self._restored: Spec | None = None  # enforced instead of `good` after a rollback
        self._refused: str | None = None  # the digest that is not applied again
        self.errors: list[str] | None = None  # the config on disk does not load
        self.error_since: float | None = None

    # ---------------------------------------------------------------- input

    def loaded(self, spec: Spec, files_digest: str, now: float) -> str:
        """A config loaded: "new" (a new generation), "same", or "refused" (the files of a
        generation that was rolled back: it is not applied again)."""
        self.errors = None
        self.error_since = None
        if files_digest == self._refused:
            return "refused"
        if self._refused is None and spec == self.good:
            self.digest = files_digest  # a comment changed, say: the same config
            return "same"
        self.good = spec
        self.digest = files_digest
        self.generation += 1
        self.loaded_at = now
        self.trial = True
        self._restored = None
        self._refused = None
        return "new"

    def failed(self, errors: list[str], now: float) -> bool:
        """The config does not load; the enforced one stays. True when these errors are new."""
        new = errors != self.errors
        if new:
            self.error_since = now
        self.errors = errors
        return new

    def reconciled(self, rolled_back: RolledBack | None, restored: Spec | None) -> None:
        """A reconcile of the enforced config returned (it did not raise)."""
        self.trial = False
        if rolled_back is not None:
            self.rolled_back = rolled_back
            self._refused = rolled_back.digest
            self._restored = restored

    # ---------------------------------------------------------------- output

    @property
    def is_rolled_back(self) -> bool:
        return self._refused is not None

    @property
    def enforced(self) -> Spec | None:
        if self._refused is not None:
            return self._restored  # None when the state before could not be planned: hands off
        return self.good

    @property
    def rollback_allowed(self) -> bool:
        """Whether the next reconcile may run the baseline probes and roll back: a new generation's first."""
        return self.trial and self._refused is None

    @property
    def reason(self) -> str:
        if self._refused is not None and self.rolled_back is not None:
            g = self.rolled_back.generation
            what = (f"the state before generation {g}" if self._restored is not None
                    else "nothing (the state before it could not be restored)")
            return (f"{what}: generation {g} broke a probe and was rolled back; it is not applied "
                    f"again until its files change")
        if self.good is None:
            return "nothing: no valid config yet"
        if self.errors is not None:
            return f"generation {self.generation}: the config on disk has errors, the last good one is kept"
        return f"generation {self.generation}"
