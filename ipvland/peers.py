"""What a remote peer must configure to reach l3/l3s ipvlans (pure).

In L3 and L3S modes an ipvlan answers no ARP/NDP: a peer on the wire needs a permanent neighbor
entry per ipvlan address, pointing at the parent's MAC (every ipvlan shares it). This replaces the
manual, error-prone step of the IPVLAN procedure. Routed deployments rather route each address to
the host (its own address on the parent) on the upstream router: `upstream_routes` and the
iproute2, FRR and BIRD renderings below.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from ipvland.model import IPAddress, IPNetwork, Mode, Neighbor, Spec

Upstream = tuple[IPNetwork, IPAddress]  # (an ipvlan's address as a host prefix, the host's address)


def _routed(spec: Spec) -> list[tuple[str, list[IPAddress]]]:
    """(parent, the addresses of its ipvlans) of every l3/l3s parent with devices."""
    return [(p.name, [a.ip for d in p.devices for a in d.addresses]) for p in spec.parents
            if p.mode in (Mode.L3, Mode.L3S) and p.devices]


def upstream_routes(spec: Spec, parent_addresses: Mapping[str, list[IPAddress]],
                    via: Mapping[int, IPAddress] | None = None) -> tuple[list[Upstream], list[str]]:
    """A host route per ipvlan address, through the host's own address on its parent (the first of
    that family, unless `via` says which per IP version), and a message per one that has none."""
    routes: list[Upstream] = []
    problems: list[str] = []
    for parent, addresses in _routed(spec):
        for ip in addresses:
            gateway = (via or {}).get(ip.version) or next(
                (a for a in parent_addresses.get(parent, []) if a.version == ip.version), None)
            if gateway is None:
                problems.append(f"parent {parent}: no IPv{ip.version} address of this host on it to route "
                                f"{ip} through (give --via)")
                continue
            routes.append((ipaddress.ip_network(ip), gateway))
    return routes, problems


def as_route_commands(routes: list[Upstream]) -> str:
    return "".join(f"ip {'-6 ' if n.version == 6 else ''}route replace {n} via {gw}\n" for n, gw in routes)


def as_frr(routes: list[Upstream]) -> str:
    """Static routes for FRR's vtysh / frr.conf."""
    return "".join(f"{'ipv6' if n.version == 6 else 'ip'} route {n} {gw}\n" for n, gw in routes)


def as_bird(routes: list[Upstream]) -> str:
    """One static protocol per family for BIRD 2."""
    out = []
    for version in (4, 6):
        mine = [(n, gw) for n, gw in routes if n.version == version]
        if mine:
            body = "".join(f"  route {n} via {gw};\n" for n, gw in mine)
            out.append(f"protocol static ipvland{version} {{\n  ipv{version};\n{body}}}\n")
    return "".join(out)


def peer_neighbors(spec: Spec, parent_macs: Mapping[str, str]) -> tuple[list[Neighbor], list[str]]:
    """The neighbor entries a peer needs, and a message per parent whose MAC is unknown."""
    entries: list[Neighbor] = []
    problems: list[str] = []
    for parent in spec.parents:
        if parent.mode not in (Mode.L3, Mode.L3S) or not parent.devices:
            continue
        mac = parent_macs.get(parent.name)
        if mac is None and parent.match is not None:
            mac = parent.match.mac  # matched by its MAC: an ipvlan's is its parent's
        if mac is None:
            problems.append(f"parent {parent.name}: not found, its MAC address is unknown")
            continue
        for device in parent.devices:
            entries.extend(Neighbor(a.ip, mac) for a in device.addresses)
    return entries, problems


def as_ip_commands(entries: list[Neighbor], peer_dev: str) -> str:
    return "".join(f"ip neigh replace {n.address} lladdr {n.lladdr} dev {peer_dev} nud permanent\n"
                   for n in entries)


def as_document(entries: list[Neighbor], peer_dev: str) -> dict[str, Any]:
    """A config a peer's own ipvland consumes: its NIC `peer_dev` with these neighbors."""
    neighbors = [{"address": str(n.address), "lladdr": n.lladdr} for n in entries]
    return {"version": 1, "parents": {peer_dev: {"neighbors": neighbors}}}
