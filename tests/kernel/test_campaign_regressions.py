"""Failures the randomized campaign (test_campaign.py) found, each minimized to a named test.

Each one failed on the kernel before its fix (they were strict xfails until then); the campaign
generates their classes by default since.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from iproute import addrs, converge, ip, ipj, lab_setup, load

from ipvland.kernel import Kernel
from ipvland.model import Spec
from ipvland.reconcile import Report, reconcile


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Path]:
    yield from lab_setup(tmp_path)


def apply_once(spec: Spec) -> Report:
    with Kernel() as kernel:
        return reconcile(spec, kernel)


def lines(report: Report) -> list[str]:
    remaining = report.remaining.changes if report.remaining is not None else ()
    return [*(f"{o.change.describe()}: {o.error}" for o in report.outcomes if o.error),
            *(f"still differs: {c.describe()}" for c in remaining)]


def routes(dev: str, netns: str) -> set[str]:
    return {r["dst"] for family in ("-4", "-6")
            for r in ipj(family, "route", "show", "table", "all", "dev", dev, "proto", "212", netns=netns)}


def neighbors(dev: str, netns: str) -> set[str]:
    return {n["dst"] for n in ipj("neigh", "show", "dev", dev, netns=netns)}


def keep_addr_on_down(dev: str, netns: str, value: int | None = None) -> str:
    """net.ipv6.conf.DEV.keep_addr_on_down in the namespace (set first when value is given)."""
    path = f"/proc/sys/net/ipv6/conf/{dev}/keep_addr_on_down"
    if value is not None:
        ip("netns", "exec", netns, "sh", "-c", f"echo {value} > {path}")
    return ip("netns", "exec", netns, "cat", path).stdout.strip()


def test_routes_on_a_down_device_wait_for_it_to_go_up(lab: Path) -> None:
    """Campaign class routes_on_down. The kernel refuses a route through a down device (ENETDOWN,
    "Nexthop device is not up", IPv4 and IPv6) and flushes a device's routes when it goes down, so a
    `state: down` device has no routes: its `routes:` are inactive (not planned, not an error) until
    it goes up. Before the fix every apply tried them again and failed. Its neighbors stay: a state
    change flushes them (down; up too for l3), and the same apply puts them back."""
    text = """
        version: 1
        parents:
          lab0:
            mode: l3
            devices:
              web0:
                netns: web
                state: {state}
                addresses: [192.0.2.10/24, "2001:db8::10/64"]
                routes: [{{to: 198.51.100.0/24}}, {{to: "2001:db8:1::/64"}}]
                neighbors: [{{address: 192.0.2.1, lladdr: "02:00:00:00:0b:01"}}]
        """
    report = apply_once(load(lab, text.format(state="down")))
    assert report.ok, lines(report)
    assert routes("web0", "web") == set()
    assert neighbors("web0", "web") == {"192.0.2.1"}
    converge(load(lab, text.format(state="down")))  # and stays quiet: nothing to retry

    report = apply_once(load(lab, text.format(state="up")))  # l3 going up flushes them: set again
    assert report.ok, lines(report)
    assert routes("web0", "web") == {"198.51.100.0/24", "2001:db8:1::/64"}
    assert neighbors("web0", "web") == {"192.0.2.1"}

    report = apply_once(load(lab, text.format(state="down")))  # up -> down: flushed, not fought
    assert report.ok, lines(report)
    assert routes("web0", "web") == set()
    assert neighbors("web0", "web") == {"192.0.2.1"}
    converge(load(lab, text.format(state="down")))


def test_setting_a_device_down_keeps_its_ipv6_address(lab: Path) -> None:
    """Campaign class v6_on_down. Setting a device down makes the kernel flush its IPv6 addresses
    unless net.ipv6.conf.DEV.keep_addr_on_down is 1: ipvland sets it on its devices that carry IPv6
    addresses (and repairs it). Before the fix the apply that set `state: down` ended "still
    differs" and the address was gone until the next apply."""
    base = """
        version: 1
        parents:
          lab0:
            mode: l3
            devices:
              web0: {{netns: web, state: {state}, addresses: [192.0.2.10/24, "2001:db8::10/64"]}}
        """
    assert apply_once(load(lab, base.format(state="up"))).ok
    assert addrs("web0", "web") == {"192.0.2.10/24", "2001:db8::10/64"}
    assert keep_addr_on_down("web0", "web") == "1"
    report = apply_once(load(lab, base.format(state="down")))
    assert addrs("web0", "web") == {"192.0.2.10/24", "2001:db8::10/64"}
    assert report.ok, lines(report)
    converge(load(lab, base.format(state="down")))
    # drift: the sysctl turned off by hand is repaired
    assert keep_addr_on_down("web0", "web", 0) == "0"
    report = apply_once(load(lab, base.format(state="down")))
    assert [c.describe() for c in report.plan.changes] == ["~ link web0 netns web ipv6.keep_addr_on_down 0 -> 1"]
    assert keep_addr_on_down("web0", "web") == "1"


def test_the_kernel_does_what_normalize_says_about_down_devices(lab: Path) -> None:
    """The facts behind both fixes, with iproute2 alone (normalize.py, README "What the kernel rewrites")."""
    ip("netns", "add", "kdown")
    ip("link", "add", "link", "lab0", "name", "kd0", "type", "ipvlan", "mode", "l3")
    ip("link", "set", "kd0", "netns", "kdown")
    ip("addr", "add", "192.0.2.20/24", "dev", "kd0", netns="kdown")
    ip("addr", "add", "2001:db8::20/64", "dev", "kd0", "nodad", netns="kdown")
    # a route through a down device: refused, IPv4 and IPv6
    for dst in ("198.51.100.0/24", "2001:db8:1::/64"):
        r = ip("route", "add", dst, "dev", "kd0", netns="kdown", check=False)
        refused = "Device for nexthop is not up" if ":" not in dst else "Nexthop device is not up"  # ENETDOWN
        assert r.returncode != 0 and refused in r.stderr, (dst, r.stderr)
    # a permanent neighbor can be added to a down device, and stays while it is down; an l3 ipvlan
    # going up flushes it (ipvlan_open sets IFF_NOARP: the NOARP change flushes the device's entries)
    neigh = ("neigh", "replace", "192.0.2.1", "lladdr", "02:00:00:00:0b:01", "dev", "kd0", "nud", "permanent")
    ip(*neigh, netns="kdown")
    assert neighbors("kd0", "kdown") == {"192.0.2.1"}
    ip("link", "set", "kd0", "up", netns="kdown")
    assert neighbors("kd0", "kdown") == set()
    ip(*neigh, netns="kdown")
    ip("route", "add", "198.51.100.0/24", "dev", "kd0", netns="kdown")
    assert neighbors("kd0", "kdown") == {"192.0.2.1"}
    # going down flushes routes, neighbors (permanent too) and IPv6 addresses (keep_addr_on_down 0)
    assert keep_addr_on_down("kd0", "kdown") == "0"
    ip("link", "set", "kd0", "down", netns="kdown")
    assert not ipj("route", "show", "dev", "kd0", "198.51.100.0/24", netns="kdown")
    assert neighbors("kd0", "kdown") == set()
    assert addrs("kd0", "kdown") == {"192.0.2.20/24"}
    # with keep_addr_on_down 1, a down keeps them
    ip("addr", "add", "2001:db8::20/64", "dev", "kd0", "nodad", netns="kdown")
    keep_addr_on_down("kd0", "kdown", 1)
    ip("link", "set", "kd0", "up", netns="kdown")
    ip("link", "set", "kd0", "down", netns="kdown")
    assert addrs("kd0", "kdown") == {"192.0.2.20/24", "2001:db8::20/64"}
