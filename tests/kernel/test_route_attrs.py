"""Route attributes on a real kernel (issue 15 item 2): type, onlink, scope, src, mtu, multipath with
weights. Each is added, read back by iproute2 (the independent observer), changed in place (a replace,
never a delete), converges with zero writes on the next run, and is removed; a foreign route beside
them is never touched. Plus the kernel facts normalize.py states about them.

One lab for the module: lab0 (a veth, its peer up in namespace `wire`), ipvlan d0 in namespace `ra`.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from iproute import converge, ip, ipj
from wire import sh, wired_lab

from ipvland import spec as spec_mod
from ipvland.model import RouteDelete, RouteSet, Spec

BASE = """\
version: 1
parents:
  lab0:
    mode: l3s
    routes:
      - {{to: 198.51.100.0/24, type: {reject}}}
      - {{to: "2001:db8:b::/48", type: prohibit}}
    devices:
      d0:
        netns: ra
        addresses: [192.0.2.10/24, "2001:db8::10/64"]
        routes:
          - {{to: 10.1.0.0/16, via: 192.0.2.1, src: 192.0.2.10, mtu: {mtu}}}
          - {{to: 10.2.0.0/16, via: {onlink_gw}, onlink: true}}
          - {{to: 10.3.0.0/16, scope: {scope}}}
          - {{to: 10.4.0.0/16, nexthops: [{{via: 192.0.2.1}}, {{via: 192.0.2.2, weight: {weight}}}]}}
          - {{to: "2001:db8:4::/48", nexthops: [{{via: "2001:db8::1"}}, {{via: "2001:db8::2", weight: {weight}}}]}}
          - {{to: 10.5.0.0/16, type: local}}
          - {{to: 10.6.0.0/16, type: blackhole}}
          - {{to: "2001:db8:6::/48", via: "2001:db8::1", mtu: {mtu6}}}
"""
FIRST = {"reject": "blackhole", "mtu": 1400, "onlink_gw": "203.0.113.1", "scope": "host", "weight": 3,
         "mtu6": 1300}
SECOND = {"reject": "unreachable", "mtu": 1300, "onlink_gw": "203.0.113.2", "scope": "link", "weight": 2,
          "mtu6": 1400}


def load(tmp: Path, name: str, text: str) -> Spec:
    path = tmp / f"{name}.yaml"
    path.write_text(textwrap.dedent(text))
    return spec_mod.load(path)


def ours(netns: str | None, family: str = "-4") -> dict[str, dict[str, Any]]:
    return {r["dst"]: r for r in ipj(family, "route", "show", "table", "all", "proto", "212", netns=netns)}


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    # a foreign route beside ours, of a kind ipvland now reads: never touched
    sh("ip", "route", "add", "blackhole", "198.51.100.128/25", "proto", "static")
    yield from wired_lab(tmp_path_factory, "route-attrs")
    sh("ip", "route", "del", "blackhole", "198.51.100.128/25", check=False)


def _check(values: dict[str, Any]) -> None:
    root4, root6 = ours(None), ours(None, "-6")
    assert root4["198.51.100.0/24"]["type"] == values["reject"]
    assert root6["2001:db8:b::/48"]["type"] == "prohibit"
    ra4, ra6 = ours("ra"), ours("ra", "-6")
    r = ra4["10.1.0.0/16"]
    assert (r["gateway"], r["prefsrc"], r["metrics"][0]["mtu"]) == ("192.0.2.1", "192.0.2.10", values["mtu"]), r
    r = ra4["10.2.0.0/16"]
    assert (r["gateway"], "onlink" in r["flags"]) == (values["onlink_gw"], True), r
    assert ra4["10.3.0.0/16"]["scope"] == values["scope"]
    for table, gw in ((ra4, "192.0.2.2"), (ra6, "2001:db8::2")):
        dst = "10.4.0.0/16" if table is ra4 else "2001:db8:4::/48"
        hops = {h["gateway"]: h.get("weight", 1) for h in table[dst]["nexthops"]}
        assert hops[gw] == values["weight"] and len(hops) == 2, table[dst]
    assert ra4["10.5.0.0/16"]["type"] == "local"
    assert ra4["10.6.0.0/16"]["type"] == "blackhole"
    assert ra6["2001:db8:6::/48"]["metrics"][0]["mtu"] == values["mtu6"]


def test_every_attribute_is_set_read_back_and_converges(lab: Path) -> None:
    converge(load(lab, "first", BASE.format(**FIRST)))  # converged, and a second run writes nothing
    _check(FIRST)


def test_changes_are_made_in_place(lab: Path) -> None:
    report = converge(load(lab, "second", BASE.format(**SECOND)))
    changes = report.plan.changes
    assert not [c for c in changes if isinstance(c, RouteDelete)], [c.describe() for c in changes]
    replaced = [c for c in changes if isinstance(c, RouteSet)]
    assert len(replaced) == 7 and all(c.replace for c in replaced), [c.describe() for c in changes]
    _check(SECOND)


def test_removed_routes_go_and_the_foreign_one_stays(lab: Path) -> None:
    converge(load(lab, "empty", "version: 1\nparents:\n  lab0:\n    mode: l3s\n    devices:\n"
                                "      d0: {netns: ra, addresses: [192.0.2.10/24]}\n"))
    assert ours(None) == {} and ours("ra") == {} and ours(None, "-6") == {} and ours("ra", "-6") == {}
    foreign = ipj("route", "show", "type", "blackhole", "198.51.100.128/25")
    assert foreign and foreign[0]["protocol"] == "static"


def test_the_kernel_does_what_normalize_says_about_routes(lab: Path) -> None:
    # an MTU above 65520 is stored as 65520
    ip("route", "add", "10.9.0.0/16", "dev", "lab0", "mtu", "65535")
    assert ipj("route", "show", "10.9.0.0/16")[0]["metrics"][0]["mtu"] == 65520
    ip("route", "del", "10.9.0.0/16")
    # onlink without a gateway is refused
    assert ip("route", "add", "10.9.0.0/16", "dev", "lab0", "onlink", check=False).returncode != 0
    # a reject route takes no device
    assert ip("route", "add", "blackhole", "10.9.0.0/16", "dev", "lab0", check=False).returncode != 0
    # IPv6 routes have no scope: the dump says global whatever was sent
    ip("-6", "route", "add", "2001:db8:9::/48", "dev", "lab0", "scope", "link")
    assert ipj("-6", "route", "show", "2001:db8:9::/48")[0].get("scope", "global") == "global"
    ip("-6", "route", "del", "2001:db8:9::/48", "dev", "lab0")
    # a gateway with scope link is refused
    ip("addr", "add", "192.0.2.5/24", "dev", "lab0")
    assert ip("route", "add", "10.9.0.0/16", "via", "192.0.2.1", "scope", "link", check=False).returncode != 0
    ip("addr", "del", "192.0.2.5/24", "dev", "lab0")
