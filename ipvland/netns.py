"""Entering a named network namespace on the calling thread, and coming back.

setns(2) changes only the calling thread, so a socket opened inside `entered(name)` stays bound to
that namespace while the thread goes home: no helper process per namespace. (os.setns exists
only from Python 3.12 on, hence ctypes.)
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager

NETNS_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def setns(fd: int, nstype: int = CLONE_NEWNET) -> None:
    if _libc.setns(fd, nstype) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@contextmanager
def entered(name: str | None) -> Iterator[None]:
    """Run the block in namespace `name` (None: stay where we are)."""
    if name is None:
        yield
        return
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        try:
            target = os.open(os.path.join(NETNS_DIR, name), os.O_RDONLY)
        except FileNotFoundError:
            raise OSError(errno.ENOENT, f"network namespace {name} does not exist") from None
        try:
            setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            setns(home)
    finally:
        os.close(home)
