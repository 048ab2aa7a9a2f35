"""The planner on plain data: no kernel, no I/O. What the kernel does is tested in tests/kernel."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

from ipvland.model import (
    OWNER_ALIAS,
    RT_PROTO,
    AddressAdd,
    AddressDelete,
    Device,
    Flag,
    LinkCreate,
    LinkDelete,
    LinkMtuSet,
    LinkStateSet,
    LinkSysctlSet,
    Mode,
    NamespaceCreate,
    Neighbor,
    NeighborDelete,
    NeighborSet,
    Observed,
    ObservedAddress,
    ObservedLink,
    ObservedNeighbor,
    ObservedRoute,
    Parent,
    PortModeSet,
    Route,
    RouteDelete,
    RouteSet,
    Spec,
    State,
)
from ipvland.normalize import KEEP_ADDR_ON_DOWN, PROMOTE_SECONDARIES
from ipvland.plan import plan, temp_name

IF = ipaddress.ip_interface
NET = ipaddress.ip_network
IP = ipaddress.ip_address
MAC = "02:00:00:00:00:01"


def parent_link(name: str = "eth0", index: int = 2) -> ObservedLink:
    return ObservedLink(None, index, name, None, 1500, True, MAC)


def ipvlan(name: str, index: int, netns: str | None = None, *, parent: str | None = "eth0", mode: Mode = Mode.L3S,
           flags: Flag = Flag.BRIDGE, owned: bool = True, mtu: int = 1500, up: bool = True,
           sysctls: tuple[tuple[str, int], ...] = ((PROMOTE_SECONDARIES, 1), (KEEP_ADDR_ON_DOWN, 1))) -> ObservedLink:
    """An ipvlan as the kernel reports it; ipvland's own have promote_secondaries set (by the create)
    and keep_addr_on_down (set on those with IPv6 addresses)."""
    return ObservedLink(netns, index, name, "ipvlan", mtu, up, MAC, OWNER_ALIAS if owned else None,
                        parent, mode, flags, sysctls)


def spec_of(*devices: Device, mode: Mode = Mode.L3S, flags: Flag = Flag.BRIDGE,
            routes: tuple[Route, ...] = (), neighbors: tuple[Neighbor, ...] = ()) -> Spec:
    return Spec(1, (Parent("eth0", mode, flags, routes, neighbors, devices),))


WEB = Device("web0", "eth0", "web", (IF("192.0.2.10/24"), IF("2001:db8::10/64")), None, State.UP,
             (Route(NET("0.0.0.0/0")),))


def converged_web() -> Observed:
    """The kernel state that applying spec_of(WEB) leaves behind."""
    return Observed(
        namespaces=frozenset({"web"}),
        links=(parent_link(), ipvlan("web0", 7, "web")),
        addresses=(ObservedAddress("web", 7, IF("192.0.2.10/24")), ObservedAddress("web", 7, IF("2001:db8::10/64")),
                   ObservedAddress("web", 7, IF("fe80::1/64"))),
        routes=(ObservedRoute("web", 7, Route(NET("0.0.0.0/0")), RT_PROTO),
                ObservedRoute("web", 7, Route(NET("192.0.2.0/24")), 2)),  # the kernel's connected route
        scanned=frozenset({None, "web"}),
    )


def lines(p) -> list[str]:
    return [c.describe() for c in p.changes]


def test_create_from_empty_orders_namespace_device_addresses_up_routes() -> None:
    p = plan(spec_of(WEB), Observed(links=(parent_link(),)))
    assert [type(c) for c in p.changes] == [NamespaceCreate, LinkCreate, LinkSysctlSet, AddressAdd, AddressAdd,
                                            LinkStateSet, RouteSet]
    create = p.changes[1]
    assert isinstance(create, LinkCreate)
    assert create.mode is Mode.L3S and create.temp_name == temp_name("web", "web0")
    assert lines(p)[1] == "+ link web0 ipvlan l3s on eth0 netns web"
    assert not p.conflicts and not p.pending


def test_converged_state_plans_nothing() -> None:
    p = plan(spec_of(WEB), converged_web())
    assert p.empty, lines(p)
    assert not p.conflicts


def test_root_namespace_device_is_created_under_a_temp_name_too() -> None:
    dev = Device("app0", "eth0", None, (), 9000, State.DOWN)
    p = plan(spec_of(dev), Observed(links=(parent_link(),)))
    assert len(p.changes) == 1
    create = p.changes[0]
    assert isinstance(create, LinkCreate) and create.temp_name == temp_name(None, "app0")
    assert create.temp_name != temp_name("web", "app0")
    assert create.describe() == "+ link app0 ipvlan l3s on eth0 mtu 9000"


def test_mtu_and_state_change_in_place() -> None:
    observed = converged_web()
    observed = replace(observed, links=(parent_link(), ipvlan("web0", 7, "web", mtu=1500, up=False)))
    p = plan(spec_of(replace(WEB, mtu=1400)), observed)
    assert lines(p) == ["~ link web0 netns web mtu 1500 -> 1400", "~ link web0 netns web state down -> up"]


def test_mode_change_is_one_change_per_parent_not_per_device() -> None:
    other = Device("api0", "eth0", "web")
    observed = replace(converged_web(), links=(parent_link(), ipvlan("web0", 7, "web", mode=Mode.L2),
                                                ipvlan("api0", 8, "web", mode=Mode.L2)))
    p = plan(spec_of(WEB, other, flags=Flag.PRIVATE), observed)
    modes = [c for c in p.changes if isinstance(c, PortModeSet)]
    assert len(modes) == 1
    assert modes[0].describe() == "~ parent eth0 mode l2 -> l3s, flags bridge -> private"
    assert not any(isinstance(c, (LinkCreate, LinkDelete)) for c in p.changes)


def test_foreign_ipvlan_on_parent_blocks_mode_change_and_creates() -> None:
    observed = Observed(links=(parent_link(), ipvlan("theirs", 9, mode=Mode.L2, owned=False)))
    p = plan(spec_of(WEB), observed)
    assert not any(isinstance(c, (LinkCreate, PortModeSet)) for c in p.changes)
    subjects = [c.subject for c in p.conflicts]
    assert "parent eth0" in subjects and "link web0 netns web" in subjects
    assert "theirs" in p.conflicts[0].message


def test_foreign_ipvlan_in_same_mode_is_left_alone_and_creates_proceed() -> None:
    observed = Observed(links=(parent_link(), ipvlan("theirs", 9, owned=False)))
    p = plan(spec_of(WEB), observed)
    assert any(isinstance(c, LinkCreate) for c in p.changes)
    assert not any(getattr(c, "name", None) == "theirs" for c in p.changes)
    assert not p.conflicts


def test_foreign_device_with_spec_name_is_a_conflict_and_others_converge() -> None:
    other = Device("api0", "eth0", "web")
    observed = Observed(namespaces=frozenset({"web"}),
                        links=(parent_link(), ObservedLink("web", 5, "web0", "veth", 1500, True)),
                        scanned=frozenset({None, "web"}))
    p = plan(spec_of(WEB, other), observed)
    assert [c.subject for c in p.conflicts] == ["link web0 netns web"]
    assert "veth" in p.conflicts[0].message
    assert not any(getattr(c, "device", None) == ("web", "web0") for c in p.changes)
    assert any(isinstance(c, LinkCreate) and c.spec.name == "api0" for c in p.changes)


def test_addresses_are_fully_managed_except_ipv6_link_local() -> None:
    observed = converged_web()
    observed = replace(observed, addresses=(*observed.addresses, ObservedAddress("web", 7, IF("10.9.9.9/8"))))
    wanted = replace(WEB, addresses=(IF("192.0.2.10/24"), IF("2001:db8::11/64")))
    p = plan(spec_of(wanted), observed)
    assert lines(p) == [  # added before deleted: see test_renumbering_adds_before_it_deletes
        "+ address 2001:db8::11/64 dev web0 netns web",
        "- address 10.9.9.9/8 dev web0 netns web",
        "- address 2001:db8::10/64 dev web0 netns web",
    ]


def test_prefix_length_change_replaces_the_address() -> None:
    p = plan(spec_of(replace(WEB, addresses=(IF("192.0.2.10/25"), IF("2001:db8::10/64")))), converged_web())
    assert lines(p) == ["- address 192.0.2.10/24 dev web0 netns web", "+ address 192.0.2.10/25 dev web0 netns web"]


def test_device_leaving_spec_is_pruned_without_touching_its_addresses() -> None:
    p = plan(Spec(1, (Parent("eth0", Mode.L3S),)), converged_web())
    assert lines(p) == ["- link web0 netns web (not in the spec)"]


def test_empty_spec_removes_only_owned_objects() -> None:
    observed = replace(
        converged_web(),
        links=(*converged_web().links, ipvlan("theirs", 9, owned=False)),
        routes=(*converged_web().routes, ObservedRoute(None, 2, Route(NET("198.51.100.0/24")), 4),
                ObservedRoute(None, 2, Route(NET("198.51.100.7/32")), RT_PROTO)),
        neighbors=(ObservedNeighbor(None, 2, Neighbor(IP("192.0.2.99"), MAC), True, None),
                   ObservedNeighbor(None, 2, Neighbor(IP("192.0.2.98"), MAC), True, RT_PROTO)),
    )
    p = plan(Spec(1, ()), observed)
    assert lines(p) == [
        f"- neighbor 192.0.2.98 lladdr {MAC} dev eth0",
        "- route 198.51.100.7/32 dev eth0",
        "- link web0 netns web (not in the spec)",
    ]


def test_owned_device_whose_parent_is_not_in_our_namespace_is_not_pruned() -> None:
    """Another ipvland instance (e.g. run inside a peer namespace) must not prune our devices."""
    observed = Observed(links=(parent_link(), ipvlan("web0", 7, "web", parent=None)),
                        namespaces=frozenset({"web"}))
    assert plan(Spec(1, ()), observed).empty


def test_parent_change_deletes_and_recreates() -> None:
    observed = replace(converged_web(), links=(parent_link(), parent_link("eth1", 3),
                                               ipvlan("web0", 7, "web", parent="eth1")))
    p = plan(spec_of(WEB), observed)
    assert isinstance(p.changes[0], LinkDelete) and "parent eth1 -> eth0" in p.changes[0].reason
    assert any(isinstance(c, LinkCreate) for c in p.changes)
    # the recreated device gets its addresses again, though the old one had them
    assert sum(isinstance(c, AddressAdd) for c in p.changes) == 2


def test_netns_change_deletes_old_and_creates_new() -> None:
    p = plan(spec_of(replace(WEB, netns="db")), converged_web())
    kinds = [type(c) for c in p.changes]
    assert kinds[:3] == [LinkDelete, NamespaceCreate, LinkCreate]


def test_missing_parent_is_pending_and_other_parents_converge() -> None:
    spec = Spec(1, (Parent("eth9", Mode.L2, devices=(Device("x0", "eth9"),)),
                    Parent("eth0", Mode.L3S, devices=(WEB,))))
    p = plan(spec, Observed(links=(parent_link(),)))
    assert [c.subject for c in p.pending] == ["parent eth9"]
    assert "1 device(s) wait" in p.pending[0].message
    assert any(isinstance(c, LinkCreate) and c.spec.name == "web0" for c in p.changes)


def test_ipvlan_named_as_parent_is_refused() -> None:
    spec = Spec(1, (Parent("web0", Mode.L2, devices=(Device("x0", "web0", "x"),)),))
    p = plan(spec, Observed(links=(parent_link(), ipvlan("web0", 7))))
    assert p.conflicts[0].subject == "parent web0"
    assert not any(isinstance(c, LinkCreate) for c in p.changes)


def test_leftover_temporary_device_is_removed() -> None:
    observed = Observed(links=(parent_link(), ipvlan(temp_name("web", "web0"), 11, owned=False)))
    p = plan(spec_of(WEB), observed)
    assert isinstance(p.changes[0], LinkDelete)
    assert "interrupted" in p.changes[0].reason


def test_routes_replace_ours_and_refuse_foreign() -> None:
    gw_route = Route(NET("198.51.100.7/32"), IP("192.0.2.1"))
    foreign = Route(NET("203.0.113.0/24"))
    observed = Observed(links=(parent_link(),), routes=(
        ObservedRoute(None, 2, Route(NET("198.51.100.7/32"), IP("192.0.2.254")), RT_PROTO),
        ObservedRoute(None, 2, foreign, 186),
    ))
    p = plan(spec_of(routes=(gw_route, foreign)), observed)
    assert lines(p) == ["~ route 198.51.100.7/32 via 192.0.2.1 dev eth0"]
    assert isinstance(p.changes[0], RouteSet) and p.changes[0].replace
    assert [c.subject for c in p.conflicts] == ["route 203.0.113.0/24 dev eth0"]


def test_ipv6_default_metric_matches_the_kernels_1024() -> None:
    route = Route(NET("::/0"))
    observed = Observed(links=(parent_link(),),
                        routes=(ObservedRoute(None, 2, Route(NET("::/0"), None, 1024), RT_PROTO),))
    assert plan(spec_of(routes=(route,)), observed).empty


def test_neighbors_replace_learned_and_ours_refuse_foreign_permanent() -> None:
    a, b, c = IP("192.0.2.10"), IP("192.0.2.11"), IP("192.0.2.12")
    observed = Observed(links=(parent_link(),), neighbors=(
        ObservedNeighbor(None, 2, Neighbor(a, "02:00:00:00:00:aa"), False, None),  # learned
        ObservedNeighbor(None, 2, Neighbor(b, "02:00:00:00:00:bb"), True, RT_PROTO),  # ours, stale lladdr
        ObservedNeighbor(None, 2, Neighbor(c, "02:00:00:00:00:cc"), True, None),  # someone's permanent
    ))
    wanted = tuple(Neighbor(x, MAC) for x in (a, b, c))
    p = plan(spec_of(neighbors=wanted), observed)
    assert [c.describe() for c in p.changes] == [
        f"~ neighbor 192.0.2.10 lladdr {MAC} dev eth0",
        f"~ neighbor 192.0.2.11 lladdr {MAC} dev eth0",
    ]
    assert all(isinstance(x, NeighborSet) and x.replace for x in p.changes)
    assert [x.subject for x in p.conflicts] == ["neighbor 192.0.2.12 dev eth0"]


def test_incomplete_neighbor_entry_is_replaced_not_added() -> None:
    """A failed ARP attempt leaves an entry without lladdr: an add would fail with EEXIST."""
    observed = Observed(links=(parent_link(),), neighbors=(
        ObservedNeighbor(None, 2, Neighbor(IP("192.0.2.10"), ""), False, None),))
    p = plan(spec_of(neighbors=(Neighbor(IP("192.0.2.10"), MAC),)), observed)
    assert len(p.changes) == 1 and isinstance(p.changes[0], NeighborSet) and p.changes[0].replace


def test_pruned_route_and_neighbor_of_a_kept_device() -> None:
    observed = replace(converged_web(), neighbors=(
        ObservedNeighbor("web", 7, Neighbor(IP("192.0.2.1"), MAC), True, RT_PROTO),))
    p = plan(spec_of(replace(WEB, routes=())), observed)
    assert [type(c) for c in p.changes] == [NeighborDelete, RouteDelete]


def test_mtu_unset_is_not_managed() -> None:
    observed = replace(converged_web(), links=(parent_link(), ipvlan("web0", 7, "web", mtu=1280)))
    assert plan(spec_of(WEB), observed).empty


def test_address_delete_and_link_mtu_types() -> None:
    observed = replace(converged_web(), links=(parent_link(), ipvlan("web0", 7, "web", mtu=1280)))
    p = plan(spec_of(replace(WEB, mtu=1500, addresses=())), observed)
    assert [type(c) for c in p.changes] == [LinkMtuSet, AddressDelete, AddressDelete]


def test_plan_scales_linearly() -> None:
    """Not a timing test: checks the planner converges a large converged state to an empty plan."""
    n = 2000
    devices = tuple(Device(f"d{i}", "eth0", f"ns{i % 100}", (IF(f"10.{i // 250}.{i % 250}.1/32"),))
                    for i in range(n))
    links = [parent_link()] + [ipvlan(f"d{i}", 100 + i, f"ns{i % 100}") for i in range(n)]
    addresses = [ObservedAddress(f"ns{i % 100}", 100 + i, IF(f"10.{i // 250}.{i % 250}.1/32")) for i in range(n)]
    observed = Observed(frozenset(f"ns{i}" for i in range(100)), tuple(links), tuple(addresses))
    assert plan(spec_of(*devices), observed).empty


# ---------------------------------------------------------------- a partial view (the daemon's repairs)

API = Device("api0", "eth0", "api", (IF("192.0.2.20/24"),), None, State.UP)


WEB1 = Device("web1", "eth0", "web")


def test_partial_view_plans_only_the_namespaces_it_read() -> None:
    # web0 is gone from "web" (the event came from there); "api" was not read: api0 is unknown there,
    # not absent, so nothing is planned for it. web1, in view, shows the port's mode.
    observed = Observed(namespaces=frozenset({"web", "api"}), links=(parent_link(), ipvlan("web1", 8, "web")),
                        scanned=frozenset({None, "web"}), scope=frozenset({None, "web"}))
    p = plan(spec_of(WEB, WEB1, API), observed)
    assert {c.device for c in p.changes} == {("web", "web0")}
    assert p.needs_full_view is None
    # The full view of the same kernel creates both.
    full = plan(spec_of(WEB, WEB1, API), replace(observed, scope=None, scanned=frozenset({None, "web", "api"})))
    assert {c.device for c in full.changes} == {("web", "web0"), ("api", "api0")}


def test_partial_view_never_creates_on_a_parent_whose_mode_it_cannot_see() -> None:
    # No ipvlan of eth0 in view: creating web0 would set the port's mode for siblings out of view
    # (a foreign one in another mode, say), so the plan asks for the whole picture.
    observed = Observed(namespaces=frozenset({"web", "other"}), links=(parent_link(),),
                        scanned=frozenset({None, "web"}), scope=frozenset({None, "web"}))
    p = plan(spec_of(WEB), observed)
    assert p.needs_full_view is not None and "eth0" in p.needs_full_view
    assert not any(isinstance(c, LinkCreate) for c in p.changes)
    # The full view sees the foreign sibling in another mode: a conflict, nothing created.
    full = plan(spec_of(WEB), replace(observed, scope=None, links=(
        parent_link(), ipvlan("theirs0", 9, "other", mode=Mode.L3, owned=False))))
    assert full.needs_full_view is None and full.conflicts[0].subject == "parent eth0"
    assert not any(isinstance(c, LinkCreate) for c in full.changes)


def test_partial_view_never_decides_a_parents_mode() -> None:
    # A sibling seen in view has another mode: changing it would reach siblings out of view, foreign
    # ones included, so the partial plan asks for the whole picture instead of re-moding the port.
    observed = Observed(namespaces=frozenset({"web", "api"}),
                        links=(parent_link(), ipvlan("web0", 7, "web", mode=Mode.L2)),
                        scanned=frozenset({None, "web"}), scope=frozenset({None, "web"}))
    p = plan(spec_of(WEB), observed)
    assert p.needs_full_view is not None and "eth0" in p.needs_full_view
    assert not any(isinstance(c, PortModeSet) for c in p.changes)
    full = plan(spec_of(WEB), replace(observed, scope=None))
    assert full.needs_full_view is None
    assert [type(c) for c in full.changes if isinstance(c, PortModeSet)] == [PortModeSet]


def test_partial_view_prunes_only_what_it_saw() -> None:
    # An owned device left in "web" is pruned; nothing is said about namespaces out of view.
    observed = Observed(namespaces=frozenset({"web"}),
                        links=(parent_link(), ipvlan("web0", 7, "web"), ipvlan("old0", 8, "web")),
                        scanned=frozenset({None, "web"}), scope=frozenset({None, "web"}))
    p = plan(spec_of(replace(WEB, addresses=(), routes=())), observed)
    assert [(type(c), c.device) for c in p.changes] == [(LinkDelete, ("web", "old0"))]


def test_partial_view_of_a_missing_namespace_creates_it() -> None:
    observed = Observed(namespaces=frozenset({"api"}), links=(parent_link(), ipvlan("app0", 8)),
                        scanned=frozenset({None}), scope=frozenset({None, "web"}))
    p = plan(spec_of(WEB, API, Device("app0", "eth0")), observed)
    assert [type(c) for c in p.changes][:2] == [NamespaceCreate, LinkCreate]
    assert {c.device for c in p.changes if c.device is not None} == {("web", "web0")}


# ---------------------------------------------------------------- issue 11/12: a fixed point on real hosts


def test_ipv6_metric_0_is_the_kernels_1024() -> None:
    # The kernel stores metric 0 of an IPv6 route as 1024 (normalize): no delete/re-add loop.
    observed = Observed(links=(parent_link(),),
                        routes=(ObservedRoute(None, 2, Route(NET("2001:db8:1::/64"), None, 1024), RT_PROTO),))
    assert plan(spec_of(routes=(Route(NET("2001:db8:1::/64"), metric=0),)), observed).empty
    v4 = Observed(links=(parent_link(),), routes=(ObservedRoute(None, 2, Route(NET("10.1.0.0/16")), RT_PROTO),))
    assert plan(spec_of(routes=(Route(NET("10.1.0.0/16"), metric=0),)), v4).empty  # IPv4: 0 is 0


def renumbered(*addresses: str) -> Observed:
    base = converged_web()
    return replace(base, addresses=tuple(ObservedAddress("web", 7, IF(a)) for a in addresses))


def test_renumbering_adds_before_it_deletes() -> None:
    # [.10, .11] -> [.12, .11]: .12 is there before .10 (the primary) goes, so .11 never is alone
    # with a primary being deleted (and promote_secondaries keeps it: see the kernel test).
    observed = renumbered("192.0.2.10/24", "192.0.2.11/24")
    p = plan(spec_of(replace(WEB, addresses=(IF("192.0.2.12/24"), IF("192.0.2.11/24")))), observed)
    assert lines(p) == ["+ address 192.0.2.12/24 dev web0 netns web", "- address 192.0.2.10/24 dev web0 netns web"]


def test_an_address_moving_to_a_sibling_is_deleted_before_it_is_added() -> None:
    # Two ipvlans of one port cannot hold one IP (EADDRINUSE): this delete must come first.
    api = Device("api0", "eth0", "web", (IF("192.0.2.10/24"),))
    observed = replace(renumbered("192.0.2.10/24", "192.0.2.11/24"),
                       links=(parent_link(), ipvlan("web0", 7, "web"), ipvlan("api0", 8, "web")))
    p = plan(spec_of(replace(WEB, addresses=(IF("192.0.2.11/24"),)), api), observed)
    assert lines(p) == ["- address 192.0.2.10/24 dev web0 netns web", "+ address 192.0.2.10/24 dev api0 netns web"]


def test_promote_secondaries_is_set_on_a_kept_device_before_any_deletion() -> None:
    observed = replace(renumbered("192.0.2.10/24", "192.0.2.11/24"),
                       links=(parent_link(), ipvlan("web0", 7, "web", sysctls=((PROMOTE_SECONDARIES, 0),))))
    p = plan(spec_of(replace(WEB, addresses=(IF("192.0.2.11/24"),))), observed)
    assert lines(p) == ["~ link web0 netns web ipv4.promote_secondaries 0 -> 1",
                        "- address 192.0.2.10/24 dev web0 netns web"]


def test_ipv6_sysctls_are_set_after_a_create_and_before_up_and_repaired_in_place() -> None:
    static = replace(WEB, sysctls=(("ipv6.accept_ra", 0), ("ipv6.autoconf", 0)))
    p = plan(spec_of(static), Observed(links=(parent_link(),)))
    assert [type(c) for c in p.changes] == [NamespaceCreate, LinkCreate, LinkSysctlSet, LinkSysctlSet, LinkSysctlSet,
                                            AddressAdd, AddressAdd, LinkStateSet, RouteSet]
    assert lines(p)[2] == "~ link web0 netns web ipv6.accept_ra ? -> 0"
    kept = ipvlan("web0", 7, "web", sysctls=((PROMOTE_SECONDARIES, 1), ("ipv6.accept_ra", 1), ("ipv6.autoconf", 0),
                                           (KEEP_ADDR_ON_DOWN, 1)))
    observed = replace(converged_web(), links=(parent_link(), kept))
    assert lines(plan(spec_of(static), observed)) == ["~ link web0 netns web ipv6.accept_ra 1 -> 0"]
    on = replace(WEB, sysctls=(("ipv6.accept_ra", 1),))
    two = ipvlan("web0", 7, "web", sysctls=((PROMOTE_SECONDARIES, 1), ("ipv6.accept_ra", 2), (KEEP_ADDR_ON_DOWN, 1)))
    assert plan(spec_of(on), replace(converged_web(), links=(parent_link(), two))).empty  # 2 is on too


def test_dynamic_addresses_are_left_alone() -> None:
    # SLAAC/temporary/DHCP addresses have a finite lifetime: another agent's (nmstate, ifstate agree).
    base = converged_web()
    slaac = ObservedAddress("web", 7, IF("2001:db8:ab::200:ff:fe00:1/64"), dynamic=True)
    p = plan(spec_of(WEB), replace(base, addresses=(*base.addresses, slaac)))
    assert p.empty and not p.conflicts


def test_an_address_whose_dad_failed_is_readded_and_reported() -> None:
    base = converged_web()
    failed = ObservedAddress("web", 7, IF("2001:db8::10/64"), dad_failed=True)
    addresses = (*(a for a in base.addresses if a.address != IF("2001:db8::10/64")), failed)
    p = plan(spec_of(WEB), replace(base, addresses=addresses))
    assert lines(p) == ["- address 2001:db8::10/64 dev web0 netns web (DAD failed: a duplicate on the link; re-added)",
                        "+ address 2001:db8::10/64 dev web0 netns web"]
    assert [c.subject for c in p.conflicts] == ["address 2001:db8::10/64 dev web0 netns web"]
    assert "duplicate" in p.conflicts[0].message


def test_an_address_still_in_dad_is_in_place_and_settling_not_a_change() -> None:
    base = converged_web()
    tentative = ObservedAddress("web", 7, IF("2001:db8::10/64"), tentative=True)
    addresses = (*(a for a in base.addresses if a.address != IF("2001:db8::10/64")), tentative)
    p = plan(spec_of(WEB), replace(base, addresses=addresses))
    assert p.empty and not p.conflicts
    assert [s.describe() for s in p.settling] == [
        "address 2001:db8::10/64 dev web0 netns web: IPv6 duplicate address detection in progress"]
    assert [s.netns for s in p.settling] == ["web"]
    assert not plan(spec_of(WEB), base).settling


def test_a_tentative_address_on_a_down_device_is_not_settling() -> None:
    """Review finding: DAD waits for the device to be up, so a down device's IPv6 address stays
    tentative for good, and wait-online waited for it forever."""
    base = converged_web()
    tentative = ObservedAddress("web", 7, IF("2001:db8::10/64"), tentative=True)
    addresses = (*(a for a in base.addresses if a.address != IF("2001:db8::10/64")), tentative)
    links = tuple(replace(x, up=False) if x.name == "web0" else x for x in base.links)
    p = plan(spec_of(replace(WEB, state=State.DOWN, routes=())), replace(base, addresses=addresses, links=links))
    assert not p.settling
    assert plan(spec_of(WEB), replace(base, addresses=addresses)).settling  # up: it is


def test_a_route_in_conflict_names_its_protocol_as_iproute2_does() -> None:
    observed = Observed(links=(parent_link(),), routes=(
        ObservedRoute(None, 2, Route(NET("203.0.113.0/24")), 4),
        ObservedRoute(None, 2, Route(NET("::/0"), IP("fe80::1"), 1024), 9),
        ObservedRoute(None, 2, Route(NET("198.51.100.0/24")), 77)))
    p = plan(spec_of(routes=(Route(NET("203.0.113.0/24")), Route(NET("::/0")), Route(NET("198.51.100.0/24")))),
             observed)
    messages = [c.message for c in p.conflicts]
    assert "(proto static)" in messages[0]
    assert "(proto ra)" in messages[1] and "accept_ra: false" in messages[1]
    assert "(proto 77)" in messages[2]


def test_our_route_in_place_beside_a_router_advertisements_is_not_fought() -> None:
    ours = ObservedRoute(None, 2, Route(NET("::/0"), None, 1024), RT_PROTO)
    ra = ObservedRoute(None, 2, Route(NET("::/0"), IP("fe80::1"), 1024), 9)
    p = plan(spec_of(routes=(Route(NET("::/0")),)), Observed(links=(parent_link(),), routes=(ours, ra)))
    assert p.empty and not p.conflicts


def test_a_leftover_temporary_device_is_no_foreign_sibling_for_a_mode_change() -> None:
    observed = replace(converged_web(), links=(parent_link(), ipvlan("web0", 7, "web", mode=Mode.L2),
                                               ipvlan("ipvtmp-0badc0de", 11, "web", mode=Mode.L2, owned=False)))
    p = plan(spec_of(WEB), observed)
    assert not p.conflicts
    assert lines(p) == ["- link ipvtmp-0badc0de netns web (leftover of an interrupted create)",
                        "~ parent eth0 mode l2 -> l3s"]
    assert isinstance(p.changes[1], PortModeSet) and p.changes[1].via == ("web", "web0")


def test_a_renamed_parent_keeps_its_devices_pending_not_deleted() -> None:
    # eth0 was renamed eth9 outside ipvland (same ifindex): the spec's devices sit on eth9 now.
    app = Device("app0", "eth0", None, (IF("192.0.2.11/24"),), neighbors=(Neighbor(IP("192.0.2.1"), MAC),))
    base = converged_web()
    observed = replace(
        base, links=(parent_link("eth9"), ipvlan("web0", 7, "web", parent="eth9"), ipvlan("app0", 8, parent="eth9"),
                     ipvlan("gone0", 9, parent="eth9")),
        addresses=(*base.addresses, ObservedAddress(None, 8, IF("192.0.2.11/24"))),
        routes=(*base.routes, ObservedRoute(None, 2, Route(NET("198.51.100.7/32")), RT_PROTO)),
        neighbors=(ObservedNeighbor(None, 8, Neighbor(IP("192.0.2.1"), MAC), True, RT_PROTO),
                   ObservedNeighbor(None, 2, Neighbor(IP("192.0.2.50"), MAC), True, RT_PROTO)))
    p = plan(spec_of(WEB, app, routes=(Route(NET("198.51.100.7/32")),),
                     neighbors=(Neighbor(IP("192.0.2.50"), MAC),)), observed)
    assert lines(p) == ["- link gone0 (not in the spec)"]  # on the renamed parent, but in no spec
    assert [c.subject for c in p.pending] == ["parent eth0"]
    assert "web0 netns web, app0 found on parent eth9" in p.pending[0].message


def test_show_leaves_out_dynamic_addresses_and_keeps_ipv6_settings_that_are_off() -> None:
    import yaml

    from ipvland import spec as spec_mod
    from ipvland.show import to_document

    base = converged_web()
    web0 = ipvlan("web0", 7, "web", sysctls=((PROMOTE_SECONDARIES, 1), ("ipv6.accept_ra", 0), ("ipv6.autoconf", 1),
                                            (KEEP_ADDR_ON_DOWN, 1)))
    slaac = ObservedAddress("web", 7, IF("2001:db8:ab::1/64"), dynamic=True)
    observed = replace(base, links=(parent_link(), web0), addresses=(*base.addresses, slaac))
    doc = to_document(observed)
    device = doc["parents"]["eth0"]["devices"]["web0"]
    assert device["ipv6"] == {"accept_ra": False}
    assert "2001:db8:ab::1/64" not in device["addresses"]
    assert plan(spec_mod.loads(yaml.safe_dump(doc), "<show>"), observed).empty
