"""Watch the config files (main file + config.d/) with watchdog, robustly.

Watches are on DIRECTORIES, never on the files: an editor's save-by-rename, a sync tool's temp file
+ rename and a Kubernetes ConfigMap's `..data` symlink swap all replace the file (a new inode), so a
watch on the old file would go silent. In the main file's directory only the names that can change
what the loader reads count: the file itself, `config.d`, and the `..`-prefixed names of a ConfigMap
volume. In config.d every entry counts (the loader decides which files it reads).

A watched directory can be removed and re-created. Its parent is watched too, so that its
(re)appearance is an event; `rearm()` then (re)schedules the watches whose directory appeared, vanished
or was replaced (a new inode). The daemon calls `rearm()` before every reload, in its own thread, and
then reads the files: a change made before the new watch exists is read by that load, a change made
after it is an event. Nothing is lost, which is all a level-triggered reconcile needs.

Events only say "look again"; the daemon debounces them and re-reads everything.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

from watchdog.events import (
    EVENT_TYPE_ATTRIB,
    EVENT_TYPE_CLOSED,
    EVENT_TYPE_CREATED,
    EVENT_TYPE_DELETED,
    EVENT_TYPE_MODIFIED,
    EVENT_TYPE_MOVED,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

log = logging.getLogger("ipvland.watch")

DROPIN_DIR = "config.d"

# Reads (opened, closed_no_write) are ignored: the daemon's own load would otherwise wake it up again.
_CHANGES = frozenset({EVENT_TYPE_CREATED, EVENT_TYPE_DELETED, EVENT_TYPE_MODIFIED, EVENT_TYPE_MOVED,
                      EVENT_TYPE_CLOSED, EVENT_TYPE_ATTRIB})


def dropin_dir(config: Path) -> Path:
    return config.parent / DROPIN_DIR


class ConfigWatcher(FileSystemEventHandler):
    """Calls `on_change(description)` (from watchdog's thread) when the config may have changed."""

    def __init__(self, config: Path, on_change: Callable[[str], None]) -> None:
        super().__init__()
        self.config = Path(os.path.abspath(config))
        self.main_dir = self.config.parent
        self.dropin_dir = dropin_dir(self.config)
        self.on_change = on_change
        self._observer: Observer | None = None  # type: ignore[valid-type]
        self._lock = threading.Lock()
        self._watches: dict[Path, tuple[tuple[int, int], object]] = {}  # dir -> ((dev, ino), watch)

    # -------------------------------------------------------------- the watches

    def _wanted(self) -> list[Path]:
        """The directories to watch: both targets and their parents (to see the targets come back)."""
        dirs = [self.main_dir, self.dropin_dir, self.main_dir.parent]
        return list(dict.fromkeys(dirs))

    def start(self) -> None:
        observer = Observer()
        observer.daemon = True
        observer.start()
        self._observer = observer
        self.rearm()

    def stop(self) -> None:
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            observer.join(timeout=5)
        self._watches.clear()

    def watched(self) -> list[Path]:
        with self._lock:
            return sorted(self._watches)

    def rearm(self) -> bool:
        """(Re)schedule watches to match which directories exist now. True when anything changed."""
        observer = self._observer
        if observer is None:
            return False
        changed = False
        with self._lock:
            for d in self._wanted():
                try:
                    st = os.stat(d)
                    ident: tuple[int, int] | None = (st.st_dev, st.st_ino) if os.path.isdir(d) else None
                except OSError:
                    ident = None
                old = self._watches.get(d)
                if old is not None and old[0] == ident:
                    continue
                if old is not None:
                    with contextlib.suppress(KeyError, OSError):
                        observer.unschedule(old[1])
                    del self._watches[d]
                    changed = True
                    log.debug("stopped watching %s", d)
                if ident is not None:
                    try:
                        watch = observer.schedule(self, str(d), recursive=False)
                    except OSError as e:  # vanished again, or no permission: next rearm retries
                        log.warning("cannot watch %s: %s", d, e)
                        continue
                    self._watches[d] = (ident, watch)
                    changed = True
                    log.debug("watching %s", d)
        return changed

    # -------------------------------------------------------------- the events

    def relevant(self, path: str) -> bool:
        p = Path(path)
        if p in (self.main_dir, self.dropin_dir):
            return True
        if p.parent == self.dropin_dir:
            return True
        if p.parent == self.main_dir:
            return p.name in (self.config.name, DROPIN_DIR) or p.name.startswith("..")
        return False

    def dispatch(self, event: FileSystemEvent) -> None:
        if event.event_type not in _CHANGES:
            return
        paths = [os.fsdecode(event.src_path)]
        if event.dest_path:
            paths.append(os.fsdecode(event.dest_path))
        hits = [p for p in paths if self.relevant(p)]
        if not hits:
            return
        # A directory modified event for main_dir itself comes with every child change, relevant or not.
        if event.is_directory and event.event_type == EVENT_TYPE_MODIFIED and hits == [str(self.main_dir)]:
            return
        self.on_change(f"{event.event_type} {hits[-1]}")
