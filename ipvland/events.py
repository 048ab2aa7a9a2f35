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
from collections.abc import Callable, Iterable, Iterator

from ipvland.model import RT_PROTO
from ipvland.netns import entered

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

RTM_NEWLINK, RTM_DELLINK = 16, 17
RTM_NEWADDR, RTM_DELADDR = 20, 21
RTM_NEWROUTE, RTM_DELROUTE = 24, 25
RTM_NEWNEIGH, RTM_DELNEIGH = 28, 29
NLMSG_OVERRUN = 4
NUD_PERMANENT = 0x80
NDA_PROTOCOL = 12

_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_NDMSG = struct.Struct("=BxxxiHBB")  # family, pad, ifindex, state, flags, type
_RTATTR = struct.Struct("=HH")
PACE = 0.05  # seconds between two batches of one flood
RCVBUF = 1 << 20

Ns = str | None
_WAKE = object()  # the selector key of the wake-up pipe (None is ipvland's own namespace)


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


def count_relevant(buf: bytes | bytearray | memoryview, size: int | None = None) -> int:
    """How many messages in one datagram can concern ipvland."""
    end = len(buf) if size is None else size
    offset = count = 0
    while offset + _NLMSGHDR.size <= end:
        length, kind, _flags, _seq, _pid = _NLMSGHDR.unpack_from(buf, offset)
        if length < _NLMSGHDR.size or offset + length > end:
            break
        if relevant(kind, buf, offset + _NLMSGHDR.size, offset + length):
            count += 1
        offset += (length + 3) & ~3
    return count


# ---------------------------------------------------------------- sockets in namespaces

def open_event_socket(netns: Ns) -> socket.socket:
    """A non-blocking NETLINK_ROUTE socket in `netns`, subscribed to GROUPS."""
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

    with entered(netns):
        return make()


# ---------------------------------------------------------------- the monitor


class NetlinkMonitor:
    """Watches a set of namespaces; calls `on_event(netns, count)` from its thread.

    `update(namespaces)` may be called from any thread (the daemon calls it after each reconcile):
    sockets for new namespaces are opened, those of namespaces no longer wanted are closed. A
    namespace that cannot be opened (not created yet) is retried at the next update.
    """

    def __init__(self, on_event: Callable[[Ns, int], None],
                 open_socket: Callable[[Ns], socket.socket] = open_event_socket) -> None:
        self.on_event = on_event
        self._open = open_socket
        self._lock = threading.Lock()
        self._sockets: dict[Ns, socket.socket] = {}
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._selector.register(self._wake_r, selectors.EVENT_READ, _WAKE)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._buf = bytearray(1 << 16)

    @property
    def namespaces(self) -> frozenset[Ns]:
        with self._lock:
            return frozenset(self._sockets)

    def update(self, namespaces: Iterable[Ns]) -> None:
        wanted = set(namespaces)
        with self._lock:
            for ns in list(self._sockets):
                if ns not in wanted:
                    sock = self._sockets.pop(ns)
                    with contextlib.suppress(KeyError, ValueError):
                        self._selector.unregister(sock)
                    sock.close()
                    log.debug("stopped monitoring netns %s", ns or "(own)")
            for ns in wanted:
                if ns in self._sockets:
                    continue
                try:
                    sock = self._open(ns)
                except OSError as e:
                    log.debug("cannot monitor netns %s yet: %s", ns, e)
                    continue
                self._sockets[ns] = sock
                self._selector.register(sock, selectors.EVENT_READ, ns)
                log.debug("monitoring netns %s", ns or "(own)")
        self._wake()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="ipvland-netlink", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            for sock in self._sockets.values():
                sock.close()
            self._sockets.clear()
        self._selector.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"x")

    def _drain(self, sock: socket.socket) -> int:
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
                    continue
                raise
            if n == 0:
                break
            count += count_relevant(self._buf, n)
        return count

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                ready = self._selector.select(timeout=None)
            except (OSError, ValueError):  # a socket closed under us by update(): select again
                continue
            busy = False
            for key, _mask in ready:
                if key.data is _WAKE:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._wake_r, 4096)
                    continue
                ns = key.data
                try:
                    n = self._drain(key.fileobj)  # type: ignore[arg-type]
                except OSError as e:
                    if self._stop.is_set():
                        return
                    log.debug("netlink socket of netns %s: %s", ns, e)
                    continue
                busy = True
                if n:
                    try:
                        self.on_event(ns, n)
                    except Exception:  # the callback must not kill the monitor
                        log.exception("netlink event callback failed")
            if busy:
                self._stop.wait(PACE)
