"""Issue 13: a device re-created alone on its port (the container layout: one ipvlan per namespace)
is repaired from a partial view plus one sibling that shows its port's mode, never a full view; the parent's
unchanged link events (sent when an ipvlan is created on it or deleted) name no parent."""

from __future__ import annotations

import struct
from dataclasses import replace

import pytest

from ipvland import events
from ipvland.model import (
    AddressAdd,
    Device,
    LinkCreate,
    LinkDelete,
    Mode,
    Neighbor,
    NeighborSet,
    Observed,
    Route,
    RouteSet,
    State,
)
from tests.unit.test_plan import API, IF, IP, NET, WEB, ipvlan, parent_link, spec_of

# ---------------------------------------------------------------- the planner


def test_ports_known_lets_a_partial_view_create_on_a_port_of_known_mode() -> None:
    # web0 is gone from "web"; its only sibling, api0, is in "api", out of scope: with the links of
    # every namespace the port's mode is known, so web0 is re-created without a full view, and
    # api0, read only for its port's sake, is neither pruned nor planned.
    observed = Observed(namespaces=frozenset({"web", "api"}), links=(parent_link(), ipvlan("api0", 8, "api")),
                        scanned=frozenset({None, "web"}), scope=frozenset({None, "web"}), ports_known=True)
    p = plan_of(spec_of(WEB, API), observed)
    assert p.needs_full_view is None
    assert {c.device for c in p.changes} == {("web", "web0")}
    assert any(isinstance(c, LinkCreate) for c in p.changes)
    assert not any(isinstance(c, LinkDelete) for c in p.changes)


def test_ports_known_with_a_port_in_another_mode_still_needs_the_full_view() -> None:
    observed = Observed(namespaces=frozenset({"web", "api"}),
                        links=(parent_link(), ipvlan("api0", 8, "api", mode=Mode.L2, owned=False)),
                        scanned=frozenset({None, "web"}), scope=frozenset({None, "web"}), ports_known=True)
    p = plan_of(spec_of(WEB), observed)
    assert p.needs_full_view is not None
    assert not any(isinstance(c, LinkCreate) for c in p.changes)


def test_ports_known_on_an_empty_port_creates() -> None:
    observed = Observed(namespaces=frozenset({"web"}), links=(parent_link(),), scanned=frozenset({None, "web"}),
                        scope=frozenset({None, "web"}), ports_known=True)
    p = plan_of(spec_of(WEB), observed)
    assert p.needs_full_view is None and any(isinstance(c, LinkCreate) for c in p.changes)
    # without the links of the other namespaces: the whole picture first (unchanged)
    assert plan_of(spec_of(WEB), replace(observed, ports_known=False)).needs_full_view is not None


def plan_of(spec, observed):  # type: ignore[no-untyped-def]
    from ipvland.plan import plan

    return plan(spec, observed)


# ---------------------------------------------------------------- parent link events


def attr(t: int, v: bytes) -> bytes:
    return struct.pack("=HH", 4 + len(v), t) + v + b"\0" * (-len(v) % 4)


def newlink(index: int, name: str, mtu: int, flags: int = 0x1043, kind: int = events.RTM_NEWLINK,
            extra: bytes = b"") -> bytes:
    body = struct.pack("=BxHiII", 0, 1, index, flags, 0)
    body += attr(events.IFLA_IFNAME, name.encode() + b"\0") + attr(events.IFLA_MTU, struct.pack("=I", mtu))
    body += attr(events.IFLA_ADDRESS, bytes.fromhex("020000000b01")) + extra
    return struct.pack("=IHHII", 16 + len(body), kind, 0, 0, 0) + body


IFLA_STATS64, IFLA_LINKINFO, IFLA_IFALIAS, IFLA_AF_SPEC = 23, 18, 20, 26


def test_an_unchanged_parent_message_names_no_parent_and_is_no_event() -> None:
    """Issue 13: the parent's NETDEV_CHANGEUPPER echo of every ipvlan created on it or deleted named
    it (fixed before), and then still counted as an event of the host: each repair of a deleted
    device read the host's neighbors, routes, addresses and rules. Its counters may differ."""
    memory = events.LinkMemory()
    names: set[str] = set()
    stats = attr(IFLA_STATS64, struct.pack("=QQ", 1, 2)) + attr(IFLA_AF_SPEC, b"\1\2\3\4")
    assert events.scan(newlink(2, "eth0", 1500, extra=stats), names=names, memory=memory) == 1
    assert names == {"eth0"}  # not seen before: named
    names.clear()
    stats = attr(IFLA_STATS64, struct.pack("=QQ", 7, 9)) + attr(IFLA_AF_SPEC, b"\5\6\7\x08")
    assert events.scan(newlink(2, "eth0", 1500, extra=stats), names=names, memory=memory) == 0
    assert names == set()


@pytest.mark.parametrize("extra", [attr(IFLA_LINKINFO, attr(1, b"ipvlan\0")), attr(IFLA_IFALIAS, b"theirs\0")])
def test_another_attribute_changed_counts_without_naming(extra: bytes) -> None:
    """A mode changed in IFLA_LINKINFO, an alias (ipvland's ownership mark): drift to look at, in
    the host only; not a parent change that reaches every namespace of its port."""
    memory = events.LinkMemory()
    events.scan(newlink(2, "eth0", 1500), memory=memory)
    names: set[str] = set()
    assert events.scan(newlink(2, "eth0", 1500, extra=extra), names=names, memory=memory) == 1
    assert names == set()
    assert events.scan(newlink(2, "eth0", 1500, extra=extra), names=names, memory=memory) == 0


def test_a_deleted_link_always_counts_and_is_forgotten() -> None:
    memory = events.LinkMemory()
    events.scan(newlink(2, "eth0", 1500), memory=memory)
    names: set[str] = set()
    assert events.scan(newlink(2, "eth0", 1500, kind=events.RTM_DELLINK), names=names, memory=memory) == 1
    assert names == {"eth0"}
    assert events.scan(newlink(2, "eth0", 1500), memory=memory) == 1  # back: new again


def test_a_parents_mtu_name_or_flags_change_names_it() -> None:
    memory = events.LinkMemory()
    events.scan(newlink(2, "eth0", 1500), names=set(), memory=memory)
    for msg in (newlink(2, "eth0", 9000), newlink(2, "eth1", 9000), newlink(2, "eth1", 9000, flags=0x1002)):
        names: set[str] = set()
        events.scan(msg, names=names, memory=memory)
        assert names, msg
    names = set()
    events.scan(newlink(2, "eth1", 9000, kind=events.RTM_DELLINK), names=names, memory=memory)
    assert names == {"eth1"}
    names = set()
    events.scan(newlink(2, "eth1", 9000, flags=0x1002), names=names, memory=memory)
    assert names == {"eth1"}  # after its deletion, new again


def test_without_memory_every_link_message_names_its_link() -> None:
    names: set[str] = set()
    events.scan(newlink(2, "eth0", 1500) * 2, names=names)
    assert names == {"eth0"}


def test_memory_cleared_makes_every_link_new() -> None:
    memory = events.LinkMemory()
    events.scan(newlink(2, "eth0", 1500), names=set(), memory=memory)
    memory.clear()
    names: set[str] = set()
    events.scan(newlink(2, "eth0", 1500), names=names, memory=memory)
    assert names == {"eth0"}


# ---------------------------------------------------------------- observe: enough of each port


class FakeKernel:
    """Links only (what observe reads out of scope), and which namespaces were dumped."""

    def __init__(self, links: dict[str | None, list]) -> None:  # type: ignore[type-arg]
        self.by_ns = links
        self.dumped: list[tuple[str | None, str | None]] = []

    def list_namespaces(self) -> frozenset[str]:
        return frozenset(ns for ns in self.by_ns if ns is not None)

    def links(self, netns: str | None, kind: str | None = None) -> list:  # type: ignore[type-arg]
        self.dumped.append((netns, kind))
        return [x for x in self.by_ns.get(netns, []) if kind is None or x.kind == kind]

    def addresses(self, netns: str | None) -> list:  # type: ignore[type-arg]
        return []

    def routes(self, netns: str | None, tables: object = None) -> list:  # type: ignore[type-arg]
        return []

    def neighbors(self, netns: str | None) -> list:  # type: ignore[type-arg]
        return []

    def rules(self, netns: str | None) -> list:  # type: ignore[type-arg]
        return []

    def retain(self, namespaces: frozenset[str]) -> None:
        pass


def test_ports_reads_out_of_scope_only_until_the_port_shows_a_member() -> None:
    from ipvland.observe import observe

    k = FakeKernel({None: [parent_link()], "web": [], "api": [ipvlan("api0", 8, "api")], "zzz": []})
    o = observe(k, spec_of(WEB, API), frozenset({"web"}), ports=True)  # type: ignore[arg-type]
    assert o.ports_known
    # web (in scope) whole; then api, where the spec puts a sibling: one filtered dump, not zzz
    assert [d for d in k.dumped if d[0] not in (None, "web")] == [("api", "ipvlan")]
    assert plan_of(spec_of(WEB, API), o).needs_full_view is None


def test_ports_reads_every_namespace_when_the_port_has_no_member() -> None:
    from ipvland.observe import observe

    k = FakeKernel({None: [parent_link()], "web": [], "api": [], "zzz": []})
    o = observe(k, spec_of(WEB, API), frozenset({"web"}), ports=True)  # type: ignore[arg-type]
    assert sorted(d[0] for d in k.dumped if d[0] not in (None, "web")) == ["api", "zzz"]
    p = plan_of(spec_of(WEB, API), o)
    assert p.needs_full_view is None and any(isinstance(c, LinkCreate) for c in p.changes)


# ---------------------------------------------------------------- observe: a namespace gone mid-turn


class VanishingKernel(FakeKernel):
    """Namespaces listed at the turn's start that are gone when read (a container stopped): their
    reads fail as the real ones do (an errno), and their names under /run/netns are no namespaces."""

    def __init__(self, links: dict[str | None, list], gone_at: dict[str, str]) -> None:  # type: ignore[type-arg]
        super().__init__(links)
        self.gone_at = gone_at  # netns -> the read that finds it gone

    def _read(self, what: str, netns: str | None) -> None:
        if netns is not None and self.gone_at.get(netns) == what:
            raise OSError(13, "Permission denied")  # EACCES: the empty file a gone mount leaves, no CAP_DAC_OVERRIDE

    def links(self, netns: str | None, kind: str | None = None) -> list:  # type: ignore[type-arg]
        self._read("links", netns)
        return super().links(netns, kind)

    def addresses(self, netns: str | None) -> list:  # type: ignore[type-arg]
        self._read("addresses", netns)
        return []


@pytest.mark.parametrize("when", ["links", "addresses"])
def test_a_namespace_gone_after_the_listing_is_absent_not_a_failed_observe(
        when: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review of issue 13: the turn lists /run/netns once, so a namespace can go between the listing
    and its reads; the shipped unit sees EACCES then (no CAP_DAC_OVERRIDE), not only ENOENT."""
    from ipvland import observe as observe_mod

    monkeypatch.setattr(observe_mod, "is_namespace", lambda path: not path.endswith("/api"))
    k = VanishingKernel({None: [parent_link()], "web": [], "api": [ipvlan("api0", 8, "api")]}, {"api": when})
    o = observe_mod.observe(k, spec_of(WEB, API))  # type: ignore[arg-type]
    assert "api" not in o.namespaces and "api" not in o.scanned
    assert not any(link.netns == "api" for link in o.links)


def test_a_read_that_fails_in_a_namespace_still_there_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from ipvland import observe as observe_mod

    monkeypatch.setattr(observe_mod, "is_namespace", lambda path: True)
    k = VanishingKernel({None: [parent_link()], "web": [], "api": []}, {"api": "links"})
    with pytest.raises(OSError):
        observe_mod.observe(k, spec_of(WEB, API))  # type: ignore[arg-type]


# ---------------------------------------------------------------- the host's own objects in a repair elsewhere


class CountingKernel(FakeKernel):
    """Which kinds were dumped in which namespace."""

    def __init__(self, links: dict[str | None, list]) -> None:  # type: ignore[type-arg]
        super().__init__(links)
        self.reads: list[tuple[str, str | None]] = []

    def addresses(self, netns: str | None) -> list:  # type: ignore[type-arg]
        self.reads.append(("addresses", netns))
        return []

    def routes(self, netns: str | None, tables: object = None) -> list:  # type: ignore[type-arg]
        self.reads.append(("routes", netns))
        return []

    def neighbors(self, netns: str | None) -> list:  # type: ignore[type-arg]
        self.reads.append(("neighbors", netns))
        return []

    def rules(self, netns: str | None) -> list:  # type: ignore[type-arg]
        self.reads.append(("rules", netns))
        return []


def test_a_repair_elsewhere_reads_only_the_hosts_links() -> None:
    """Issue 13: each repair in a container's namespace dumped and decoded the host's neighbors,
    routes, addresses and rules (a quarter of a repair at 1000 namespaces), which no event said had
    changed. The host's links are still read: the parents are there."""
    from ipvland.observe import observe

    k = CountingKernel({None: [parent_link()], "web": [ipvlan("web0", 7, "web")], "api": []})
    o = observe(k, spec_of(WEB, API), frozenset({"web"}))  # type: ignore[arg-type]
    assert (None, None) in k.dumped  # the host's links
    assert {ns for _, ns in k.reads} == {"web"}
    assert o.scanned == frozenset({"web"}) and o.sees(None)
    k = CountingKernel({None: [parent_link()], "web": [ipvlan("web0", 7, "web")], "api": []})
    o = observe(k, spec_of(WEB, API), frozenset({None, "web"}))  # type: ignore[arg-type]
    assert {ns for _, ns in k.reads} == {None, "web"} and o.scanned == frozenset({None, "web"})
    k = CountingKernel({None: [parent_link()], "web": [ipvlan("web0", 7, "web")], "api": []})
    o = observe(k, spec_of(WEB, API))  # type: ignore[arg-type]
    assert None in o.scanned and ("neighbors", None) in k.reads  # a full view reads everything


HOSTDEV = Device("hv0", "eth0", None, (IF("192.0.2.30/24"),), None, State.UP, (Route(NET("198.51.100.0/24")),))


def test_the_hosts_objects_not_read_are_unknown_not_absent() -> None:
    """The planner's half: with the host out of `scanned`, its routes, neighbors and the addresses of
    an ipvlan in it are not planned (they would all look absent); the device in scope is."""
    spec = spec_of(WEB, HOSTDEV, routes=(Route(NET("203.0.113.0/24")),),
                   neighbors=(Neighbor(IP("192.0.2.1"), "02:00:00:00:00:aa"),))
    links = (parent_link(), ipvlan("hv0", 9, None))  # web0 is gone: re-created
    partial = Observed(namespaces=frozenset({"web"}), links=links, scanned=frozenset({"web"}),
                       scope=frozenset({None, "web"}), ports_known=True)
    p = plan_of(spec, partial)
    assert {c.device for c in p.changes} == {("web", "web0")}
    assert any(isinstance(c, LinkCreate) for c in p.changes)
    # the same view with the host read (and holding nothing): each host object is planned
    p = plan_of(spec, replace(partial, scanned=frozenset({None, "web"})))
    host = [c for c in p.changes if getattr(c, "netns", "?") is None or getattr(c, "device", ("?",))[0] is None]
    assert {type(c) for c in host} >= {RouteSet, NeighborSet, AddressAdd}


def test_an_unchanged_link_message_is_an_echo_of_its_link() -> None:
    """Review of issue 13: the unchanged message is no event, but the daemon hears of it (a port check)."""
    memory = events.LinkMemory()
    echoes: set[str] = set()
    assert events.scan(newlink(2, "eth0", 1500), memory=memory, echoes=echoes) == 1 and echoes == set()
    assert events.scan(newlink(2, "eth0", 1500), memory=memory, echoes=echoes) == 0
    assert echoes == {"eth0"}


def test_the_same_link_in_another_family_is_remembered_apart() -> None:
    """Review of issue 13: the kernel also sends a link's AF_BRIDGE RTM_NEWLINK (a bridge port), with
    other attributes; keyed by ifindex alone, the two kinds alternated and neither ever looked unchanged."""
    memory = events.LinkMemory()
    bridge = bytearray(newlink(2, "eth0", 1500, extra=attr(12, b"\x03\x00\x00\x00")))
    bridge[16] = 7  # ifi_family AF_BRIDGE
    for message in (newlink(2, "eth0", 1500), bytes(bridge)):
        events.scan(message, memory=memory)
    assert events.scan(newlink(2, "eth0", 1500), memory=memory) == 0
    assert events.scan(bytes(bridge), memory=memory) == 0
