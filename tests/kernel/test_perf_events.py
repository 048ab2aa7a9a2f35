"""Issue 13, on the kernel: which events the monitor turns into work.

- An ipvlan created on a parent, or deleted, makes the kernel send an RTM_NEWLINK of the parent in
  the parent's namespace (NETDEV_CHANGEUPPER) with nothing changed: it must not name the parent
  (that widens a repair to every namespace of the port), nor count as an event of the host (a
  repair would read the host's objects), while a real change (the MTU) still names it.
- Events lost to a full receive buffer (ENOBUFS) count as an event of that namespace, even when
  every lost message was irrelevant: something happened that nobody saw, so that namespace is read.
One namespace and one veth for the module; the monitor's thread is not started: flush() reads.
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator

import pytest

from ipvland import events
from ipvland.kernel import create_namespace, delete_namespace

NS = "pe0"


def ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    assert done.returncode == 0, (args, done.stderr)


@pytest.fixture(scope="module")
def lab() -> Iterator[None]:
    subprocess.run(["ip", "link", "del", "pev0"], capture_output=True, check=False)
    delete_namespace(NS)
    ip("link", "add", "pev0", "type", "veth", "peer", "name", "pev0p")
    ip("link", "set", "pev0", "up")
    create_namespace(NS)
    ip("-n", NS, "link", "set", "lo", "up")
    try:
        yield
    finally:
        subprocess.run(["ip", "link", "del", "pev0"], capture_output=True, check=False)
        delete_namespace(NS)


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str | None, int, frozenset[str]]] = []

    def __call__(self, netns: str | None, count: int, names: frozenset[str]) -> None:
        self.calls.append((netns, count, names))

    def take(self) -> list[tuple[str | None, int, frozenset[str]]]:
        out, self.calls = self.calls, []
        return out


def monitor(rec: Recorder, rcvbuf: int | None = None) -> events.NetlinkMonitor:
    def open_socket(ns: str | None) -> tuple[events.Identity, socket.socket]:
        ident, sock = events.open_event_socket(ns)
        if rcvbuf is not None and ns == NS:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        return ident, sock

    m = events.NetlinkMonitor(rec, open_socket=open_socket, watch_netns_dir=False)
    m.update({None, NS})
    return m


class ParentMessages:
    """Counts the RTM_NEWLINK messages of one host link, on a socket of its own (read at .count)."""

    def __init__(self, name: str) -> None:
        self.name, self.seen = name, 0
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, events.NETLINK_ROUTE)
        self.sock.bind((0, events.RTMGRP_LINK))
        self.sock.setblocking(False)

    @property
    def count(self) -> int:
        while True:
            try:
                buf = self.sock.recv(1 << 16)
            except BlockingIOError:
                return self.seen
            for kind, start, end in events.messages(buf, len(buf)):
                if kind == events.RTM_NEWLINK and events.link_name(buf, start, end) == self.name:
                    self.seen += 1


def test_an_ipvlan_created_or_deleted_on_a_parent_does_not_name_it_but_its_mtu_does(lab: None) -> None:
    rec = Recorder()
    m = monitor(rec)
    try:
        ip("link", "set", "pev0", "mtu", "1400")  # the monitor sees the parent once: named (new to it)
        m.flush()
        assert any(ns is None and "pev0" in names for ns, _, names in rec.take())
        echoes = ParentMessages("pev0")
        ip("link", "add", "link", "pev0", "name", "pei0", "netns", NS, "type", "ipvlan", "mode", "l3s")
        m.flush()
        calls = rec.take()
        # the kernel does send the parent's RTM_NEWLINK (what used to widen every repair), with
        # nothing changed but counters: no event of the host at all now (a repair of the device
        # does not read the host's neighbors, routes, addresses); the device's namespace has its own
        assert [ns for ns, _, _ in calls] == [NS], calls
        assert echoes.count == 1, echoes.count  # it was sent, and read
        ip("-n", NS, "link", "del", "pei0")
        m.flush()
        calls = rec.take()
        assert [ns for ns, _, _ in calls] == [NS] and echoes.count == 2, (calls, echoes.count)
        ip("link", "set", "pev0", "txqueuelen", "900")  # a change of another attribute: an event, named not
        m.flush()
        assert [(ns, names) for ns, _, names in rec.take()] == [(None, frozenset())]
        ip("link", "set", "pev0", "mtu", "1500")  # a real change of the parent: named
        m.flush()
        assert any(ns is None and "pev0" in names for ns, _, names in rec.take())
    finally:
        m.stop()


def flood(n: int, start: int) -> None:
    """n routes of another tool (proto 4) in NS: each an event the monitor drops on its header."""
    lines = "".join(f"route add 198.18.{(start + i) // 250}.{(start + i) % 250 + 1}/32 dev lo proto 4\n"
                    for i in range(n))
    done = subprocess.run(["ip", "-n", NS, "-batch", "-"], input=lines, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_events_lost_to_a_full_buffer_count_as_an_event_of_their_namespace(lab: None) -> None:
    rec = Recorder()
    m = monitor(rec)  # the usual buffer: the same kind of flood, all irrelevant, is no event
    try:
        flood(200, 0)
        m.flush()
        assert not [c for c in rec.take() if c[0] == NS]
    finally:
        m.stop()
    m = monitor(rec, rcvbuf=1)  # the kernel's minimum: a few messages
    try:
        flood(200, 1000)
        m.flush()
        lost = [c for c in rec.take() if c[0] == NS]
        assert lost and lost[0][1] >= 1, "ENOBUFS must count as an event of its namespace"
    finally:
        m.stop()
