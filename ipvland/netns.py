"""Named network namespaces: entering one on the calling thread (and coming back), and making one.

setns(2) changes only the calling thread, so a socket opened inside `entered(name)` stays bound to
that namespace while the thread goes home: no helper process per namespace. (os.setns exists
only from Python 3.12 on, hence ctypes.)

This module uses the standard library alone: kernel.create_namespace runs mount_new_namespace in a
short-lived child in the host's mount namespace, and that child must start fast.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import stat
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

NETNS_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000
CLONE_NEWNS = 0x00020000
_MS_BIND = 4096
_MS_REC = 16384
_MS_SHARED = 1 << 20
STALE_AFTER = 5.0  # seconds: an empty file under /run/netns older than this is a lost mount, not a create

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


def enter_mount_namespace(path: str) -> None:
    """Move this (single-threaded) process into the mount namespace at `path`, e.g. /proc/1/ns/mnt.

    The kernel refuses setns(CLONE_NEWNS) to a multi-threaded process, and moves the caller's root and
    working directory to the namespace's root: after this, paths are the host's.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        setns(fd, CLONE_NEWNS)
    finally:
        os.close(fd)
    os.chdir("/")


def create_in_mount_namespace(host: str, name: str) -> None:
    """The child of kernel.create_namespace: enter `host`, then mount_new_namespace(name) there.

    Python and this module are loaded BEFORE entering, from the caller's own file system: in a
    container (a DaemonSet pod) the host has neither the image's Python nor ipvland.
    """
    enter_mount_namespace(host)
    mount_new_namespace(name)


def is_namespace(path: str) -> bool:
    """Is `path` a mounted network namespace (an nsfs inode), not the empty file under it?

    A name whose mount is gone (a namespace made in a sandbox, a lost /run) is an empty mode-0 file:
    opening it needs CAP_DAC_OVERRIDE, and it is no namespace. All nsfs inodes share one device.
    """
    try:
        return os.stat(path).st_dev == os.stat("/proc/self/ns/net").st_dev
    except OSError:
        return False


def _fail(what: str) -> OSError:
    err = ctypes.get_errno()
    return OSError(err, f"{what}: {os.strerror(err)}")


def mount_new_namespace(name: str) -> None:
    """Like `ip netns add NAME` in this mount namespace: a new netns bind-mounted on /run/netns/NAME.

    Raises OSError (EEXIST when NAME already is a namespace). An empty file left where a namespace's
    mount is gone is mounted over, not refused: it is no namespace, and nothing else could use the name.
    """
    path = os.path.join(NETNS_DIR, name)
    if not os.path.isdir(NETNS_DIR):
        os.makedirs(NETNS_DIR, exist_ok=True)
        os.chmod(NETNS_DIR, 0o755)  # as iproute2 makes it, whatever the unit's UMask=0077
    # As iproute2 does: make /run/netns a shared mount point so the bind mounts propagate to other
    # mount namespaces (e.g. `ip netns exec` of another process, a sandboxed daemon's).
    if _libc.mount(b"", NETNS_DIR.encode(), b"none", _MS_SHARED | _MS_REC, None) != 0:
        if _libc.mount(NETNS_DIR.encode(), NETNS_DIR.encode(), b"none", _MS_BIND | _MS_REC, None) != 0:
            raise _fail(f"mount {NETNS_DIR}")
        _libc.mount(b"", NETNS_DIR.encode(), b"none", _MS_SHARED | _MS_REC, None)
    if is_namespace(path):
        raise OSError(errno.EEXIST, os.strerror(errno.EEXIST))
    made = False
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
        made = True
    except FileExistsError:
        # An empty file whose mount is gone: mount over it, once it is old enough not to be another
        # tool's `ip netns add` between its create and its mount (two stacked mounts would leak one).
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_size or time.time() - st.st_ctime < STALE_AFTER:
            raise OSError(errno.EEXIST, f"{path} exists and is not (yet) a namespace: left alone") from None
    failure: list[OSError] = []

    def unshare_and_bind() -> None:
        # unshare() moves this thread alone; the thread ends and the mount keeps the netns alive.
        if _libc.unshare(CLONE_NEWNET) != 0:
            failure.append(_fail("unshare"))
        elif _libc.mount(b"/proc/thread-self/ns/net", path.encode(), b"none", _MS_BIND, None) != 0:
            failure.append(_fail(f"mount {path}"))

    t = threading.Thread(target=unshare_and_bind, name=f"netns-{name}")
    t.start()
    t.join()
    if failure:
        if made:
            os.unlink(path)
        raise failure[0]
