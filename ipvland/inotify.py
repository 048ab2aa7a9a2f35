"""A minimal inotify(7) binding (ctypes): watches on directories, events read without blocking.

watchdog delivers its events through a thread and a delay (it pairs renames); the two users here need
something else: the netlink monitor polls the fd in its own selector (/run/netns), and the config
watcher reads what is queued *now*, on the caller's thread, right before and after reading the
config (the kernel queues an event in the writer's syscall, so nothing that happened before the
read can be missed).
"""

from __future__ import annotations

import ctypes
import os
import struct

IN_MODIFY = 0x2
IN_ATTRIB = 0x4
IN_CLOSE_WRITE = 0x8
IN_MOVED_FROM = 0x40
IN_MOVED_TO = 0x80
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000

_EVENT = struct.Struct("=iIII")  # wd, mask, cookie, len


class Inotify:
    """Best effort: `fd` is -1 when inotify is unavailable, and then nothing is ever reported."""

    def __init__(self) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self.fd: int = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)

    def add(self, path: str, mask: int) -> int:
        """A watch on `path`; its descriptor, or -1 (missing, or no inotify)."""
        if self.fd < 0:
            return -1
        return int(self._libc.inotify_add_watch(self.fd, os.fsencode(path), mask))

    def remove(self, wd: int) -> None:
        if self.fd >= 0 and wd >= 0:
            self._libc.inotify_rm_watch(self.fd, wd)

    def read(self) -> list[tuple[int, int, str]]:
        """Every queued event as (watch, mask, name); [] when none is queued."""
        events: list[tuple[int, int, str]] = []
        while self.fd >= 0:
            try:
                data = os.read(self.fd, 65536)
            except (BlockingIOError, InterruptedError):
                break
            if not data:
                break
            offset = 0
            while offset + _EVENT.size <= len(data):
                wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
                raw = data[offset + _EVENT.size:offset + _EVENT.size + length]
                events.append((wd, mask, os.fsdecode(raw.split(b"\0", 1)[0])))
                offset += _EVENT.size + length
        return events

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
