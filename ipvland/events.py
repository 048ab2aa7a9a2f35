"""Netlink event monitoring: "something that matters changed in namespace X, look again".

One NETLINK_ROUTE socket per watched namespace, bound to the link, address, route and neighbor
multicast groups; one thread polls them all. Events are never decoded by pyroute2 (decoding is the
expensive part, see notes/ipvlan-kernel.md): the thread reads the fixed headers with struct and drops
what cannot concern ipvland:

- links: every message counts (one of our devices changed or vanished, a parent appeared, a parent's
  MTU changed and overwrote its slaves' MTU);
- addresses: every message counts (rare, and an address flush on our device is drift);
- routes: only rtm_protocol == RT_PROTO (ours; a deleted route is reported with its protocol), so
  another tool adding a thousand routes costs header parsing only;
- neighbors: only NUD_PERMANENT entries or NDA_PROTOCOL == RT_PROTO; ARP churn is ignored.

Under a flood the thread never spins the daemon: it only calls `on_event` (which sets a flag; the
daemon debounces), and it paces itself (PACE seconds between batches), letting the kernel queue or
drop. A dropped batch (ENOBUFS: the socket's buffer overran) counts as an event: something happened
that we did not see, so the reconcile looks at everything again, which is exactly right.

Namespaces are known by identity, not by name: each socket remembers the device and inode of the
namespace it was opened in, and /run/netns is watched (inotify). When a name vanishes or comes to
mean another namespace (`ip netns del web; ip netns add web`, a container restart), the old socket
is closed at once (it would keep the old namespace alive, with its devices and their addresses on
the parent), a socket is opened in the new one, and the change counts as an event of that namespace.

Link messages also carry the link's name (`on_event(netns, count, names)`): an event in ipvland's
own namespace about a parent (its MTU changed, which the kernel copies to every ipvlan on it; it
appeared) makes the daemon look at that parent's devices everywhere, whatever events the kernel
sends in their namespaces. A link is named only when what the monitor last saw of it changed (new,
deleted, or another name, MTU, flags or MAC: LinkMemory): the kernel also sends an RTM_NEWLINK of
the parent, unchanged, for every ipvlan created on it or deleted (NETDEV_CHANGEUPPER), and that one
must not send a repair to every namespace of the port (the container layout: one per device).

Sockets are opened by entering the namespace on the calling thread (netns.entered: setns, create,
go back; the kernel binds a socket to the namespace it was created in), the same technique as
Kernel._channel. These are separate sockets: they join multicast groups and are read by the
monitor thread, while the Kernel's carry requests and their answers.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator

from ipvland import inotify
from ipvland.model import RT_PROTO
from ipvland.netns import NETNS_DIR, setns

log = logging.getLogger("ipvland.events")

NETLINK_ROUTE = 0
RTMGRP_LINK = 0x1
RTMGRP_NEIGH = 0x4
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV4_ROUTE = 0x40
RTMGRP_IPV6_IFADDR = 0x100
RTMGRP_IPV6_ROUTE = 0x400
GROUPS = (RTMGRP_LINK | RTMGRP_NEIGH | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE
          | RTMGRP_IPV6_IFADDR | RTMGRP_IPV6_ROUTE)

RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
RTM_NEWADDR, RTM_DELADDR = 20, 21
RTM_NEWROUTE, RTM_DELROUTE = 24, 25
RTM_NEWNEIGH, RTM_DELNEIGH = 28, 29
NLMSG_OVERRUN = 4
NUD_PERMANENT = 0x80
NDA_PROTOCOL = 12
IFLA_ADDRESS = 1
IFLA_IFNAME = 3
IFLA_MTU = 4

_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_NDMSG = struct.Struct("=BxxxiHBB")  # family, pad, ifindex, state, flags, type
_IFINFOMSG_SIZE = 16  # family, pad, type, index, flags, change
_IFINFOMSG = struct.Struct("=BxHiII")
_RTATTR = struct.Struct("=HH")
PACE = 0.05  # seconds between two batches of one flood
RCVBUF = 1 << 20

Ns = str | None
Identity = tuple[int, int] | None  # (st_dev, st_ino) of the namespace; None for ipvland's own
_WAKE = object()  # the selector key of the wake-up pipe (None is ipvland's own namespace)
_NETNS_DIR_KEY = object()  # the selector key of the inotify fd on /run/netns
REOPEN = 0.1  # seconds between tries to open a socket in a namespace whose name was just created
REOPEN_FOR = 5.0  # ... for this long (`ip netns add` creates the name, then mounts the namespace on it)


# ---------------------------------------------------------------- message filtering (pure)


def _attrs(buf: bytes | bytearray | memoryview, offset: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(type, value offset, value length) of the rtattrs in buf[offset:end]."""
    while offset + _RTATTR.size <= end:
        length, kind = _RTATTR.unpack_from(buf, offset)
        if length < _RTATTR.size or offset + length > end:
            return
        yield kind & 0x3FFF, offset + _RTATTR.size, length - _RTATTR.size
        offset += (length + 3) & ~3


def relevant(kind: int, buf: bytes | bytearray | memoryview, offset: int, end: int) -> bool:
    """Whether one netlink message (payload buf[offset:end], after the nlmsghdr) can concern ipvland."""
    if kind in (RTM_NEWLINK, RTM_DELLINK, RTM_NEWADDR, RTM_DELADDR):
        return True
    if kind in (RTM_NEWROUTE, RTM_DELROUTE):
        # rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags
        return end - offset >= 6 and buf[offset + 5] == RT_PROTO
    if kind in (RTM_NEWNEIGH, RTM_DELNEIGH):
        if end - offset < _NDMSG.size:
            return False
        _family, _ifindex, state, _flags, _type = _NDMSG.unpack_from(buf, offset)
        if state & NUD_PERMANENT:
            return True
        for attr, value, length in _attrs(buf, offset + _NDMSG.size, end):
            if attr == NDA_PROTOCOL and length >= 1:
                return buf[value] == RT_PROTO
        return False
    return kind == NLMSG_OVERRUN


def link_name(buf: bytes | bytearray | memoryview, offset: int, end: int) -> str | None:
    """IFLA_IFNAME of a link message (payload buf[offset:end])."""
    for attr, value, length in _attrs(buf, offset + _IFINFOMSG_SIZE, end):
        if attr == IFLA_IFNAME:
            return bytes(buf[value:value + length]).split(b"\0", 1)[0].decode(errors="replace")
    return None


# Link attributes that change while nothing anyone set changed: counters (the statistics, the VFs'
# and the carrier's, IPv6's in IFLA_AF_SPEC with its cacheinfo) and the notification's own reason.
# LinkMemory leaves them out of what it compares.
_VOLATILE = frozenset({
    7,  # IFLA_STATS
    22,  # IFLA_VFINFO_LIST (per-VF statistics)
    23,  # IFLA_STATS64
    26,  # IFLA_AF_SPEC (IPv6 statistics and cacheinfo, with its flags and conf)
    35,  # IFLA_CARRIER_CHANGES
    44,  # IFLA_EVENT
    47,  # IFLA_CARRIER_UP_COUNT
    48,  # IFLA_CARRIER_DOWN_COUNT
})


class LinkMemory:
    """What the monitor last saw of each link of one namespace, by ifindex: its (name, MTU, flags,
    MAC), and every other attribute but the _VOLATILE ones.

    `compare(kind, message)` says whether a link message shows anything new at all (a link not
    seen yet, deleted, or any attribute that is not a counter changed) and whether it shows one of
    those four changed (it names the link, see scan). The kernel sends an RTM_NEWLINK of the parent,
    identical, for every ipvlan created on it or deleted (NETDEV_CHANGEUPPER): that one shows
    nothing new, and is no event at all. Forgotten when events were lost (ENOBUFS).
    """

    def __init__(self) -> None:
        # by (family, ifindex): the kernel also sends a link's AF_BRIDGE and AF_INET6 RTM_NEWLINKs,
        # with other attributes, which must not look like changes of its AF_UNSPEC one
        self.links: dict[tuple[int, int], tuple[str | None, int | None, int, bytes | None]] = {}
        self.rest: dict[tuple[int, int], bytes] = {}

    def compare(self, kind: int, buf: bytes | bytearray | memoryview, offset: int, end: int) -> tuple[bool, bool]:
        """(anything new, name/MTU/flags/MAC new); remembers the message."""
        if end - offset < _IFINFOMSG.size:
            return True, True
        family, _type, ifindex, flags, _change = _IFINFOMSG.unpack_from(buf, offset)
        index = (family, ifindex)
        if kind == RTM_DELLINK:
            for key in [k for k in self.links if k[1] == ifindex]:
                self.links.pop(key, None)
                self.rest.pop(key, None)
            return True, True
        name = mtu = mac = None
        rest = bytearray()
        for attr, value, length in _attrs(buf, offset + _IFINFOMSG_SIZE, end):
            if attr == IFLA_IFNAME:
                name = bytes(buf[value:value + length]).split(b"\0", 1)[0].decode(errors="replace")
            elif attr == IFLA_MTU and length >= 4:
                mtu = struct.unpack_from("=I", buf, value)[0]
            elif attr == IFLA_ADDRESS:
                mac = bytes(buf[value:value + length])
            elif attr not in _VOLATILE:
                rest += buf[value - _RTATTR.size:value + length]
        seen, other = (name, mtu, flags, mac), bytes(rest)
        named = self.links.get(index) != seen
        anything = named or self.rest.get(index) != other
        self.links[index], self.rest[index] = seen, other
        return anything, named

    def changed(self, kind: int, buf: bytes | bytearray | memoryview, offset: int, end: int) -> bool:
        """Whether the message names its link (name, MTU, flags or MAC new); remembers it."""
        return self.compare(kind, buf, offset, end)[1]

    def clear(self) -> None:
        self.links.clear()
        self.rest.clear()

    def seed(self, sock: socket.socket) -> None:
        """Learn every link of the socket's namespace from a dump (RTM_GETLINK), so that the first
        unchanged RTM_NEWLINK of a parent after the daemon starts names no one either: unseeded, it
        widened the first repair after a start to every namespace of the port (issue 13's 9.9 s
        repair at 300 namespaces). A link that changes between the dump and its event is in the dump
        already, and the daemon's first reconcile reads everything anyway."""
        self.clear()
        request = _NLMSGHDR.pack(_NLMSGHDR.size + _IFINFOMSG.size, RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, 1, 0)
        sock.send(request + _IFINFOMSG.pack(0, 0, 0, 0, 0))
        buf = bytearray(1 << 16)
        while True:
            n = sock.recv_into(buf)
            for kind, start, end in messages(buf, n):
                if kind in (NLMSG_DONE, NLMSG_ERROR):
                    return
                if kind == RTM_NEWLINK:
                    self.changed(kind, buf, start, end)
            if n < _NLMSGHDR.size:
                return  # nothing more will come (a dump always ends with NLMSG_DONE)


def seeded_memory() -> LinkMemory:
    """A LinkMemory of this thread's namespace that already knows its links (empty if the dump
    fails: the memory then learns from events, as before)."""
    memory = LinkMemory()
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE) as sock:
            sock.settimeout(5.0)
            sock.bind((0, 0))
            memory.seed(sock)
    except OSError as e:
        log.debug("cannot dump this namespace's links for the monitor: %s", e)
        memory.clear()
    return memory


def messages(buf: bytes | bytearray | memoryview, size: int) -> Iterator[tuple[int, int, int]]:
    """(type, payload start, payload end) of each whole netlink message in buf[:size]."""
    offset = 0
    while offset + _NLMSGHDR.size <= size:
        length, kind, _flags, _seq, _pid = _NLMSGHDR.unpack_from(buf, offset)
        if length < _NLMSGHDR.size or offset + length > size:
            return
        yield kind, offset + _NLMSGHDR.size, offset + length
        offset += (length + 3) & ~3


def scan(buf: bytes | bytearray | memoryview, size: int | None = None, names: set[str] | None = None,
         memory: LinkMemory | None = None, echoes: set[str] | None = None) -> int:
    """How many messages in one datagram can concern ipvland; the names of links in link messages
    are added to `names`. With `memory` (the host's links): a link message that shows nothing new
    does not count, and one names its link only when its name, MTU, flags or MAC changed; the names
    of links whose message showed nothing new go to `echoes` (an ipvlan joined or left the port of
    that link, maybe from a namespace ipvland does not watch: the daemon checks the port)."""
    count = 0
    for kind, start, end in messages(buf, len(buf) if size is None else size):
        if not relevant(kind, buf, start, end):
            continue
        named = True
        if memory is not None and kind in (RTM_NEWLINK, RTM_DELLINK):
            anything, named = memory.compare(kind, buf, start, end)
            if not anything:  # the same link as last seen: the parent's NETDEV_CHANGEUPPER echo
                if echoes is not None and (name := link_name(buf, start, end)):
                    echoes.add(name)
                continue
        count += 1
        if names is not None and named and kind in (RTM_NEWLINK, RTM_DELLINK):
            name = link_name(buf, start, end)
            if name:
                names.add(name)
    return count


def count_relevant(buf: bytes | bytearray | memoryview, size: int | None = None) -> int:
    """How many messages in one datagram can concern ipvland."""
    return scan(buf, size)


# ---------------------------------------------------------------- sockets in namespaces

def identity(netns: Ns) -> Identity:
    """The namespace a name means now: (device, inode) of /run/netns/NAME. Raises OSError."""
    if netns is None:
        return None
    st = os.stat(os.path.join(NETNS_DIR, netns))
    return (st.st_dev, st.st_ino)


def open_event_socket(netns: Ns) -> tuple[Identity, socket.socket]:
    """A non-blocking NETLINK_ROUTE socket in `netns`, subscribed to GROUPS, and the identity of the
    namespace it was opened in (read from the very fd entered, so the two always agree)."""
    def make() -> socket.socket:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
            sock.bind((0, GROUPS))
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    if netns is None:
        return None, make()
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(os.path.join(NETNS_DIR, netns), os.O_RDONLY | os.O_CLOEXEC)
        try:
            st = os.fstat(target)
            setns(target)  # EINVAL while `ip netns add` has created the name but not mounted it yet
        finally:
            os.close(target)
        try:
            return (st.st_dev, st.st_ino), make()
        finally:
            setns(home)
    finally:
        os.close(home)


# ---------------------------------------------------------------- /run/netns, watched

_NETNS_MASK = (inotify.IN_CREATE | inotify.IN_DELETE | inotify.IN_MOVED_FROM | inotify.IN_MOVED_TO
               | inotify.IN_DELETE_SELF | inotify.IN_MOVE_SELF)


class _NetnsDirWatch:
    """inotify on /run/netns: a name created, deleted or renamed there. Best effort: without it the
    identities are still checked at every `update()`."""

    def __init__(self) -> None:
        self._inotify = inotify.Inotify()
        self.fd = self._inotify.fd
        self.watching = False

    def arm(self) -> bool:
        """Watch /run/netns if it exists (it may appear later); True when the watch is new."""
        if self.fd < 0 or self.watching:
            return False
        self.watching = self._inotify.add(NETNS_DIR, _NETNS_MASK) >= 0
        return self.watching

    def drain(self) -> bool:
        """Read the queued events; True when any came (the directory itself going away re-arms)."""
        events = self._inotify.read()
        if any(mask & (inotify.IN_DELETE_SELF | inotify.IN_MOVE_SELF | inotify.IN_IGNORED) for _, mask, _ in events):
            self.watching = False
        return bool(events)

    def close(self) -> None:
        self._inotify.close()
        self.fd = -1


# ---------------------------------------------------------------- the monitor


class NetlinkMonitor:
    """Watches a set of namespaces; calls `on_event(netns, count, link_names)` from its thread.

    `update(namespaces)` may be called from any thread (the daemon calls it around each reconcile):
    sockets for new namespaces are opened, those of namespaces no longer wanted are closed, and those
    whose name now means another namespace (or none) are replaced (or closed), which counts as an
    event of that namespace. A namespace that cannot be opened (not created yet) is retried at the
    next update, and for REOPEN_FOR seconds after /run/netns changed.
    """

    def __init__(self, on_event: Callable[[Ns, int, frozenset[str]], None],
                 open_socket: Callable[[Ns], tuple[Identity, socket.socket]] = open_event_socket,
                 identity_of: Callable[[Ns], Identity] = identity, watch_netns_dir: bool = True,
                 on_echo: Callable[[Ns, frozenset[str]], None] | None = None) -> None:
        self.on_event = on_event
        self.on_echo = on_echo  # (netns, names of links whose message showed nothing new): see scan
        self._open = open_socket
        self._identity = identity_of
        self._lock = threading.Lock()  # the socket table
        self._read_lock = threading.Lock()  # one reader of the sockets at a time (thread or flush)
        self._sockets: dict[Ns, tuple[Identity, socket.socket]] = {}
        self._memory: dict[Ns, LinkMemory] = {}  # per socket: see LinkMemory
        self._wanted: set[Ns] = set()
        self._retry_until = 0.0  # monotonic: keep trying to open wanted namespaces until then
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._selector.register(self._wake_r, selectors.EVENT_READ, _WAKE)
        self._netns_dir = _NetnsDirWatch() if watch_netns_dir else None
        if self._netns_dir is not None and self._netns_dir.fd >= 0:
            self._selector.register(self._netns_dir.fd, selectors.EVENT_READ, _NETNS_DIR_KEY)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._buf = bytearray(1 << 16)

    @property
    def namespaces(self) -> frozenset[Ns]:
        with self._lock:
            return frozenset(self._sockets)

    def identities(self) -> dict[Ns, Identity]:
        with self._lock:
            return {ns: ident for ns, (ident, _) in self._sockets.items()}

    def update(self, namespaces: Iterable[Ns], check: Iterable[Ns] | None = None) -> None:
        """Watch these namespaces. check: only these namespaces' identities are checked now (a
        repair's scope: a stat per namespace is a repair's cost at 1000 of them); the others' are
        checked when /run/netns changes (its watch) and at the next update without `check`. None,
        or no watch on /run/netns: every one."""
        with self._lock:
            self._wanted = set(namespaces)
            watched = self._netns_dir is not None and self._netns_dir.watching
            changed = self._sync(None if check is None or not watched else set(check))
        self._wake()
        self._report(changed)

    def _sync(self, check: set[Ns] | None = None) -> list[Ns]:
        """Match the sockets to the wanted namespaces as they are now (lock held). Returns the
        namespaces whose identity changed (their name was deleted, or re-created). check: whose
        identity to check (None: every one's)."""
        if self._netns_dir is not None:
            self._netns_dir.arm()
        changed: list[Ns] = []
        for ns in list(self._sockets):
            if ns not in self._wanted:
                self._close(ns)
                log.debug("stopped monitoring netns %s", ns or "(own)")
                continue
            if check is not None and ns not in check:
                continue
            try:
                now = self._identity(ns)
            except OSError:
                now = (-1, -1)  # the name is gone
            if now != self._sockets[ns][0]:
                self._close(ns)  # at once: it keeps the old namespace, its devices and addresses alive
                changed.append(ns)
                log.info("netns %s was deleted or re-created: its old event socket is closed", ns)
        for ns in sorted(self._wanted - set(self._sockets), key=lambda n: (n is not None, n or "")):
            try:
                ident, sock = self._open(ns)
            except OSError as e:
                log.debug("cannot monitor netns %s yet: %s", ns, e)
                continue
            self._sockets[ns] = (ident, sock)
            if ns is None:  # ipvland's own namespace, where the parents are
                self._memory[ns] = seeded_memory()
            self._selector.register(sock, selectors.EVENT_READ, ns)
            log.debug("monitoring netns %s", ns or "(own)")
            if ns not in changed and time.monotonic() < self._retry_until:
                changed.append(ns)  # it appeared after /run/netns changed: look at it
        return changed

    def _close(self, ns: Ns) -> None:
        _, sock = self._sockets.pop(ns)
        self._memory.pop(ns, None)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(sock)
        with self._read_lock:
            sock.close()

    def _report(self, changed: list[Ns]) -> None:
        for ns in changed:
            try:
                self.on_event(ns, 1, frozenset())
            except Exception:  # the callback must not kill the monitor
                log.exception("netlink event callback failed")

    def flush(self) -> None:
        """Read what is queued now, on the caller's thread: the daemon calls it right after its own
        writes, whose events the kernel queued before acknowledging them."""
        # Only the sockets with something queued: a read of each of 1000 would cost more than
        # the repair it follows (epoll may be asked from two threads; reads take _read_lock).
        # The socket from the selector's own key, not by fd number: one closed and another opened on
        # its number meanwhile (update() in the monitor thread) would be read under the wrong namespace.
        sockets: list[tuple[Ns, socket.socket]]
        try:
            sockets = [(key.data, key.fileobj) for key, _ in self._selector.select(timeout=0)  # type: ignore[misc]
                       if key.data is not _WAKE and key.data is not _NETNS_DIR_KEY]
        except (OSError, ValueError):  # a socket closed under us by update(): read them all
            with self._lock:
                sockets = [(ns, sock) for ns, (_, sock) in self._sockets.items()]
        found: list[tuple[Ns, int, frozenset[str], frozenset[str]]] = []
        with self._read_lock:
            for ns, sock in sockets:
                names: set[str] = set()
                echoes: set[str] = set()
                try:
                    n = self._drain(sock, names, self._memory.setdefault(ns, LinkMemory()), echoes)
                except OSError:
                    continue
                found.append((ns, n, frozenset(names), frozenset(echoes)))
        for ns, n, names_, echoes_ in found:
            self._deliver(ns, n, names_, echoes_)

    def _deliver(self, ns: Ns, count: int, names: frozenset[str], echoes: frozenset[str]) -> None:
        if count:
            self.on_event(ns, count, names)
        if echoes and self.on_echo is not None:
            self.on_echo(ns, echoes)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="ipvland-netlink", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            for _, sock in self._sockets.values():
                sock.close()
            self._sockets.clear()
        self._selector.close()
        if self._netns_dir is not None:
            self._netns_dir.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"x")

    def _drain(self, sock: socket.socket, names: set[str], memory: LinkMemory | None = None,
               echoes: set[str] | None = None) -> int:
        """Read every queued datagram; the number of relevant messages (ENOBUFS counts as one)."""
        count = 0
        for _ in range(256):  # bounded: the pacing sleep comes between two rounds
            try:
                n = sock.recv_into(self._buf)
            except BlockingIOError:
                break
            except OSError as e:
                if e.errno == errno.ENOBUFS:  # overrun: events were lost, so something happened
                    count += 1
                    if memory is not None:
                        memory.clear()  # what it holds may be stale: every link is new again
                    continue
                raise
            if n == 0:
                break
            count += scan(self._buf, n, names, memory, echoes)
        return count

    def _netns_dir_changed(self) -> None:
        """/run/netns changed: check every wanted namespace's identity now, and retry opening the
        missing ones for a while (the name exists before the namespace is mounted on it)."""
        if self._netns_dir is not None:
            self._netns_dir.drain()
        with self._lock:
            self._retry_until = time.monotonic() + REOPEN_FOR
            changed = self._sync()
        self._report(changed)

    def _timeout(self) -> float | None:
        with self._lock:
            missing = bool(self._wanted - set(self._sockets))
            unarmed = self._netns_dir is not None and not self._netns_dir.watching and self._wanted - {None}
        if (missing and time.monotonic() < self._retry_until) or unarmed:
            return REOPEN if missing else 1.0
        return None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                ready = self._selector.select(timeout=self._timeout())
            except (OSError, ValueError):  # a socket closed under us by update(): select again
                continue
            if not ready:  # a retry is due
                with self._lock:
                    changed = self._sync()
                self._report(changed)
                continue
            busy = False
            for key, _mask in ready:
                if key.data is _WAKE:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._wake_r, 4096)
                    continue
                if key.data is _NETNS_DIR_KEY:
                    self._netns_dir_changed()
                    continue
                ns = key.data
                names: set[str] = set()
                echoes: set[str] = set()
                try:
                    with self._read_lock:
                        n = self._drain(key.fileobj, names,  # type: ignore[arg-type]
                                        self._memory.setdefault(ns, LinkMemory()), echoes)
                except OSError as e:
                    if self._stop.is_set():
                        return
                    log.debug("netlink socket of netns %s: %s", ns, e)
                    continue
                busy = True
                try:
                    self._deliver(ns, n, frozenset(names), frozenset(echoes))
                except Exception:  # the callback must not kill the monitor
                    log.exception("netlink event callback failed")
            if busy:
                self._stop.wait(PACE)
