"""Observed -> a config document (pure): `ipvland show` prints live state as a valid spec.

Only what ipvland owns, unless `include_foreign`: then ipvlans it does not own are added too, so an
operator can adopt them (ipvland will still refuse to touch them until they carry its alias).
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from typing import Any

from ipvland import normalize
from ipvland.model import MAIN_TABLE, Observed, ObservedLink, Route

_LINK_LOCAL = ipaddress.IPv6Network("fe80::/10")


def _route(route: Route) -> dict[str, Any]:
    if route.to.prefixlen == 0:
        # "default" means IPv4 unless via says otherwise; say ::/0 for an IPv6 default without via
        to = "default" if route.to.version == 4 or route.via is not None else "::/0"
    else:
        to = str(route.to)
    out: dict[str, Any] = {"to": to}
    if route.via is not None:
        out["via"] = str(route.via)
    if route.metric is not None and route.metric != normalize.DEFAULT_METRIC[route.to.version]:
        out["metric"] = route.metric
    if route.table is not None and route.table != MAIN_TABLE:
        out["table"] = route.table
    return out


def to_document(observed: Observed, include_foreign: bool = False) -> dict[str, Any]:
    routes = defaultdict(list)
    for r in observed.routes:
        if r.owned:
            routes[(r.netns, r.ifindex)].append(_route(r.route))
    neighbors = defaultdict(list)
    for n in observed.neighbors:
        if n.owned:
            neighbors[(n.netns, n.ifindex)].append({"address": str(n.neighbor.address),
                                                    "lladdr": n.neighbor.lladdr})
    addresses = defaultdict(list)
    for a in observed.addresses:
        # link-local: the kernel's; dynamic (finite lifetime): another agent's, never ipvland's
        if not (a.address.version == 6 and a.address.ip in _LINK_LOCAL) and not a.dynamic:
            addresses[(a.netns, a.ifindex)].append(str(a.address))

    def extras(link: ObservedLink, body: dict[str, Any]) -> dict[str, Any]:
        key = (link.netns, link.index)
        if routes.get(key):
            body["routes"] = routes[key]
        if neighbors.get(key):
            body["neighbors"] = neighbors[key]
        return body

    parents: dict[str, dict[str, Any]] = {}
    root = {link.name: link for link in observed.links if link.netns is None}
    for link in sorted(observed.links, key=lambda x: (x.parent or "", x.netns or "", x.name)):
        if link.kind != "ipvlan" or link.parent is None or not (link.owned or include_foreign):
            continue
        parent = parents.setdefault(link.parent, {})
        if link.mode is not None:
            parent.setdefault("mode", link.mode.label)
        if link.flags is not None:
            parent.setdefault("flags", link.flags.label)
        device: dict[str, Any] = {}
        if link.netns is not None:
            device["netns"] = link.netns
        device["addresses"] = addresses.get((link.netns, link.index), [])
        device["mtu"] = link.mtu
        device["state"] = "up" if link.up else "down"
        # what is off (1 is the kernel's default in a new namespace), so a rollback restores it
        ipv6 = {key.split(".", 1)[1]: False for key, value in link.sysctls
                if key.startswith("ipv6.") and key != normalize.KEEP_ADDR_ON_DOWN and value == 0}
        if ipv6:
            device["ipv6"] = ipv6
        parent.setdefault("devices", {})[link.name] = extras(link, device)
    # parents that carry only our routes or neighbors (a peer host's side)
    for name, link in sorted(root.items()):
        key = (None, link.index)
        if link.kind != "ipvlan" and (routes.get(key) or neighbors.get(key)):
            extras(link, parents.setdefault(name, {}))
    return {"version": 1, "parents": dict(sorted(parents.items()))}
