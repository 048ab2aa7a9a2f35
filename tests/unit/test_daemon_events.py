"""The netlink event filter on hand-built messages (layouts from linux/rtnetlink.h), and the monitor's
coalescing over a socketpair. What the kernel actually sends is tested in tests/kernel (the VM)."""

from __future__ import annotations

import os
import socket
import struct
import threading
import time

import pytest

from ipvland import events
from ipvland.model import RT_PROTO


def nlmsg(kind: int, payload: bytes) -> bytes:
    length = 16 + len(payload)
    msg = struct.pack("=IHHII", length, kind, 0, 0, 0) + payload
    return msg + b"\0" * ((4 - length % 4) % 4)


def rtmsg(protocol: int) -> bytes:
    # family, dst_len, src_len, tos, table, protocol, scope, type, flags
    return struct.pack("=BBBBBBBBI", 2, 24, 0, 0, 254, protocol, 0, 1, 0)


def ndmsg(state: int, protocol: int | None = None) -> bytes:
    body = struct.pack("=BxxxiHBB", 2, 5, state, 0, 1)
    if protocol is not None:
        body += struct.pack("=HHB", 5, events.NDA_PROTOCOL, protocol) + b"\0" * 3
    return body


def test_links_and_addresses_always_count() -> None:
    for kind in (events.RTM_NEWLINK, events.RTM_DELLINK, events.RTM_NEWADDR, events.RTM_DELADDR):
        assert events.count_relevant(nlmsg(kind, b"\0" * 16)) == 1


def test_routes_count_only_when_ours() -> None:
    assert events.count_relevant(nlmsg(events.RTM_NEWROUTE, rtmsg(RT_PROTO))) == 1
    assert events.count_relevant(nlmsg(events.RTM_DELROUTE, rtmsg(RT_PROTO))) == 1
    assert events.count_relevant(nlmsg(events.RTM_NEWROUTE, rtmsg(3))) == 0  # boot: another tool's
    assert events.count_relevant(nlmsg(events.RTM_NEWROUTE, b"\0\0")) == 0  # truncated


def test_neighbors_count_when_permanent_or_ours() -> None:
    assert events.count_relevant(nlmsg(events.RTM_NEWNEIGH, ndmsg(events.NUD_PERMANENT))) == 1
    assert events.count_relevant(nlmsg(events.RTM_DELNEIGH, ndmsg(0x02, RT_PROTO))) == 1
    assert events.count_relevant(nlmsg(events.RTM_NEWNEIGH, ndmsg(0x02))) == 0  # ARP churn: REACHABLE
    assert events.count_relevant(nlmsg(events.RTM_NEWNEIGH, ndmsg(0x04, 4))) == 0


def test_a_batch_counts_each_message() -> None:
    batch = (nlmsg(events.RTM_NEWROUTE, rtmsg(4)) * 100 + nlmsg(events.RTM_NEWLINK, b"\0" * 16)
             + nlmsg(events.RTM_NEWROUTE, rtmsg(RT_PROTO)))
    assert events.count_relevant(batch) == 2
    assert events.count_relevant(batch[:-3]) == 1  # a torn last message is not read past the end


@pytest.mark.parametrize("netns", [None, "web"])
def test_monitor_coalesces_and_stops(netns: str | None) -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    b.setblocking(False)
    got: list[tuple[str | None, int]] = []
    seen = threading.Event()

    def on_event(ns: str | None, n: int, names: frozenset[str]) -> None:
        got.append((ns, n))
        seen.set()

    mon = events.NetlinkMonitor(on_event, open_socket=lambda ns: (None, b), identity_of=lambda ns: None,
                                watch_netns_dir=False)
    mon.update({netns})
    mon.start()
    try:
        for _ in range(200):
            a.send(nlmsg(events.RTM_NEWROUTE, rtmsg(9)))  # irrelevant flood
        a.send(nlmsg(events.RTM_NEWLINK, b"\0" * 16))
        for _ in range(50):
            a.send(nlmsg(events.RTM_DELADDR, b"\0" * 8))
        assert seen.wait(2)
        time.sleep(events.PACE * 3)
        assert sum(n for _, n in got) == 51
        assert len(got) < 51  # batches, not one callback per message
        assert {ns for ns, _ in got} == {netns}
        mon.update(set())
        assert mon.namespaces == frozenset()
    finally:
        mon.stop()
        a.close()


def ifinfomsg(name: str) -> bytes:
    body = struct.pack("=BxHiII", 0, 1, 7, 0, 0)
    raw = name.encode() + b"\0"
    attr = struct.pack("=HH", 4 + len(raw), events.IFLA_IFNAME) + raw
    return body + attr + b"\0" * ((4 - len(attr) % 4) % 4)


def test_link_messages_carry_the_links_name() -> None:
    names: set[str] = set()
    batch = nlmsg(events.RTM_NEWLINK, ifinfomsg("eth0")) + nlmsg(events.RTM_NEWADDR, b"\0" * 8) \
        + nlmsg(events.RTM_DELLINK, ifinfomsg("web0"))
    assert events.scan(batch, None, names) == 3
    assert names == {"eth0", "web0"}


def test_a_namespace_whose_name_now_means_another_is_reopened_and_reported() -> None:
    idents = {"web": (1, 100)}
    opened: list[tuple[str | None, tuple[int, int] | None]] = []
    pairs: list[socket.socket] = []

    def open_socket(ns: str | None) -> tuple[tuple[int, int] | None, socket.socket]:
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        pairs.extend((a, b))
        ident = idents.get(ns) if ns else None
        if ns and ident is None:
            raise OSError(2, "gone")
        opened.append((ns, ident))
        return ident, b

    def identity_of(ns: str | None) -> tuple[int, int] | None:
        if ns is None:
            return None
        if ns not in idents:
            raise OSError(2, "gone")
        return idents[ns]

    got: list[tuple[str | None, int]] = []
    mon = events.NetlinkMonitor(lambda ns, n, names: got.append((ns, n)), open_socket=open_socket,
                                identity_of=identity_of, watch_netns_dir=False)
    try:
        mon.update({None, "web"})
        first = mon.identities()["web"]
        old = [s for s in pairs][1::2][-1]
        mon.update({None, "web"})
        assert got == [] and len(opened) == 2  # same namespace: nothing reopened
        del idents["web"]  # ip netns del web
        mon.update({None, "web"})
        assert old.fileno() == -1  # closed at once: it would keep the old namespace alive
        assert "web" not in mon.namespaces and got == [("web", 1)]
        idents["web"] = (1, 200)  # ip netns add web
        mon.update({None, "web"})
        assert mon.identities()["web"] == (1, 200) != first
    finally:
        mon.stop()
        for s in pairs:
            s.close()


class _CountingSocket(socket.socket):
    """A socket that counts its reads."""

    reads = 0

    def recv_into(self, *args: object, **kwargs: object) -> int:  # type: ignore[override]
        self.reads += 1
        return super().recv_into(*args, **kwargs)  # type: ignore[arg-type]


def _counting_pair() -> tuple[socket.socket, _CountingSocket]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    counted = _CountingSocket(socket.AF_UNIX, socket.SOCK_DGRAM, fileno=b.detach())
    counted.setblocking(False)
    return a, counted


def test_flush_reads_only_the_sockets_with_something_queued() -> None:
    """Regression (issue 13, per-ns repair at N=1000): flush() read every socket, one recv per
    namespace after every reconcile, however few namespaces the reconcile wrote to."""
    pairs = {ns: _counting_pair() for ns in [None, *(f"c{i}" for i in range(50))]}
    got: list[tuple[str | None, int]] = []
    mon = events.NetlinkMonitor(lambda ns, n, names: got.append((ns, n)),
                                open_socket=lambda ns: (None, pairs[ns][1]), identity_of=lambda ns: None,
                                watch_netns_dir=False)
    try:
        mon.update(set(pairs))  # not started: flush() is the only reader
        pairs["c7"][0].send(nlmsg(events.RTM_NEWLINK, b"\0" * 16))
        mon.flush()
        assert got == [("c7", 1)]
        reads = {ns: s.reads for ns, (_, s) in pairs.items() if s.reads}
        assert reads == {"c7": 2}  # the message, then EAGAIN: no other socket was read
    finally:
        mon.stop()
        for a, b in pairs.values():
            a.close()
            b.close()


def test_a_scoped_update_checks_only_its_scope_and_the_netns_watch_sees_the_rest(
        tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression (issue 13): every update() stat'ed every watched namespace, twice per repair (at
    1000 namespaces a quarter of the repair). A scoped update checks its scope; a name deleted or
    re-created elsewhere is still found, by the /run/netns watch."""
    netns_dir = str(tmp_path)
    monkeypatch.setattr(events, "NETNS_DIR", netns_dir)
    idents = {f"c{i}": (1, 100 + i) for i in range(20)}
    checked: list[str | None] = []
    pairs: list[socket.socket] = []

    def open_socket(ns: str | None) -> tuple[tuple[int, int] | None, socket.socket]:
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        pairs.extend((a, b))
        if ns is not None and ns not in idents:
            raise OSError(2, "gone")
        return (idents[ns] if ns else None), b

    def identity_of(ns: str | None) -> tuple[int, int] | None:
        checked.append(ns)
        if ns is not None and ns not in idents:
            raise OSError(2, "gone")
        return idents[ns] if ns else None

    got: list[tuple[str | None, int]] = []
    reported = threading.Event()

    def on_event(ns: str | None, n: int, names: frozenset[str]) -> None:
        got.append((ns, n))
        reported.set()

    mon = events.NetlinkMonitor(on_event, open_socket=open_socket, identity_of=identity_of)
    wanted = {None, *idents}
    try:
        mon.update(wanted)
        mon.start()
        checked.clear()
        mon.update(wanted, check={None, "c3"})
        assert sorted(checked, key=str) == [None, "c3"]
        mon.update(wanted)  # not scoped: every one
        assert set(checked) >= wanted
        # ip netns del c9: the name goes from /run/netns; the monitor's watch checks everyone
        del idents["c9"]
        open(os.path.join(netns_dir, "c9"), "w").close()
        os.unlink(os.path.join(netns_dir, "c9"))
        assert reported.wait(5)
        assert ("c9", 1) in got and "c9" not in mon.namespaces
    finally:
        mon.stop()
        for s in pairs:
            s.close()
