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

A config is read only once it is complete. A file written in place (a shell redirect, scp, an
editor without save-by-rename) is only an event when it is closed (IN_CLOSE_WRITE). Its IN_MODIFYs
(the truncation of open(O_TRUNC) is one) mark it as being written until it is closed, renamed away
or deleted. They are read on a second inotify fd of our own, synchronously, by `writing()` and
`marker()`: the kernel queues an event inside the writer's syscall, so what happened before the
call is known to it, with none of watchdog's delivery delay. The daemon calls `writing()` before
every reload (a resync's, SIGHUP's) and defers it while a file is being written, and compares
`marker()` before and after reading, throwing away a read that a write overlapped. A writer that
keeps a file open without writing for more than WRITE_STALL_MAX seconds is given up on: the file
is read as it is then (and the log says so). A rename into place (IN_MOVED_TO), a deletion and a
directory change are events at once.

A config.d that is a symlink to another directory is watched at its target (inotify does not follow
a symlink to a directory's contents); re-pointing the symlink is an event in the main directory.

Events only say "look again"; the daemon debounces them and re-reads everything.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
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

from ipvland import inotify

log = logging.getLogger("ipvland.watch")

DROPIN_DIR = "config.d"

WRITE_STALL_MAX = 120.0  # seconds without a write after which an open file is read as it is
_WRITE_MASK = inotify.IN_MODIFY | inotify.IN_CLOSE_WRITE | inotify.IN_MOVED_FROM | inotify.IN_DELETE

# Reads (opened, closed_no_write) are ignored: the daemon's own load would otherwise wake it up again.
# A file's MODIFIED only marks it as being written; its CLOSED (after a write) is the event.
_CHANGES = frozenset({EVENT_TYPE_CREATED, EVENT_TYPE_DELETED, EVENT_TYPE_MODIFIED, EVENT_TYPE_MOVED,
                      EVENT_TYPE_CLOSED, EVENT_TYPE_ATTRIB})


def dropin_dir(config: Path) -> Path:
    return config.parent / DROPIN_DIR


class ConfigWatcher(FileSystemEventHandler):
    """Calls `on_change(description)` (from watchdog's thread) when the config may have changed."""

    def __init__(self, config: Path, on_change: Callable[[str], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.config = Path(os.path.abspath(config))
        self.main_dir = self.config.parent
        self.dropin_dir = dropin_dir(self.config)
        self.dropin_real = self.dropin_dir  # where config.d's files really are (its symlink's target)
        self.on_change = on_change
        self._clock = clock
        self._observer: Observer | None = None  # type: ignore[valid-type]
        self._lock = threading.Lock()
        self._watches: dict[Path, tuple[tuple[int, int], object, int]] = {}  # dir -> ((dev, ino), watch, wd)
        self._writes = inotify.Inotify()  # IN_MODIFY & co., read synchronously (see the module doc)
        self._wds: dict[int, Path] = {}
        self._writing: dict[str, float] = {}  # file -> when it was last seen modified, until it is closed
        self._modifications = 0

    # -------------------------------------------------------------- the watches

    def _wanted(self) -> list[Path]:
        """The directories to watch: both targets and their parents (to see the targets come back);
        for a config.d that is a symlink, its target (and the target's parent)."""
        real = Path(os.path.realpath(self.dropin_dir))
        self.dropin_real = real
        dirs = [self.main_dir, self.dropin_dir, self.main_dir.parent]
        if real != self.dropin_dir:
            dirs = [self.main_dir, real, self.main_dir.parent, real.parent]
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
        self._writes.close()

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
            wanted = self._wanted()
            for d in [d for d in self._watches if d not in wanted]:
                self._unwatch(observer, d)
                changed = True
            for d in wanted:
                try:
                    st = os.stat(d)
                    ident: tuple[int, int] | None = (st.st_dev, st.st_ino) if os.path.isdir(d) else None
                except OSError:
                    ident = None
                old = self._watches.get(d)
                if old is not None and old[0] == ident:
                    continue
                if old is not None:
                    self._unwatch(observer, d)
                    changed = True
                if ident is not None:
                    try:
                        watch = observer.schedule(self, str(d), recursive=False)
                    except OSError as e:  # vanished again, or no permission: next rearm retries
                        log.warning("cannot watch %s: %s", d, e)
                        continue
                    wd = self._writes.add(str(d), _WRITE_MASK)
                    self._wds[wd] = d
                    self._watches[d] = (ident, watch, wd)
                    changed = True
                    log.debug("watching %s", d)
        return changed

    def _unwatch(self, observer: Observer, d: Path) -> None:  # type: ignore[valid-type]
        _, watch, wd = self._watches.pop(d)
        with contextlib.suppress(KeyError, OSError):
            observer.unschedule(watch)  # type: ignore[attr-defined]
        self._writes.remove(wd)
        self._wds.pop(wd, None)
        for path in [p for p in self._writing if Path(p).parent == d]:
            del self._writing[path]  # its close can no longer be seen
        log.debug("stopped watching %s", d)

    # -------------------------------------------------------------- the events

    def relevant(self, path: str) -> bool:
        p = Path(path)
        if p in (self.main_dir, self.dropin_dir, self.dropin_real):
            return True
        if p.parent in (self.dropin_dir, self.dropin_real):
            return True
        if p.parent == self.main_dir:
            return p.name in (self.config.name, DROPIN_DIR) or p.name.startswith("..")
        return False

    def _read_writes(self) -> None:
        """Take in the queued IN_MODIFY & co. (lock held)."""
        now = self._clock()
        for wd, mask, name in self._writes.read():
            if mask & inotify.IN_Q_OVERFLOW:
                self._modifications += 1  # unknown: whatever was read meanwhile is suspect
                continue
            d = self._wds.get(wd)
            if d is None or not name:
                continue
            path = str(d / name)
            if not self.relevant(path):
                continue
            if mask & inotify.IN_MODIFY:
                self._writing[path] = now
                self._modifications += 1
            elif mask & (inotify.IN_CLOSE_WRITE | inotify.IN_MOVED_FROM | inotify.IN_DELETE):
                self._writing.pop(path, None)

    def marker(self) -> int:
        """How many modifications were seen so far: equal before and after a read, no write overlapped it."""
        with self._lock:
            self._read_writes()
            return self._modifications

    def writing(self) -> tuple[str, float] | None:
        """A config file being written (modified, not closed yet) and until when reads wait for it
        (monotonic); None when every file is complete."""
        with self._lock:
            self._read_writes()
            if not self._writing:
                return None
            path, last = max(self._writing.items(), key=lambda kv: kv[1])
            until = last + WRITE_STALL_MAX
            if self._clock() >= until:
                log.warning("config: %s has been open for writing without a write for %.0fs: reading it as it is",
                            path, WRITE_STALL_MAX)
                self._writing.clear()
                return None
            return path, until

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
        if event.is_directory and event.event_type == EVENT_TYPE_MODIFIED:
            return
        if not event.is_directory:
            if event.event_type == EVENT_TYPE_MODIFIED:
                return  # being written (see writing()): an event once closed
            if event.event_type == EVENT_TYPE_CREATED and not os.path.islink(hits[-1]):
                return  # a new file is an event once closed (or renamed into place)
        self.on_change(f"{event.event_type} {hits[-1]}")
