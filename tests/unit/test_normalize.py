"""What the kernel rewrites (ipvland/normalize.py), as validation uses it: a valid spec has a fixed point.

The kernel facts themselves are tested on the kernel (tests/kernel/test_fixed_point.py); here, that
validation refuses what could never converge and accepts what the kernel merely rewrites.
"""

from __future__ import annotations

import ipaddress
import textwrap

import pytest

from ipvland import normalize
from ipvland import spec as spec_mod
from ipvland.model import Route, Spec


def loads(text: str) -> Spec:
    return spec_mod.loads(textwrap.dedent(text), "c.yaml")


def errors(text: str) -> list[str]:
    with pytest.raises(spec_mod.SpecError) as e:
        loads(text)
    return [str(x) for x in e.value.errors]


def test_the_table_says_what_the_kernel_stores() -> None:
    assert normalize.route_metric(6, 0) == 1024 and normalize.route_metric(6, None) == 1024
    assert normalize.route_metric(4, 0) == 0 and normalize.route_metric(4, None) == 0
    assert normalize.route_metric(6, 5) == 5
    assert normalize.protocol_name(4) == "static" and normalize.protocol_name(9) == "ra"
    assert normalize.protocol_name(200) == "200"
    net = ipaddress.ip_network
    assert Route(net("2001:db8::/64"), metric=0).key == Route(net("2001:db8::/64")).key
    assert Route(net("10.0.0.0/8"), table=254).key == Route(net("10.0.0.0/8")).key


def test_ipv6_metric_0_and_1024_on_one_device_are_one_route() -> None:
    spec = loads("""
        version: 1
        parents:
          eth0:
            routes: [{to: "2001:db8:1::/64", metric: 0}, {to: "2001:db8:1::/64", metric: 1024}]
        """)
    assert len(spec.parents[0].routes) == 1


def test_the_same_route_on_two_devices_of_one_namespace_names_both_places() -> None:
    found = errors("""
        version: 1
        parents:
          eth0:
            mode: l3
            devices:
              web0: {netns: web, routes: [{to: default}]}
              web1: {netns: web, routes: [{to: 0.0.0.0/0}]}
              api0: {netns: api, routes: [{to: default}]}
        """)
    assert len(found) == 1
    assert found[0].startswith("c.yaml:8:")
    assert "on device web1 is also on device web0 at c.yaml:7:" in found[0] and "netns web" in found[0]


def test_the_same_route_on_a_parent_and_a_device_beside_it_is_refused() -> None:
    found = errors("""
        version: 1
        parents:
          eth0:
            routes: [{to: 198.51.100.7/32}]
          eth1:
            mode: l2
            devices:
              app0: {routes: [{to: 198.51.100.7/32, via: 192.0.2.1}]}
        """)
    assert len(found) == 1 and "also on parent eth0 at c.yaml:5:" in found[0]
    assert "ipvland's own namespace" in found[0]


def test_a_route_equal_to_the_kernels_prefix_route_is_refused() -> None:
    web0 = """
        version: 1
        parents:
          eth0:
            mode: l3
            devices:
              web0:
                netns: web
                addresses: [192.0.2.10/24, "2001:db8::10/64", 198.51.100.1/32]
                routes: [{routes}]
        """
    found = errors(web0.format(routes='{to: 192.0.2.0/24}, {to: "2001:db8::/64", metric: 256}'))
    assert len(found) == 2
    assert "prefix route the kernel adds itself for address 192.0.2.10/24 of device web0 at c.yaml:9:" in found[0]
    assert "2001:db8::10/64" in found[1]
    # another metric, the IPv6 default metric, or a host address: no kernel route in the way
    loads(web0.format(routes='{to: 192.0.2.0/24, metric: 100}, {to: "2001:db8::/64"}, {to: 198.51.100.1/32}'))


def test_ipv6_settings_load_as_device_sysctls() -> None:
    spec = loads("""
        version: 1
        parents:
          eth0:
            mode: l2
            devices:
              web0: {ipv6: {accept_ra: false, autoconf: true}}
              web1: {ipv6: {}}
        """)
    web0, web1 = spec.parents[0].devices
    assert web0.sysctls == (("ipv6.accept_ra", 0), ("ipv6.autoconf", 1))
    assert web1.sysctls == ()


def test_ipv6_settings_are_checked() -> None:
    found = errors("""
        version: 1
        parents:
          eth0:
            mode: l2
            devices:
              web0: {mtu: 1200, ipv6: {accept_ra: false}}
              web1: {ipv6: {accept_ra: "no", dad: false}}
        """)
    assert any("mtu 1200 is below 1280" in e and "ipv6 settings at c.yaml:7:" in e for e in found)
    assert any("accept_ra: must be true or false" in e for e in found)
    assert any("unknown key 'dad'" in e for e in found)


# ---------------------------------------------------------------- down devices (the campaign's finds)


def test_a_down_device_has_no_routes_until_it_is_up() -> None:
    """The kernel refuses a route through a down device (ENETDOWN) and flushes them when it goes down:
    the routes of a `state: down` device are inactive, neither planned nor an error."""
    from dataclasses import replace

    from ipvland.model import LinkStateSet, Observed, RouteSet, State
    from ipvland.plan import plan
    from tests.unit.test_plan import WEB, converged_web, lines, parent_link, spec_of

    down = replace(WEB, state=State.DOWN)
    created = plan(spec_of(down), Observed(links=(parent_link(),)))
    assert not any(isinstance(c, (RouteSet, LinkStateSet)) for c in created.changes), lines(created)
    base = converged_web()
    kept_down = replace(base, links=(parent_link(), replace(base.links[1], up=False)),
                        routes=tuple(r for r in base.routes if not r.owned))  # the down flushed ours
    assert plan(spec_of(down), kept_down).empty
    assert lines(plan(spec_of(WEB), kept_down)) == ["~ link web0 netns web state down -> up",
                                                    "+ route default dev web0 netns web"]


def test_a_state_change_sets_the_neighbors_again_after_it() -> None:
    from dataclasses import replace

    from ipvland.model import RT_PROTO, Neighbor, ObservedNeighbor, State
    from ipvland.plan import plan
    from tests.unit.test_plan import WEB, converged_web, lines, spec_of

    gw = Neighbor(ipaddress.ip_address("192.0.2.1"), "02:00:00:00:0b:01")
    base = replace(converged_web(), neighbors=(ObservedNeighbor("web", 7, gw, True, RT_PROTO),))
    assert plan(spec_of(replace(WEB, neighbors=(gw,))), base).empty
    p = plan(spec_of(replace(WEB, neighbors=(gw,), state=State.DOWN)), base)
    assert lines(p) == ["- route default dev web0 netns web", "~ link web0 netns web state up -> down",
                        "~ neighbor 192.0.2.1 lladdr 02:00:00:00:0b:01 dev web0 netns web"]
    # an l3 ipvlan going up flushes them too (it turns NOARP on)
    down = replace(base, links=(base.links[0], replace(base.links[1], up=False)))
    p = plan(spec_of(replace(WEB, neighbors=(gw,))), down)
    assert lines(p) == ["~ link web0 netns web state down -> up",
                        "~ neighbor 192.0.2.1 lladdr 02:00:00:00:0b:01 dev web0 netns web"]


def test_keep_addr_on_down_is_managed_on_devices_with_ipv6_addresses() -> None:
    from dataclasses import replace

    from ipvland.plan import plan
    from tests.unit.test_plan import WEB, converged_web, ipvlan, lines, parent_link, spec_of

    base = converged_web()
    for value, changes in ((1, []), (2, []), (0, ["~ link web0 netns web ipv6.keep_addr_on_down 0 -> 1"]),
                           (-1, ["~ link web0 netns web ipv6.keep_addr_on_down -1 -> 1"])):  # -1: off for good
        link = ipvlan("web0", 7, "web",
                      sysctls=((normalize.PROMOTE_SECONDARIES, 1), (normalize.KEEP_ADDR_ON_DOWN, value)))
        assert lines(plan(spec_of(WEB), replace(base, links=(parent_link(), link)))) == changes, value
    v4only = replace(WEB, addresses=(ipaddress.ip_interface("192.0.2.10/24"),))
    link = ipvlan("web0", 7, "web", sysctls=((normalize.PROMOTE_SECONDARIES, 1), (normalize.KEEP_ADDR_ON_DOWN, 0)))
    observed = replace(base, links=(parent_link(), link),
                       addresses=tuple(a for a in base.addresses
                                       if a.address.version == 4 or a.address.ip.is_link_local))
    assert plan(spec_of(v4only), observed).empty  # not managed without an IPv6 address
