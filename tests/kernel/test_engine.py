"""The reconcile engine against a real kernel with IPVLAN (runs in the VM; see tests/run).

Live state is checked with iproute2 (`ip -j`), independently of ipvland's own netlink decoding.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from iproute import addrs, converge, ip, ipj, ipvlan_info, lab_setup, link, load, reconcile_once

from ipvland.kernel import Kernel
from ipvland.reconcile import reconcile


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Path]:
    yield from lab_setup(tmp_path)


WEB0_WEB1 = """
    version: 1
    parents:
      lab0:
        mode: l2
        devices:
          web0: {netns: web, addresses: [192.0.2.10/24]}
          web1: {netns: web, addresses: [192.0.2.11/24]}
    """


@pytest.mark.parametrize("mode", ["l2", "l3", "l3s"])
def test_create_each_mode_in_namespace_and_parent_namespace(lab: Path, mode: str) -> None:
    spec = load(lab, f"""
        version: 1
        parents:
          lab0:
            mode: {mode}
            devices:
              web0: {{netns: web, addresses: [192.0.2.10/24, "2001:db8::10/64"], mtu: 1400}}
              app0: {{addresses: [192.0.2.11/24]}}
        """)
    converge(spec)
    for name, ns in (("web0", "web"), ("app0", None)):
        info = ipvlan_info(name, ns)
        assert info["mode"] == mode
        got = link(name, ns)
        assert got is not None and got.get("ifalias") == "ipvland"
        assert "UP" in got["flags"]
    assert addrs("web0", "web") == {"192.0.2.10/24", "2001:db8::10/64"}
    assert link("web0", "web")["mtu"] == 1400  # type: ignore[index]
    assert link("web0") is None, "the device must be moved out of the parent's namespace"
    assert not [x for x in ipj("link", "show") if x["ifname"].startswith("ipvtmp-")]


def test_in_place_mode_flags_mtu_state_keep_ifindex(lab: Path) -> None:
    base = """
        version: 1
        parents:
          lab0:
            mode: {mode}
            flags: {flags}
            devices:
              web0: {{netns: web, mtu: {mtu}, state: {state}}}
              web1: {{netns: web}}
        """
    converge(load(lab, base.format(mode="l2", flags="bridge", mtu=1500, state="up")))
    index = link("web0", "web")["ifindex"]  # type: ignore[index]
    report = converge(load(lab, base.format(mode="l3s", flags="private", mtu=1300, state="down")))
    lines = [o.change.describe() for o in report.outcomes]
    assert sum(line.startswith("~ parent lab0") for line in lines) == 1, lines
    assert not any(line.startswith(("+ link", "- link")) for line in lines), lines
    after = link("web0", "web")
    assert after is not None and after["ifindex"] == index
    assert after["mtu"] == 1300 and "UP" not in after["flags"]
    for name in ("web0", "web1"):
        info = ipvlan_info(name, "web")
        assert info["mode"] == "l3s" and "private" in json.dumps(info)


def test_addresses_added_and_removed_ipv6_included(lab: Path) -> None:
    base = """
        version: 1
        parents:
          lab0:
            mode: l2
            devices:
              web0: {{netns: web, addresses: [{addresses}]}}
        """
    converge(load(lab, base.format(addresses='192.0.2.10/24, "2001:db8::10/64"')))
    ip("addr", "add", "10.99.0.1/8", "dev", "web0", netns="web")  # someone else's: ours to remove
    converge(load(lab, base.format(addresses='192.0.2.20/24, "2001:db8::20/64", "2001:db8::21/64"')))
    assert addrs("web0", "web") == {"192.0.2.20/24", "2001:db8::20/64", "2001:db8::21/64"}


def test_routes_with_and_without_gateway_in_both_namespaces(lab: Path) -> None:
    spec = load(lab, """
        version: 1
        parents:
          lab0:
            mode: l3
            routes:
              - to: 198.51.100.7/32
              - to: 203.0.113.0/24
                via: 192.0.2.1
                metric: 50
            devices:
              web0:
                netns: web
                addresses: [192.0.2.10/24, "2001:db8::10/64"]
                routes:
                  - to: default
                  - to: "2001:db8:1::/64"
                    via: "2001:db8::1"
        """)
    ip("addr", "add", "192.0.2.2/24", "dev", "lab0")  # so that 192.0.2.1 is reachable as a gateway
    converge(spec)
    root = {r["dst"]: r for r in ipj("route", "show", "proto", "212")}
    assert set(root) == {"198.51.100.7", "203.0.113.0/24"}
    assert root["203.0.113.0/24"]["gateway"] == "192.0.2.1" and root["203.0.113.0/24"]["metric"] == 50
    inside = ipj("route", "show", "proto", "212", netns="web")
    assert [r["dst"] for r in inside] == ["default"]
    inside6 = ipj("-6", "route", "show", "proto", "212", netns="web")
    assert [(r["dst"], r.get("gateway")) for r in inside6] == [("2001:db8:1::/64", "2001:db8::1")]
    # a route leaves the spec: it is removed, the others stay
    spec2 = load(lab, """
        version: 1
        parents:
          lab0:
            mode: l3
            routes: [{to: 198.51.100.7/32}]
            devices:
              web0: {netns: web, addresses: [192.0.2.10/24, "2001:db8::10/64"], routes: [{to: default}]}
        """)
    converge(spec2)
    assert [r["dst"] for r in ipj("route", "show", "proto", "212")] == ["198.51.100.7"]
    assert ipj("-6", "route", "show", "proto", "212", netns="web") == []


def test_neighbors_on_parent_and_device(lab: Path) -> None:
    spec = load(lab, """
        version: 1
        parents:
          lab0:
            mode: l3
            neighbors: [{address: 192.0.2.50, lladdr: "02:00:00:00:00:50"},
                        {address: "2001:db8::50", lladdr: "02:00:00:00:00:51"}]
            devices:
              web0:
                netns: web
                addresses: [192.0.2.10/24]
                neighbors: [{address: 192.0.2.1, lladdr: "02:00:00:00:00:01"}]
        """)
    converge(spec)
    mine = {(n["dst"], n["lladdr"]) for n in ipj("neigh", "show", "dev", "lab0", "nud", "permanent")}
    assert mine == {("192.0.2.50", "02:00:00:00:00:50"), ("2001:db8::50", "02:00:00:00:00:51")}
    inside = ipj("neigh", "show", "dev", "web0", netns="web")
    assert [(n["dst"], n["lladdr"]) for n in inside] == [("192.0.2.1", "02:00:00:00:00:01")]
    # A MAC change flushes every neighbor entry on the device, permanent ones included: drift the
    # daemon sees (RTM_DELNEIGH of its protocol) and the next reconcile puts back.
    # The ipvlan takes the parent's new MAC, and its own table is flushed the same way.
    ip("link", "set", "lab0", "address", "02:00:00:00:0a:09")
    assert ipj("neigh", "show", "dev", "lab0", "nud", "permanent") == []
    assert ipj("neigh", "show", "dev", "web0", netns="web") == []
    assert [type(c).__name__ for c in reconcile_once(spec).plan.changes] == ["NeighborSet"] * 3
    assert {(n["dst"], n["lladdr"]) for n in ipj("neigh", "show", "dev", "lab0", "nud", "permanent")} == mine
    assert len(ipj("neigh", "show", "dev", "web0", netns="web")) == 1


def test_prune_removes_only_what_ipvland_owns(lab: Path) -> None:
    full = """
        version: 1
        parents:
          lab0:
            mode: l2
            routes: [{to: 198.51.100.7/32}]
            neighbors: [{address: 192.0.2.50, lladdr: "02:00:00:00:00:50"}]
            devices:
              web0: {netns: web, addresses: [192.0.2.10/24]}
              app0: {addresses: [192.0.2.11/24]}
        """
    converge(load(lab, full))
    # another tool's ipvlan, route and neighbor on the same parent
    ip("link", "add", "link", "lab0", "name", "theirs0", "type", "ipvlan", "mode", "l2")
    ip("route", "add", "198.51.100.8/32", "dev", "lab0", "proto", "static")
    ip("neigh", "add", "192.0.2.60", "lladdr", "02:00:00:00:00:60", "dev", "lab0", "nud", "permanent")
    report = converge(load(lab, "version: 1\nparents: {}\n"))
    assert len(report.outcomes) == 4  # two links, one route, one neighbor; addresses go with their link
    assert link("web0", "web") is None and link("app0") is None
    assert link("theirs0") is not None
    assert [r["dst"] for r in ipj("route", "show", "dev", "lab0", "proto", "static")] == ["198.51.100.8"]
    assert [n["dst"] for n in ipj("neigh", "show", "dev", "lab0", "nud", "permanent")] == ["192.0.2.60"]
    assert link("lab0") is not None, "a parent is never deleted"


def test_foreign_device_with_spec_name_is_an_error_and_others_converge(lab: Path) -> None:
    ip("netns", "add", "web")
    ip("link", "add", "web0", "netns", "web", "type", "veth", "peer", "name", "foreign0")
    report = reconcile_once(load(lab, WEB0_WEB1))
    assert not report.ok
    assert [c.subject for c in report.plan.conflicts] == ["link web0 netns web"]
    veth = link("web0", "web")
    assert veth is not None and veth["linkinfo"]["info_kind"] == "veth" and addrs("web0", "web") == set()
    assert ipvlan_info("web1", "web")["mode"] == "l2" and addrs("web1", "web") == {"192.0.2.11/24"}


def test_missing_parent_fails_its_devices_and_others_converge(lab: Path) -> None:
    spec = load(lab, """
        version: 1
        parents:
          nosuch0:
            mode: l2
            devices: {lost0: {netns: lost}}
          lab0:
            mode: l2
            devices: {web0: {netns: web}}
        """)
    report = reconcile_once(spec)
    assert not report.ok
    assert [p.subject for p in report.plan.pending] == ["parent nosuch0"]
    assert link("web0", "web") is not None


def test_kernel_error_is_reported_per_object_with_the_kernels_reason(lab: Path) -> None:
    # The same address on two ipvlans of one parent, one of them foreign: EADDRINUSE from the kernel.
    ip("link", "add", "link", "lab0", "name", "theirs0", "type", "ipvlan", "mode", "l2")
    ip("addr", "add", "192.0.2.10/24", "dev", "theirs0")
    report = reconcile_once(load(lab, WEB0_WEB1))
    failed = [o for o in report.failures if not o.skipped]
    assert len(failed) == 1 and "192.0.2.10/24" in failed[0].change.describe()
    assert failed[0].error is not None and "in use" in failed[0].error.lower()
    # The extended ACK says why, next to strerror (NETLINK_EXT_ACK on ipvland's socket).
    assert "Address already assigned to an ipvlan device" in failed[0].error
    assert addrs("web1", "web") == {"192.0.2.11/24"}


def test_a_scoped_reconcile_reads_and_repairs_only_its_namespaces(lab: Path) -> None:
    # The daemon's drift repair: only the namespace the event came from is read (and ipvland's own),
    # which is what keeps a repair fast with a hundred namespaces.
    spec = load(lab, """
        version: 1
        parents:
          lab0:
            mode: l3s
            devices:
              web0: {netns: web, addresses: [192.0.2.10/24]}
              web1: {netns: web, addresses: [192.0.2.12/24]}
              api0: {netns: api, addresses: [192.0.2.11/24]}
        """)
    converge(spec)
    ip("link", "del", "web0", netns="web")
    ip("link", "del", "api0", netns="api")  # drift the scoped reconcile is not told about
    with Kernel() as kernel:
        report = reconcile(spec, kernel, scope=frozenset({"web"}))
        assert report.ok, json.dumps(report.to_json(), indent=1)
        assert kernel.dumps["api"] == 0 and kernel.dumps["web"] > 0
    assert addrs("web0", "web") == {"192.0.2.10/24"}
    assert link("api0", "api") is None  # out of scope: left for the full reconcile
    converge(spec)
    assert addrs("api0", "api") == {"192.0.2.11/24"}


def test_a_repair_elsewhere_leaves_the_hosts_own_objects_to_their_own_events(lab: Path) -> None:
    """Issue 13: a scoped reconcile reads the host's links (the parents), not its neighbors, routes,
    addresses and rules, unless the host is in scope (an event there). So host drift no event was
    given for waits for the host's own repair, as drift in any other namespace out of scope does."""
    spec = load(lab, """
        version: 1
        parents:
          lab0:
            mode: l3s
            neighbors: [{address: 192.0.2.50, lladdr: "02:00:00:00:00:50"}]
            routes: [{to: 198.51.100.0/24}]
            devices:
              web0: {netns: web, addresses: [192.0.2.10/24]}
              hv0: {addresses: [192.0.2.30/24]}
        """)
    converge(spec)
    ip("neigh", "del", "192.0.2.50", "dev", "lab0")
    ip("addr", "flush", "dev", "hv0")
    ip("link", "del", "web0", netns="web")
    with Kernel() as kernel:
        report = reconcile(spec, kernel, scope=frozenset({"web"}))
        assert report.ok, json.dumps(report.to_json(), indent=1)
        assert kernel.dumps[None] == 2  # the host's links, before and in the verify: nothing else there
    assert addrs("web0", "web") == {"192.0.2.10/24"}  # repaired
    assert ipj("neigh", "show", "dev", "lab0", "nud", "permanent") == []  # not in view: untouched
    assert addrs("hv0") == set()
    assert [(r["dst"]) for r in ipj("route", "show", "proto", "212", "dev", "lab0")] == ["198.51.100.0/24"]
    with Kernel() as kernel:  # the host's own events: the host in scope
        report = reconcile(spec, kernel, scope=frozenset({None}))
        assert report.ok, json.dumps(report.to_json(), indent=1)
    assert [n["dst"] for n in ipj("neigh", "show", "dev", "lab0", "nud", "permanent")] == ["192.0.2.50"]
    assert addrs("hv0") == {"192.0.2.30/24"}


TWO_NAMESPACES = """
    version: 1
    parents:
      lab0:
        mode: l3s
        devices:
          web0: {netns: web}
          api0: {netns: api}
    """


def add_foreign_ipvlan(netns: str, mode: str) -> None:
    """Another tool's ipvlan theirs0 on lab0, in a namespace of its own (out of any scope used here)."""
    ip("netns", "add", netns)
    ip("link", "add", "link", "lab0", "name", "theirs0", "netns", netns, "type", "ipvlan", "mode", mode)


def test_a_scoped_reconcile_widens_when_a_parents_mode_drifted(lab: Path) -> None:
    # A mode change reaches every sibling, in namespaces out of scope too (and a foreign one there
    # would make it a conflict): that decision is taken from a full view.
    spec = load(lab, TWO_NAMESPACES)
    converge(spec)
    ip("link", "set", "web0", "type", "ipvlan", "mode", "l2", netns="web")
    assert ipvlan_info("api0", "api")["mode"] == "l2"  # the port's mode: every sibling changed
    add_foreign_ipvlan("other", "l2")
    with Kernel() as kernel:
        report = reconcile(spec, kernel, scope=frozenset({"web"}))
        assert kernel.dumps["other"] > 0  # it looked everywhere before deciding
    assert [c.subject for c in report.plan.conflicts] == ["parent lab0"]
    assert not report.outcomes  # nothing re-moded: theirs0 would have changed too
    assert ipvlan_info("theirs0", "other")["mode"] == "l2"


def test_a_scoped_reconcile_never_creates_on_a_parent_whose_mode_it_cannot_see(lab: Path) -> None:
    # web0 alone in its namespace is deleted; the parent's mode meanwhile went l3s -> l3 through a
    # foreign sibling in a namespace out of scope (no flag changes, so no event where ipvland
    # listens). Re-creating web0 in l3s from the partial view would re-mode the foreign device.
    spec = load(lab, TWO_NAMESPACES)
    converge(spec)
    add_foreign_ipvlan("other", "l3s")
    ip("link", "set", "theirs0", "type", "ipvlan", "mode", "l3", netns="other")
    ip("link", "del", "web0", netns="web")
    with Kernel() as kernel:
        report = reconcile(spec, kernel, scope=frozenset({"web"}))
        assert kernel.dumps["other"] > 0
    assert [c.subject for c in report.plan.conflicts][:1] == ["parent lab0"]
    assert link("web0", "web") is None and not report.outcomes
    assert ipvlan_info("theirs0", "other")["mode"] == "l3"
