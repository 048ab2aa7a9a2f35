"""Issue 15 item 8: `peers` prints the routes an upstream router needs for routed l3/l3s ipvlans
(iproute2, FRR, BIRD), through this host's own address on the parent."""

from __future__ import annotations

import ipaddress
import subprocess
import sys
from pathlib import Path

from ipvland.model import Device, Mode, Parent, Spec
from ipvland.peers import as_bird, as_frr, as_route_commands, upstream_routes

IF = ipaddress.ip_interface
IP = ipaddress.ip_address
ROOT = Path(__file__).resolve().parents[2]


def spec() -> Spec:
    return Spec(1, (
        Parent("eth0", Mode.L3S,
               devices=(Device("web0", "eth0", "web", (IF("192.0.2.10/24"), IF("2001:db8::10/64"))),)),
        Parent("eth1", Mode.L2, devices=(Device("l2dev", "eth1", addresses=(IF("198.51.100.5/24"),)),)),
    ))


def test_host_routes_via_the_hosts_address_on_the_parent_for_l3_only() -> None:
    routes, problems = upstream_routes(spec(), {"eth0": [IP("2001:db8::1"), IP("192.0.2.1")]})
    assert routes == [(ipaddress.ip_network("192.0.2.10/32"), IP("192.0.2.1")),
                      (ipaddress.ip_network("2001:db8::10/128"), IP("2001:db8::1"))]
    assert problems == []
    assert as_route_commands(routes) == ("ip route replace 192.0.2.10/32 via 192.0.2.1\n"
                                         "ip -6 route replace 2001:db8::10/128 via 2001:db8::1\n")
    assert as_frr(routes) == "ip route 192.0.2.10/32 192.0.2.1\nipv6 route 2001:db8::10/128 2001:db8::1\n"
    assert as_bird(routes) == ("protocol static ipvland4 {\n  ipv4;\n  route 192.0.2.10/32 via 192.0.2.1;\n}\n"
                               "protocol static ipvland6 {\n  ipv6;\n  route 2001:db8::10/128 via 2001:db8::1;\n}\n")


def test_a_family_without_a_host_address_is_a_problem_unless_via_says() -> None:
    routes, problems = upstream_routes(spec(), {"eth0": [IP("192.0.2.1")]})
    assert len(routes) == 1
    assert problems == ["parent eth0: no IPv6 address of this host on it to route 2001:db8::10 through (give --via)"]
    routes, problems = upstream_routes(spec(), {}, {4: IP("203.0.113.1"), 6: IP("2001:db8:f::1")})
    assert [str(gw) for _, gw in routes] == ["203.0.113.1", "2001:db8:f::1"] and not problems


def test_the_command_reads_the_hosts_address_from_the_live_parent(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("version: 1\nparents:\n  lab0:\n    mode: l3s\n    devices:\n"
                      "      web0: {netns: web, addresses: [192.0.2.10/24]}\n")
    script = ("ip link add lab0 type veth peer name lab0p && ip addr add 192.0.2.1/24 dev lab0 && "
              f"{sys.executable} -m ipvland peers --format frr -c {config} && "
              f"{sys.executable} -m ipvland peers --format route --via 192.0.2.99 -c {config}")
    done = subprocess.run(["unshare", "--net", "sh", "-c", script], capture_output=True, text=True, cwd=ROOT,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "ip route 192.0.2.10/32 192.0.2.1\nip route replace 192.0.2.10/32 via 192.0.2.99\n"
