"""ipvland.kernel against a real kernel with IPVLAN (tests/run runs these isolated, or in a VM).

Every test builds on a veth pair p0/peer0 in the test's own namespace; deleting p0 deletes every
ipvlan on it, and named namespaces created here are deleted in the finalizer.
"""

from __future__ import annotations

import errno
import ipaddress
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import replace

import pytest

from ipvland.kernel import Kernel, KernelError, create_namespace, delete_namespace, list_namespaces
from ipvland.model import OWNER_ALIAS, RT_PROTO, Flag, Mode, Neighbor, ObservedLink, Route

ip4 = ipaddress.ip_interface
net = ipaddress.ip_network
addr = ipaddress.ip_address


@pytest.fixture
def lab(kernel: Kernel) -> Iterator[Lab]:
    # Fixed MACs: udev in the guest rewrites a random veth MAC a moment after creation.
    subprocess.run(["ip", "link", "add", "p0", "address", "02:00:00:00:00:01", "type", "veth",
                    "peer", "name", "peer0", "address", "02:00:00:00:00:02"], check=True)
    lab = Lab(kernel)
    try:
        yield lab
    finally:
        for ns in lab.namespaces:
            kernel.forget(ns)
            delete_namespace(ns)
        subprocess.run(["ip", "link", "del", "p0"], check=False)


class Lab:
    def __init__(self, kernel: Kernel) -> None:
        self.k = kernel
        self.namespaces: list[str] = []

    def netns(self) -> str:
        name = f"ipvt-{uuid.uuid4().hex[:6]}"
        self.namespaces.append(name)
        create_namespace(name)
        return name

    def link(self, name: str, netns: str | None = None) -> ObservedLink:
        found = [lk for lk in self.k.links(netns) if lk.name == name]
        assert found, f"{name} not found in {netns}"
        return found[0]


@pytest.mark.parametrize("flags", list(Flag), ids=lambda f: f.label)
@pytest.mark.parametrize("mode", list(Mode), ids=lambda m: m.label)
def test_create_reads_back_mode_flags_parent_alias_mtu(lab: Lab, mode: Mode, flags: Flag) -> None:
    before = lab.k.writes
    lab.k.create_ipvlan("p0", "t0", mode, flags, mtu=1400)
    lab.k.rename_link(None, "t0", "i0", OWNER_ALIAS)
    # Two requests: the kernel honours IFLA_MTU in RTM_NEWLINK create but ignores IFLA_IFALIAS, which
    # comes with the rename in one changelink.
    assert lab.k.writes == before + 2
    assert "t0" not in {lk.name for lk in lab.k.links(None)}
    links = {lk.name: lk for lk in lab.k.links(None)}
    i0, p0 = links["i0"], links["p0"]
    assert (i0.kind, i0.mode, i0.flags, i0.parent) == ("ipvlan", mode, flags, "p0")
    assert i0.alias == OWNER_ALIAS and i0.owned
    assert i0.mtu == 1400
    assert i0.mac == p0.mac == "02:00:00:00:00:01"  # an ipvlan always has its parent's MAC
    assert not i0.up
    assert p0.kind == "veth" and p0.mode is None and p0.parent is None


def test_port_mode_changes_in_place_for_all_siblings(lab: Lab) -> None:
    lab.k.create_ipvlan("p0", "i0", Mode.L2, Flag.BRIDGE)
    # A second create sends the mode too, so it must not re-mode i0 (a request without it means L3).
    lab.k.create_ipvlan("p0", "i1", Mode.L2, Flag.BRIDGE)
    assert lab.link("i0").mode is Mode.L2
    index0, index1 = lab.link("i0").index, lab.link("i1").index
    for mode, flags in [(Mode.L3S, Flag.PRIVATE), (Mode.L3, Flag.VEPA), (Mode.L2, Flag.BRIDGE)]:
        lab.k.set_port_mode(None, "i0", mode, flags)
        i0, i1 = lab.link("i0"), lab.link("i1")
        assert (i0.index, i1.index) == (index0, index1)  # changelink: same devices
        assert (i0.mode, i0.flags) == (i1.mode, i1.flags) == (mode, flags)


def test_a_namespace_deleted_and_re_created_under_its_name_is_read_anew(lab: Lab) -> None:
    # A cached socket would keep reading (and keep alive) the old namespace.
    ns = lab.netns()
    subprocess.run(["ip", "-n", ns, "link", "add", "old0", "type", "dummy"], check=True)
    assert "old0" in {lk.name for lk in lab.k.links(ns)}
    delete_namespace(ns)
    assert ns not in lab.k.list_namespaces()
    create_namespace(ns)
    subprocess.run(["ip", "-n", ns, "link", "add", "new0", "type", "dummy"], check=True)
    names = {lk.name for lk in lab.k.links(ns)}
    assert "new0" in names and "old0" not in names


def test_create_straight_into_a_namespace_then_name_and_alias(lab: Lab) -> None:
    ns = lab.netns()
    assert ns in list_namespaces()
    lab.k.create_ipvlan("p0", "web0", Mode.L3S, Flag.PRIVATE)  # beside the parent: no clash below
    before = lab.k.writes
    lab.k.create_ipvlan("p0", "ipvtmp-0001", Mode.L3S, Flag.PRIVATE, netns=ns)
    assert "ipvtmp-0001" not in {lk.name for lk in lab.k.links(None)}  # never beside the parent
    lab.k.rename_link(ns, "ipvtmp-0001", "web0", OWNER_ALIAS)
    assert lab.k.writes == before + 2
    assert lab.link("web0").alias is None  # the one beside the parent is untouched
    web0 = lab.link("web0", ns)
    assert web0.netns == ns
    assert (web0.kind, web0.alias, web0.parent) == ("ipvlan", OWNER_ALIAS, "p0")
    assert (web0.mode, web0.flags) == (Mode.L3S, Flag.PRIVATE)
    # Mode and flags are the parent's: changelink from inside the namespace reaches the port.
    lab.k.set_port_mode(ns, "web0", Mode.L2, Flag.VEPA)
    assert (lab.link("web0", ns).mode, lab.link("web0", ns).flags) == (Mode.L2, Flag.VEPA)
    # A fresh Kernel (no cached root dump) resolves the parent too.
    with Kernel() as fresh:
        assert [lk.parent for lk in fresh.links(ns) if lk.name == "web0"] == ["p0"]
    lab.k.set_mtu(ns, "web0", 1280)
    lab.k.set_up(ns, "web0", True)
    web0 = lab.link("web0", ns)
    assert web0.mtu == 1280 and web0.up
    lab.k.set_up(ns, "web0", False)
    assert not lab.link("web0", ns).up
    lab.k.delete_link(ns, "web0")
    assert "web0" not in {lk.name for lk in lab.k.links(ns)}


def test_addresses_routes_neighbors_roundtrip(lab: Lab) -> None:
    k = lab.k
    ns = lab.netns()
    k.set_up(None, "p0", True)
    k.create_ipvlan("p0", "tmp0", Mode.L3, Flag.BRIDGE, netns=ns)
    k.rename_link(ns, "tmp0", "db0")
    k.set_up(ns, "db0", True)
    index = lab.link("db0", ns).index
    a4, a6 = ip4("10.77.0.2/24"), ip4("fd77::2/64")
    for a in (a4, a6):
        k.add_address(ns, "db0", a)
    routes = [
        Route(net("0.0.0.0/0")),
        Route(net("10.78.0.0/16"), via=addr("10.77.0.1"), metric=5, table=100),
        Route(net("::/0"), metric=300),
        Route(net("fd78::/64"), via=addr("fd77::1"), table=100),
    ]
    for r in routes:
        k.set_route(ns, "db0", r, replace=False)
    neighbors = [Neighbor(addr("10.77.0.9"), "02:00:00:00:00:09"), Neighbor(addr("fd77::9"), "02:00:00:00:00:09")]
    for n in neighbors:
        k.set_neighbor(ns, "db0", n, replace=False)

    got_addrs = {a.address for a in k.addresses(ns) if a.ifindex == index}
    assert {a4, a6} <= got_addrs
    # The kernel reports each route's scope (rtm_scope): link for a route without a gateway, universe
    # (0) otherwise, where the spec says None (the default the planner compares through normalize).
    scopes = {replace(r.route, scope=None): r.route.scope for r in k.routes(ns) if r.owned}
    assert scopes[Route(net("0.0.0.0/0"))] == 253 and scopes[Route(net("::/0"), metric=300)] == 0, scopes
    ours = {replace(r.route, scope=None): r for r in k.routes(ns) if r.owned}
    assert set(ours) == {
        Route(net("0.0.0.0/0")),
        Route(net("10.78.0.0/16"), via=addr("10.77.0.1"), metric=5, table=100),
        Route(net("::/0"), metric=300),
        Route(net("fd78::/64"), via=addr("fd77::1"), metric=1024, table=100),  # metric as reported
    }
    assert all(r.ifindex == index and r.protocol == RT_PROTO for r in ours.values())
    assert not any(r.route.table == 255 for r in k.routes(ns))  # the local table is left out
    got_neigh = {n.neighbor: n for n in k.neighbors(ns) if n.owned}
    assert set(got_neigh) == set(neighbors)
    assert all(n.permanent and n.ifindex == index for n in got_neigh.values())

    # replace: same key, another lladdr / metric kept as key
    k.set_neighbor(ns, "db0", Neighbor(addr("10.77.0.9"), "02:00:00:00:00:0a"), replace=True)
    assert Neighbor(addr("10.77.0.9"), "02:00:00:00:00:0a") in {n.neighbor for n in k.neighbors(ns)}
    k.set_route(ns, "db0", Route(net("10.78.0.0/16"), via=addr("10.77.0.3"), metric=5, table=100), replace=True)
    assert Route(net("10.78.0.0/16"), via=addr("10.77.0.3"), metric=5, table=100) in {
        replace(r.route, scope=None) for r in k.routes(ns)}

    with pytest.raises(KernelError) as dup:
        k.set_route(ns, "db0", Route(net("0.0.0.0/0")))
    assert dup.value.errno == errno.EEXIST

    for r in k.routes(ns):
        if r.owned:
            k.delete_route(ns, "db0", r.route)
    for n in k.neighbors(ns):
        if n.owned:
            k.delete_neighbor(ns, "db0", n.neighbor)
    for a in (a4, a6):
        k.delete_address(ns, "db0", a)
    assert not any(r.owned for r in k.routes(ns))
    assert not any(n.owned for n in k.neighbors(ns))
    assert not {a4, a6} & {a.address for a in k.addresses(ns)}


def test_errors_are_kernel_errors_and_reads_write_nothing(lab: Lab) -> None:
    k = lab.k
    k.create_ipvlan("p0", "i0", Mode.L2, Flag.BRIDGE)
    before = k.writes
    with pytest.raises(KernelError) as e:
        k.create_ipvlan("p0", "i0", Mode.L2, Flag.BRIDGE)
    assert e.value.errno == errno.EEXIST
    assert str(e.value).startswith("create link i0: File exists")
    assert str(e.value).endswith("(EEXIST)")
    assert k.writes == before + 1  # a refused write was still sent
    with pytest.raises(KernelError) as e:
        k.create_ipvlan("nonexistent", "i9", Mode.L2, Flag.BRIDGE)
    assert e.value.errno == errno.ENODEV
    with pytest.raises(KernelError) as e:
        k.create_ipvlan("lo", "i9", Mode.L2, Flag.BRIDGE)  # not an Ethernet device
    assert "create link i9" in str(e.value)
    before = k.writes
    for ns in [None]:
        k.links(ns), k.addresses(ns), k.routes(ns), k.neighbors(ns)
    assert k.writes == before
