"""Issue 15 item 2: route attributes (type, onlink, scope, mtu, multipath) in the loader, the planner
and `show`, on plain data. The kernel side is tests/kernel/test_route_attrs.py."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
import yaml

from ipvland import spec as spec_mod
from ipvland.model import (
    RT_PROTO,
    Device,
    Nexthop,
    Observed,
    ObservedRoute,
    Route,
    RouteDelete,
    RouteSet,
)
from ipvland.plan import plan
from ipvland.show import to_document
from tests.unit.test_plan import ipvlan, parent_link, spec_of
from tests.unit.test_spec import errors_of, expect, write

NET = ipaddress.ip_network
IP = ipaddress.ip_address
IF = ipaddress.ip_interface


def routes_of(tmp_path: Path, *routes: str) -> tuple[Route, ...]:
    body = "".join(f"      - {r}\n" for r in routes)
    return spec_mod.load(write(tmp_path, f"version: 1\nparents:\n  eth0:\n    routes:\n{body}")).parents[0].routes


def test_every_attribute_is_read(tmp_path: Path) -> None:
    got = routes_of(
        tmp_path,
        "{to: 10.1.0.0/16, type: blackhole}",
        "{to: '2001:db8:b::/48', type: prohibit, metric: 5}",
        "{to: 10.2.0.0/16, via: 203.0.113.1, onlink: true, mtu: 1400}",
        "{to: 10.3.0.0/16, scope: host}",
        "{to: 10.4.0.0/16, type: local}",
        "{to: 10.5.0.0/16, nexthops: [{via: 192.0.2.1}, {via: 192.0.2.2, weight: 3, dev: eth0}]}",
        "{to: 10.6.0.0/16, type: unicast, scope: global}",
    )
    assert got == (
        Route(NET("10.1.0.0/16"), type="blackhole"),
        Route(NET("2001:db8:b::/48"), metric=5, type="prohibit"),
        Route(NET("10.2.0.0/16"), IP("203.0.113.1"), onlink=True, mtu=1400),
        Route(NET("10.3.0.0/16"), scope=254),
        Route(NET("10.4.0.0/16"), type="local"),
        Route(NET("10.5.0.0/16"), nexthops=(Nexthop(IP("192.0.2.1")), Nexthop(IP("192.0.2.2"), "eth0", 3))),
        Route(NET("10.6.0.0/16"), scope=0),
    )
    assert got[2].describe() == "10.2.0.0/16 via 203.0.113.1 onlink mtu 1400"
    assert got[5].describe() == "10.5.0.0/16 nexthop via 192.0.2.1 nexthop via 192.0.2.2 dev eth0 weight 3"
    assert got[0].describe() == "blackhole 10.1.0.0/16"


@pytest.mark.parametrize(("route", "key", "fragment"), [
    ("{to: 10.0.0.0/8, type: blackhole, via: 192.0.2.1}", "via", "a blackhole route has no via"),
    ("{to: 10.0.0.0/8, type: local, nexthops: [{via: 192.0.2.1}, {via: 192.0.2.2}]}", "nexthops",
     "a local route has no nexthops"),
    ("{to: 10.0.0.0/8, onlink: true}", "onlink", "onlink needs a gateway"),
    ("{to: '2001:db8::/32', scope: link}", "scope", "IPv6 routes have no scope"),
    ("{to: 10.0.0.0/8, via: 192.0.2.1, scope: link}", "scope", "a gateway needs scope global"),
    ("{to: '2001:db8::/32', mtu: 1279}", "mtu", "below 1280"),
    ("{to: 10.0.0.0/8, mtu: 65521}", "mtu", "between 68 and 65520"),
    ("{to: 10.0.0.0/8, via: 192.0.2.1, nexthops: [{via: 192.0.2.1}, {via: 192.0.2.2}]}", "nexthops",
     "either 'via' or 'nexthops'"),
    ("{to: 10.0.0.0/8, nexthops: [{via: 192.0.2.1}]}", "nexthops", "needs at least 2 items, not 1"),
    ("{to: 10.0.0.0/8, type: anycast}", "type", "anycast"),
])
def test_what_the_kernel_would_refuse_or_rewrite_is_an_error_at_its_key(tmp_path: Path, route: str, key: str,
                                                                       fragment: str) -> None:
    p = write(tmp_path, f"version: 1\nparents:\n  eth0:\n    routes:\n      - {route}\n")
    errors = [e for e in errors_of(p)
              if e.path == f"parents.eth0.routes[0].{key}"]
    assert errors and any(fragment in e.message for e in errors), [str(e) for e in errors]
    assert all(e.line == 5 for e in errors)


def test_ipv6_nexthop_needs_a_gateway_and_dev_must_be_in_the_namespace(tmp_path: Path) -> None:
    p = write(tmp_path, "version: 1\nparents:\n  eth0:\n    routes:\n"
                        "      - {to: '2001:db8::/32', nexthops: [{dev: eth0}, {via: '2001:db8::1'}]}\n")
    expect(p, 5, 42, "an IPv6 nexthop needs a gateway", epath="parents.eth0.routes[0].nexthops[0]")
    p = write(tmp_path, "version: 1\nparents:\n  eth0:\n    mode: l3s\n    devices:\n      web0:\n"
                        "        netns: web\n        routes:\n"
                        "          - {to: 10.0.0.0/8, nexthops: [{via: 192.0.2.1}, {via: 192.0.2.2, dev: eth0}]}\n")
    expect(p, 9, 13, "nexthop dev eth0 is not a device of the spec in netns web")


def _observed(*routes: ObservedRoute) -> Observed:
    return Observed(namespaces=frozenset({"web"}), links=(parent_link(), ipvlan("web0", 7, "web"),
                                                           ipvlan("web1", 8, "web")),
                    routes=routes, scanned=frozenset({None, "web"}))


MP = Route(NET("10.5.0.0/16"), nexthops=(Nexthop(IP("192.0.2.1")), Nexthop(IP("192.0.2.2"), "web1", 3)))
WEB0 = Device("web0", "eth0", "web", (IF("192.0.2.10/24"),), routes=(MP,))
WEB1 = Device("web1", "eth0", "web", (IF("192.0.2.11/24"),))
KERNEL_MP = Route(NET("10.5.0.0/16"), scope=0,  # as dumped: devices named, the other order
                  nexthops=(Nexthop(IP("192.0.2.2"), "web1", 3), Nexthop(IP("192.0.2.1"), "web0", 1)))


def _route_changes(p):  # type: ignore[no-untyped-def]
    return [c for c in p.changes if isinstance(c, RouteSet | RouteDelete)]


def test_multipath_as_the_kernel_reports_it_is_in_place() -> None:
    observed = _observed(ObservedRoute("web", 8, KERNEL_MP, RT_PROTO))
    assert _route_changes(plan(spec_of(WEB0, WEB1), observed)) == []


def test_a_new_weight_replaces_the_route_in_place() -> None:
    old = Route(NET("10.5.0.0/16"), scope=0,
                nexthops=(Nexthop(IP("192.0.2.1"), "web0"), Nexthop(IP("192.0.2.2"), "web1")))
    changes = _route_changes(plan(spec_of(WEB0, WEB1), _observed(ObservedRoute("web", 7, old, RT_PROTO))))
    assert len(changes) == 1 and isinstance(changes[0], RouteSet) and changes[0].replace
    assert changes[0].describe() == ("~ route 10.5.0.0/16 nexthop via 192.0.2.1 dev web0 nexthop via 192.0.2.2 "
                                     "dev web1 weight 3 netns web")


@pytest.mark.parametrize("old", [
    Route(NET("10.1.0.0/16"), type="unreachable", scope=0),  # another type
    Route(NET("10.1.0.0/16"), type="blackhole", scope=0, mtu=1400),  # another mtu
])
def test_type_and_mtu_change_in_place(old: Route) -> None:
    new = Route(NET("10.1.0.0/16"), type="blackhole")
    web = Device("web0", "eth0", "web", routes=(new,))
    observed = _observed(ObservedRoute("web", 0, old, RT_PROTO))
    assert _route_changes(plan(spec_of(web), observed)) == [RouteSet("web", "web0", new, replace=True)]
    same = _observed(ObservedRoute("web", 0, Route(NET("10.1.0.0/16"), type="blackhole", scope=0), RT_PROTO))
    assert _route_changes(plan(spec_of(web), same)) == []


def test_a_reject_route_of_ours_leaving_the_spec_is_deleted_without_a_device() -> None:
    gone = Route(NET("10.1.0.0/16"), type="prohibit", scope=0)
    changes = _route_changes(plan(spec_of(WEB1), _observed(ObservedRoute("web", 0, gone, RT_PROTO))))
    assert changes == [RouteDelete("web", "", gone)]
    assert changes[0].describe() == "- route prohibit 10.1.0.0/16 netns web"


def test_scope_defaults_compare_equal_to_what_the_kernel_stores() -> None:
    spec_routes = (Route(NET("10.3.0.0/16")), Route(NET("10.4.0.0/16"), type="local"),
                   Route(NET("10.6.0.0/16"), IP("192.0.2.1")))
    kernel = (Route(NET("10.3.0.0/16"), scope=253), Route(NET("10.4.0.0/16"), type="local", scope=254),
              Route(NET("10.6.0.0/16"), IP("192.0.2.1"), scope=0))
    web = Device("web0", "eth0", "web", routes=spec_routes)
    observed = _observed(*(ObservedRoute("web", 7, r, RT_PROTO) for r in kernel))
    assert _route_changes(plan(spec_of(web), observed)) == []


def test_show_round_trips_every_attribute(tmp_path: Path) -> None:
    kernel = (Route(NET("10.3.0.0/16"), scope=254, mtu=1400),
              Route(NET("10.2.0.0/16"), IP("203.0.113.1"), onlink=True, scope=0, src=IP("192.0.2.10")),
              KERNEL_MP,
              Route(NET("2001:db8:6::/48"), IP("2001:db8::1"), scope=0, mtu=1300))
    observed = _observed(*(ObservedRoute("web", 7, r, RT_PROTO) for r in kernel),
                         ObservedRoute("web", 0, Route(NET("10.1.0.0/16"), type="blackhole", scope=0), RT_PROTO),
                         ObservedRoute(None, 0, Route(NET("10.7.0.0/16"), type="unreachable", scope=0), RT_PROTO))
    doc = to_document(observed)
    shown = doc["parents"]["eth0"]["devices"]["web0"]["routes"]
    assert {"to": "10.3.0.0/16", "scope": "host", "mtu": 1400} in shown
    assert {"to": "10.1.0.0/16", "type": "blackhole"} in shown
    assert doc["parents"]["eth0"]["routes"] == [{"to": "10.7.0.0/16", "type": "unreachable"}]
    path = tmp_path / "shown.yaml"
    path.write_text(yaml.safe_dump(doc))
    spec = spec_mod.load(path)
    assert _route_changes(plan(spec, observed)) == []
