"""Issue 15 item 1: host-to-container reachability (etc/examples/host-access.yaml) and route `src`.

The kernel side is tests/kernel/test_host_access.py; here the loader, planner and show on plain data.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
import yaml

from ipvland import spec as spec_mod
from ipvland.model import RT_PROTO, Observed, ObservedLink, ObservedRoute, Route, RouteSet
from ipvland.plan import plan
from ipvland.show import to_document
from tests.unit.test_plan import ipvlan, parent_link, spec_of
from tests.unit.test_spec import expect, write

ROOT = Path(__file__).resolve().parents[2]
NET = ipaddress.ip_network
IP = ipaddress.ip_address


def test_the_example_loads_with_a_host_side_device_beside_its_parent() -> None:
    spec = spec_mod.load(ROOT / "etc" / "examples" / "host-access.yaml")
    host0 = next(d for d in spec.devices if d.name == "host0")
    assert host0.netns is None
    assert host0.routes[0] == Route(NET("192.0.2.10/32"), src=IP("192.0.2.2"))


def test_src_is_read_and_printed(tmp_path: Path) -> None:
    p = write(tmp_path, "version: 1\nparents:\n  eth0:\n    routes:\n"
                        "      - {to: 10.0.0.0/8, via: 192.0.2.1, src: 192.0.2.2}\n"
                        "      - {to: '2001:db8:1::/48', src: '2001:db8::2'}\n")
    routes = spec_mod.load(p).parents[0].routes
    assert routes == (Route(NET("10.0.0.0/8"), IP("192.0.2.1"), src=IP("192.0.2.2")),
                      Route(NET("2001:db8:1::/48"), src=IP("2001:db8::2")))
    assert routes[0].describe() == "10.0.0.0/8 via 192.0.2.1 src 192.0.2.2"


@pytest.mark.parametrize(("route", "col", "fragment"), [
    ("{to: 10.0.0.0/8, src: '2001:db8::1'}", 31, "source 2001:db8::1 is IPv6 but destination 10.0.0.0/8 is IPv4"),
    ("{to: 10.0.0.0/8, src: 10.0.0.0/8}", 31, "is not a source address"),
    ("{to: 10.0.0.0/8, src: 0.0.0.0}", 31, "is not a source address"),
])
def test_bad_src(tmp_path: Path, route: str, col: int, fragment: str) -> None:
    p = write(tmp_path, f"version: 1\nparents:\n  eth0:\n    routes:\n      - {route}\n")
    expect(p, 5, col, fragment, epath="parents.eth0.routes[0].src")


def test_two_sources_for_one_route_name_both_places(tmp_path: Path) -> None:
    p = write(tmp_path, "version: 1\nparents:\n  eth0:\n    routes:\n      - {to: 10.0.0.0/8, src: 192.0.2.1}\n"
                        "      - {to: 10.0.0.0/8, src: 192.0.2.2}\n")
    expect(p, 6, 9, "conflicts with route 10.0.0.0/8 src 192.0.2.1")


def _observed(route: Route) -> Observed:
    return Observed(links=(parent_link(),), routes=(ObservedRoute(None, 2, route, RT_PROTO),))


def test_a_changed_src_is_replaced_in_place_and_an_equal_one_is_left_alone() -> None:
    old = Route(NET("10.0.0.0/8"), src=IP("192.0.2.1"))
    new = Route(NET("10.0.0.0/8"), src=IP("192.0.2.2"))
    p = plan(spec_of(routes=(new,)), _observed(old))
    assert p.changes == (RouteSet(None, "eth0", new, replace=True),)
    assert p.changes[0].describe() == "~ route 10.0.0.0/8 src 192.0.2.2 dev eth0"
    assert plan(spec_of(routes=(new,)), _observed(new)).empty
    # and dropping src from the spec is a change too (the kernel would keep the old one)
    assert plan(spec_of(routes=(Route(NET("10.0.0.0/8")),)), _observed(old)).changes[0].replace


def test_show_round_trips_src(tmp_path: Path) -> None:
    route = Route(NET("192.0.2.10/32"), src=IP("192.0.2.2"))
    host0: ObservedLink = ipvlan("host0", 7, None)
    observed = Observed(links=(parent_link(), host0), routes=(ObservedRoute(None, 7, route, RT_PROTO),))
    doc = to_document(observed)
    assert doc["parents"]["eth0"]["devices"]["host0"]["routes"] == [{"to": "192.0.2.10/32", "src": "192.0.2.2"}]
    path = tmp_path / "shown.yaml"
    path.write_text(yaml.safe_dump(doc))
    spec = spec_mod.load(path)
    assert spec.devices[0].routes == (route,)
