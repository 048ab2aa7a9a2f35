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
that was rolled back is remembered by the content hash of the files it was loaded from
(`Spec.files_sha256`, taken from the bytes parsed), so reloading the same files (at every resync,
SIGHUP or file event) does not apply it again.

That memory outlives the daemon: the daemon keeps `record()` in `<state dir>/rolled-back.json`
(RECORD_FILE) and hands it back with `remember()` at start, so a restarted daemon neither applies the
generation that broke the probes again nor forgets the restored state it enforced (kept there as
config text). The state directory is /run/ipvland by default: a reboot forgets it, as it forgets the
network state the record describes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from ipvland.model import Spec


@dataclass(frozen=True)
class RolledBack:
    generation: int
    digest: str  # of the files generation `generation` was loaded from
    at: float  # wall clock
    broken: tuple[str, ...]  # the probes it broke
    restored: bool  # the restore converged
    error: str | None  # why the previous state could not even be planned
    restored_config: str | None = None  # the restored state as config text (YAML), for a restart
    legacy_digest: bool = False  # `digest` is legacy_files_digest's (a record of schema 1): see migrated()


RECORD_FILE = "rolled-back.json"
RECORD_SCHEMA = 2  # 1: written before Spec.files_sha256, its digest is legacy_files_digest's


def legacy_files_digest(paths: Iterable[str]) -> str:
    """The digest records and tries of schema 1 carry (the files read again, path by path). Kept only
    to recognise them after an upgrade: a rollback in force must survive it."""
    h = hashlib.sha256()
    for path in paths:
        h.update(path.encode() + b"\0")
        try:
            h.update(Path(path).read_bytes())
        except OSError as e:
            h.update(f"\0<unreadable: {e.errno}>".encode())
        h.update(b"\0\0")
    return h.hexdigest()


def migrated(rolled_back: RolledBack, spec: Spec) -> RolledBack:
    """A schema-1 rollback whose files are still `spec`'s: refused by `spec.files_sha256` from now on.
    (Files that changed since were never going to match: as before the upgrade, they are new.)"""
    if rolled_back.legacy_digest and legacy_files_digest(spec.sources) == rolled_back.digest:
        return replace(rolled_back, digest=spec.files_sha256, legacy_digest=False)
    return rolled_back


def to_record(rolled_back: RolledBack) -> dict[str, Any]:
    """The JSON object kept in RECORD_FILE."""
    data = {"schema": 1 if rolled_back.legacy_digest else RECORD_SCHEMA, **asdict(rolled_back),
            "broken": list(rolled_back.broken)}
    del data["legacy_digest"]
    return data


def from_record(data: object) -> RolledBack:
    """RECORD_FILE's object back; ValueError when it is not one (then nothing is remembered)."""
    if not isinstance(data, dict) or data.get("schema") not in (1, RECORD_SCHEMA):
        raise ValueError(f"not a rollback record (schema 1 or {RECORD_SCHEMA})")
    try:
        rolled_back = RolledBack(
            int(data["generation"]), str(data["digest"]), float(data["at"]),
            tuple(str(b) for b in data["broken"]), bool(data["restored"]),
            None if data["error"] is None else str(data["error"]),
            None if data.get("restored_config") is None else str(data["restored_config"]),
            legacy_digest=data["schema"] == 1)
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"not a rollback record: {type(e).__name__}: {e}") from None
    if len(rolled_back.digest) != 64:
        raise ValueError("not a rollback record: no SHA-256 of the files")
    return rolled_back


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
        self.remembered = False  # the rollback was recalled from before a restart

    def remember(self, rolled_back: RolledBack, restored: Spec | None) -> None:
        """At start, before any load: a rollback recorded by the daemon before it restarted. Its
        files are refused as they were; the restored state (None: it cannot be loaded) is enforced."""
        self.rolled_back = rolled_back
        self._refused = rolled_back.digest
        self._restored = restored
        self.generation = rolled_back.generation  # the next new one counts on from there
        self.remembered = True

    def redigested(self, rolled_back: RolledBack) -> None:
        """The rollback in force under its migrated digest (`migrated`: a record from before an upgrade)."""
        if self.rolled_back is not None and self._refused == self.rolled_back.digest:
            self._refused = rolled_back.digest
        self.rolled_back = rolled_back

    def record(self) -> dict[str, Any] | None:
        """What must outlive the daemon: the rollback in force (None: none, the file goes)."""
        if self._refused is None or self.rolled_back is None:
            return None
        return to_record(self.rolled_back)

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
        self.remembered = False
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
            self.remembered = False

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
            when = " before the daemon restarted" if self.remembered else ""
            return (f"{what}: generation {g} broke a probe and was rolled back{when}; it is not "
                    f"applied again until its files change")
        if self.good is None:
            return "nothing: no valid config yet"
        if self.errors is not None:
            return f"generation {self.generation}: the config on disk has errors, the last good one is kept"
        return f"generation {self.generation}"
