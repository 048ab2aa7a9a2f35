"""Convergence on what real hosts do (issues 11 and 12), on the real kernel (runs in the VM).

Each test is a regression test for one way a valid spec failed to reach a fixed point, flapped an
address, deleted devices it should keep, or held on to other tools' namespaces. Live state is
checked with iproute2, independently of ipvland's own netlink decoding.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from iproute import addrs, converge, ip, ipj, lab_setup, link, load

from ipvland import normalize
from ipvland.kernel import Kernel
from ipvland.model import Spec
from ipvland.netns import entered
from ipvland.observe import observe
from ipvland.reconcile import reconcile


def on_lab0(lab: Path, *devices: str, mode: str = "l2", tail: str = "") -> Spec:
    """A spec of one parent, lab0, with these devices (one YAML line each, `name: {...}`)."""
    lines = ["version: 1", "parents:", "  lab0:", f"    mode: {mode}", "    devices:"]
    lines += [f"      {d}" for d in devices]
    return load(lab, "\n".join(lines) + "\n" + tail)


def sysctl(netns: str, key: str) -> int:
    with entered(netns):
        return int(Path("/proc/sys", key.replace(".", "/")).read_text())


def wait_for(what: str, check: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Path]:
    yield from lab_setup(tmp_path)


class AddressWatch:
    """`ip monitor address` in a namespace: every address the kernel deleted while it ran."""

    def __init__(self, netns: str) -> None:
        self.proc = subprocess.Popen(["ip", "-n", netns, "monitor", "address"], stdout=subprocess.PIPE,
                                     text=True)
        time.sleep(0.3)  # let it subscribe before anything happens

    def deleted(self) -> list[str]:
        time.sleep(0.3)
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=10)
        return [line for line in out.splitlines() if line.startswith("Deleted")]


# ---------------------------------------------------------------- what the kernel rewrites


def test_the_kernel_does_what_normalize_says(lab: Path) -> None:
    """Each entry of ipvland/normalize.py, checked with iproute2 alone."""
    ip("netns", "add", "t")
    ip("link", "add", "link", "lab0", "name", "i0", "netns", "t", "type", "ipvlan", "mode", "l2")
    ip("link", "add", "v0", "netns", "t", "type", "veth", "peer", "name", "v1", "netns", "t")
    for dev in ("i0", "v0", "v1"):
        ip("link", "set", dev, "up", netns="t")
    got = link("i0", "t")
    assert got is not None
    assert (got["min_mtu"], got["max_mtu"]) == (normalize.MTU_MIN, normalize.MTU_MAX)
    assert ip("link", "set", "i0", "mtu", str(normalize.MTU_MIN - 1), netns="t", check=False).returncode != 0
    assert sysctl("t", "net.ipv4.conf.i0.promote_secondaries") == 0  # hence ipvland sets it
    assert sysctl("t", "net.ipv6.conf.i0.accept_ra") == 1 and sysctl("t", "net.ipv6.conf.i0.autoconf") == 1
    # metrics as stored
    ip("-6", "route", "add", "2001:db8:6::/64", "dev", "v0", "metric", "0", netns="t")
    ip("-6", "route", "add", "2001:db8:7::/64", "dev", "v0", netns="t")
    ip("route", "add", "10.7.0.0/16", "dev", "v0", netns="t")
    metric = {r["dst"]: r.get("metric", 0) for r in ipj("-6", "route", "show", "dev", "v0", netns="t")
              + ipj("route", "show", "dev", "v0", netns="t")}
    assert metric["2001:db8:6::/64"] == metric["2001:db8:7::/64"] == normalize.route_metric(6, 0) == 1024
    assert metric["10.7.0.0/16"] == normalize.route_metric(4, None) == 0
    # one route per destination, table and metric in a namespace, whatever the device
    for family, dst in (("-4", "10.7.0.0/16"), ("-6", "2001:db8:7::/64")):
        refused = ip(family, "route", "add", dst, "dev", "v1", netns="t", check=False)
        assert "File exists" in refused.stderr, (dst, refused.stderr)
    # the prefix routes the kernel adds for addresses, and that a spec route equal to one is refused
    ip("addr", "add", "192.0.2.10/24", "dev", "i0", netns="t")
    ip("addr", "add", "2001:db8::10/64", "dev", "i0", "nodad", netns="t")
    ip("addr", "add", "198.51.100.1/32", "dev", "i0", netns="t")
    kernel_routes = {(r["dst"], r.get("metric", 0)) for r in ipj("route", "show", "proto", "kernel", netns="t")
                     + ipj("-6", "route", "show", "proto", "kernel", "dev", "i0", netns="t")}
    assert ("192.0.2.0/24", normalize.PREFIX_ROUTE_METRIC[4]) in kernel_routes
    assert ("2001:db8::/64", normalize.PREFIX_ROUTE_METRIC[6]) in kernel_routes
    assert not [d for d, _ in kernel_routes if d.startswith("198.51.100.1")]  # a /32 has none
    assert "File exists" in ip("route", "add", "192.0.2.0/24", "dev", "i0", netns="t", check=False).stderr
    assert "File exists" in ip("-6", "route", "add", "2001:db8::/64", "dev", "i0", "metric", "256", netns="t",
                               check=False).stderr
    # without promote_secondaries, deleting a primary takes its secondaries with it
    ip("addr", "add", "10.8.0.1/24", "dev", "v0", netns="t")
    ip("addr", "add", "10.8.0.2/24", "dev", "v0", netns="t")
    ip("addr", "del", "10.8.0.1/24", "dev", "v0", netns="t")
    assert "10.8.0.2/24" not in addrs("v0", "t")
    # a static address has an infinite lifetime; below 1280 the device loses IPv6 altogether
    assert all(a.get("valid_life_time") == normalize.INFINITY_LIFE_TIME
               for e in ipj("addr", "show", "dev", "i0", netns="t") for a in e["addr_info"])
    ip("link", "set", "i0", "mtu", str(normalize.IPV6_MIN_MTU - 1), netns="t")
    assert not [a for e in ipj("-6", "addr", "show", "dev", "i0", netns="t") for a in e.get("addr_info", [])]


def test_ipv6_route_metric_0_reaches_a_fixed_point(lab: Path) -> None:
    # The kernel stores an IPv6 metric 0 as 1024: the spec's 0 must mean 1024, or the route is
    # deleted and re-added at every reconcile (issue 11, item 1: the daemon hot-looped on it).
    spec = on_lab0(lab, 'web0: {netns: web, addresses: ["2001:db8::10/64"], '
                        'routes: [{to: "2001:db8:1::/64", metric: 0}]}', mode="l3")
    converge(spec)
    routes = ipj("-6", "route", "show", "proto", "212", netns="web")
    assert [(r["dst"], r["metric"]) for r in routes] == [("2001:db8:1::/64", 1024)]


@pytest.mark.parametrize("after", [["192.0.2.11/24"], ["192.0.2.12/24", "192.0.2.11/24"]],
                         ids=["primary-dropped", "primary-replaced"])
def test_renumbering_never_drops_an_address_that_stays(lab: Path, after: list[str]) -> None:
    # Deleting an IPv4 primary deletes its secondaries unless promote_secondaries is set (it is 0
    # in a new namespace): .11 must survive the loss of .10 without even a blip.
    converge(on_lab0(lab, "web0: {netns: web, addresses: [192.0.2.10/24, 192.0.2.11/24]}"))
    watch = AddressWatch("web")
    converge(on_lab0(lab, f"web0: {{netns: web, addresses: [{', '.join(after)}]}}"))
    deleted = watch.deleted()
    assert addrs("web0", "web") == set(after)
    assert not [line for line in deleted if "192.0.2.11/24" in line], deleted
    assert sysctl("web", "net.ipv4.conf.web0.promote_secondaries") == 1


# ---------------------------------------------------------------- leftovers and renames


def test_a_leftover_temporary_device_blocks_no_mode_change(lab: Path) -> None:
    # An interrupted create leaves ipvtmp-<hex>: ipvland's own, removed, never a foreign sibling
    # that would make the mode change a conflict (issue 11, item 10).
    ip("netns", "add", "web")
    ip("link", "add", "link", "lab0", "name", "ipvtmp-0badc0de", "netns", "web", "type", "ipvlan", "mode", "l2")
    spec = on_lab0(lab, "web0: {netns: web, addresses: [192.0.2.10/24]}", mode="l3")
    converge(spec)
    assert link("ipvtmp-0badc0de", "web") is None
    assert link("web0", "web")["linkinfo"]["info_data"]["mode"] == "l3"  # type: ignore[index]


def test_a_renamed_parent_never_causes_its_devices_to_be_deleted(lab: Path) -> None:
    spec = on_lab0(lab, "web0: {netns: web, addresses: [192.0.2.10/24]}", "app0: {addresses: [192.0.2.11/24]}")
    converge(spec)
    index = {"web0": link("web0", "web")["ifindex"], "app0": link("app0")["ifindex"]}  # type: ignore[index]
    ip("link", "set", "lab0", "down")
    ip("link", "set", "lab0", "name", "lab9")  # udev or an operator, outside ipvland
    ip("link", "set", "lab9", "up")
    with Kernel() as kernel:
        report = reconcile(spec, kernel)
        assert not report.ok
        assert report.outcomes == (), [o.describe() for o in report.outcomes]
        assert [p.subject for p in report.plan.pending] == ["parent lab0"]
        assert "web0" in report.plan.pending[0].message and "lab9" in report.plan.pending[0].message
    assert link("web0", "web")["ifindex"] == index["web0"]  # type: ignore[index]
    assert link("app0")["ifindex"] == index["app0"]  # type: ignore[index]
    assert addrs("web0", "web") == {"192.0.2.10/24"}
    ip("link", "set", "lab9", "down")
    ip("link", "set", "lab9", "name", "lab0")
    ip("link", "set", "lab0", "up")
    report = converge(spec)
    assert not [o for o in report.outcomes if o.change.describe().startswith(("+ link", "- link"))]
    assert link("web0", "web")["ifindex"] == index["web0"]  # type: ignore[index]


# ---------------------------------------------------------------- namespaces: sockets and identity


def test_a_foreign_namespace_deleted_while_ipvland_runs_is_freed(lab: Path) -> None:
    # Another tool's namespace (a CNI one): ipvland reads its links (a foreign sibling on a parent
    # would be there) but must not keep a socket in it, or `ip netns del` frees nothing: its
    # devices, and their addresses, stay alive.
    spec = on_lab0(lab, "web0: {netns: web}")
    ip("netns", "add", "cni-1234")
    ip("link", "add", "cnipeer0", "type", "veth", "peer", "name", "eth0", "netns", "cni-1234")
    with Kernel() as kernel:
        assert reconcile(spec, kernel).ok
        assert any(lk.netns == "cni-1234" for lk in observe(kernel, spec).links)  # it was read
        ip("netns", "del", "cni-1234")
        wait_for("the deleted namespace's veth peer to vanish", lambda: link("cnipeer0") is None)


def test_a_namespace_that_leaves_the_spec_is_freed_when_deleted(lab: Path) -> None:
    with Kernel() as kernel:
        assert reconcile(on_lab0(lab, "app0: {netns: app}", "web0: {netns: web}"), kernel).ok
        ip("link", "add", "webpeer0", "type", "veth", "peer", "name", "eth0", "netns", "web")
        assert reconcile(on_lab0(lab, "app0: {netns: app}"), kernel).ok  # web0 deleted; web left the spec
        ip("netns", "del", "web")
        wait_for("the deleted namespace's veth peer to vanish", lambda: link("webpeer0") is None)


# ---------------------------------------------------------------- probes


def test_a_probe_waits_for_ipv6_dad_on_a_new_device(lab: Path) -> None:
    # A fresh IPv6 address is tentative for ~1-2 s (DAD): sending fails meanwhile (no usable source
    # address). The probe must keep trying for its whole budget, not give up after 0.6 s.
    ip("addr", "add", "2001:db8::1/64", "dev", "lab0p", "nodad")
    spec = on_lab0(lab, 'web0: {netns: web, addresses: ["2001:db8::10/64"]}',
                   tail='probes: [{netns: web, target: "2001:db8::1", tries: 3, timeout: 1}]\n')
    with Kernel() as kernel:
        report = reconcile(spec, kernel)
    assert report.probes and report.probes[0].ok, report.probes[0].describe()


# ---------------------------------------------------------------- other address sources (issue 12)


def send_router_advertisement(dev: str, prefix: str) -> None:
    """A real RA from `dev` (lab0p, the peer side): a prefix for SLAAC and a default router."""
    ipaddress.ip_network(prefix)
    s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, dev.encode())
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, socket.if_nametoindex(dev))
        # type 134, code 0, checksum (the kernel fills it in), hop limit 64, no M/O, lifetime 1800 s
        ra = struct.pack("!BBHBBHII", 134, 0, 0, 64, 0, 1800, 0, 0)
        net = ipaddress.IPv6Network(prefix)
        # prefix information: type 3, len 4, /64, on-link + autonomous, valid 1 day, preferred 4 h
        ra += struct.pack("!BBBBIII", 3, 4, net.prefixlen, 0xC0, 86400, 14400, 0) + net.network_address.packed
        s.sendto(ra, ("ff02::1", 0, 0, socket.if_nametoindex(dev)))
    finally:
        s.close()


def test_a_router_advertisement_causes_no_write_once_converged(lab: Path) -> None:
    # SLAAC addresses (finite lifetime) and the RA's default route (proto ra) are other address
    # sources: left alone, never fought (issue 12).
    spec = on_lab0(lab, 'web0: {netns: web, addresses: ["2001:db8::10/64", 192.0.2.10/24], routes: [{to: "::/0"}]}')
    converge(spec)
    wait_for("lab0p's link-local address", lambda: not ipj("-6", "addr", "show", "dev", "lab0p", "tentative"))
    send_router_advertisement("lab0p", "2001:db8:ab::/64")

    def slaac() -> bool:
        return any(a.startswith("2001:db8:ab:") for a in addrs("web0", "web"))

    wait_for("a SLAAC address on web0", slaac)
    assert any(r.get("protocol") == "ra" for r in ipj("-6", "route", "show", "default", netns="web"))
    with Kernel() as kernel:
        report = reconcile(spec, kernel)
        assert kernel.writes == 0, [o.describe() for o in report.outcomes]
        assert report.ok, json.dumps(report.to_json(), indent=1)
    assert slaac()


def test_an_address_whose_dad_failed_is_readded_and_reported(lab: Path) -> None:
    ip("addr", "add", "2001:db8::10/64", "dev", "lab0p", "nodad")  # the duplicate, on the wire
    spec = on_lab0(lab, 'web0: {netns: web, addresses: ["2001:db8::10/64"]}')
    with Kernel() as kernel:
        reconcile(spec, kernel)

        def dadfailed() -> bool:
            return bool(ipj("-6", "addr", "show", "dev", "web0", "dadfailed", netns="web"))

        wait_for("DAD to fail on web0", dadfailed)
        report = reconcile(spec, kernel)
    assert [c.describe() for c in report.plan.changes] == [
        "- address 2001:db8::10/64 dev web0 netns web (DAD failed: a duplicate on the link; re-added)",
        "+ address 2001:db8::10/64 dev web0 netns web"]
    assert [c.subject for c in report.plan.conflicts] == ["address 2001:db8::10/64 dev web0 netns web"]
    assert "duplicate" in report.plan.conflicts[0].message
    assert not report.ok


def test_ipv6_accept_ra_and_autoconf_are_applied_and_repaired(lab: Path) -> None:
    spec = on_lab0(lab, 'web0: {netns: web, addresses: ["2001:db8::10/64"], ipv6: {accept_ra: false, autoconf: false}}')
    converge(spec)
    assert sysctl("web", "net.ipv6.conf.web0.accept_ra") == 0
    assert sysctl("web", "net.ipv6.conf.web0.autoconf") == 0
    with entered("web"):
        Path("/proc/sys/net/ipv6/conf/web0/accept_ra").write_text("1")
    report = converge(spec)
    assert [o.change.describe() for o in report.outcomes] == ["~ link web0 netns web ipv6.accept_ra 1 -> 0"]
    assert sysctl("web", "net.ipv6.conf.web0.accept_ra") == 0
