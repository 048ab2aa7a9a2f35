"""Observed -> a config document (pure): `ipvland show` prints live state as a valid spec.

Only what ipvland owns, unless `include_foreign`: then ipvlans it does not own are added too, so an
operator can adopt them (ipvland will still refuse to touch them until they carry its alias).
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from typing import Any

from ipvland import normalize
from ipvland.model import (
    FULL_MARK_MASK,
    MAIN_TABLE,
    PLAIN,
    AddressOptions,
    IPInterface,
    Observed,
    ObservedLink,
    Route,
    Rule,
    is_path_netns,
)

_LINK_LOCAL = ipaddress.IPv6Network("fe80::/10")


def _route(route: Route, dev: str | None = None) -> dict[str, Any]:
    """A route as the spec says it; `dev`: the device it is listed under (its nexthops' default)."""
    gateway = route.via is not None or any(n.via is not None for n in route.nexthops)
    if route.to.prefixlen == 0:
        # "default" means IPv4 unless via says otherwise; say ::/0 for an IPv6 default without via
        to = "default" if route.to.version == 4 or route.via is not None else "::/0"
    else:
        to = str(route.to)
    out: dict[str, Any] = {"to": to}
    if route.type != "unicast":
        out["type"] = route.type
    if route.via is not None:
        out["via"] = str(route.via)
    if route.onlink:
        out["onlink"] = True
    if route.src is not None:
        out["src"] = str(route.src)
    if route.scope is not None and route.scope != normalize.route_scope(route.to.version, route.type, None, gateway):
        out["scope"] = next(k for k, v in normalize.ROUTE_SCOPES.items() if v == route.scope)
    if route.metric is not None and route.metric != normalize.DEFAULT_METRIC[route.to.version]:
        out["metric"] = route.metric
    if route.table is not None and route.table != MAIN_TABLE:
        out["table"] = route.table
    if route.mtu is not None:
        out["mtu"] = route.mtu
    if route.nexthops:
        out["nexthops"] = [{k: v for k, v in (("via", str(n.via) if n.via else None),
                                              ("dev", n.dev if n.dev != dev else None),
                                              ("weight", n.weight if n.weight != 1 else None)) if v is not None}
                           for n in route.nexthops]
    return out


def _address(address: IPInterface, options: AddressOptions) -> Any:
    """The short form, or the long one when the address says more than IP and prefix length."""
    if options == PLAIN:
        return str(address)
    out: dict[str, Any] = {"address": str(address)}
    out.update((k, True) for k in ("nodad", "noprefixroute", "home") if getattr(options, k))
    if options.deprecated:
        out["preferred_lft"] = 0
    if options.peer is not None:
        out["peer"] = str(options.peer)
    return out


def _default(key: str, value: int) -> bool:
    sysctl = normalize.SYSCTLS[key]
    return normalize.sysctl_matches(sysctl.default, value, key)


def _sysctl_value(key: str, value: int) -> object:
    sysctl = normalize.SYSCTLS[key]
    if sysctl.labels:
        return sysctl.labels[value] if 0 <= value < len(sysctl.labels) else value
    return value if sysctl.exact else bool(value)


def to_document(observed: Observed, include_foreign: bool = False) -> dict[str, Any]:
    routes = defaultdict(list)
    names = {(link.netns, link.index): link.name for link in observed.links}
    for r in observed.routes:
        if r.owned:
            # a reject route (no device) is listed under the first device shown in its namespace
            routes[(r.netns, r.ifindex)].append(_route(r.route, names.get((r.netns, r.ifindex))))
    neighbors = defaultdict(list)
    for n in observed.neighbors:
        if n.owned:
            neighbors[(n.netns, n.ifindex)].append({"address": str(n.neighbor.address),
                                                    "lladdr": n.neighbor.lladdr})
    addresses = defaultdict(list)
    for a in observed.addresses:
        # link-local: the kernel's; dynamic (finite lifetime): another agent's, never ipvland's
        if not (a.address.version == 6 and a.address.ip in _LINK_LOCAL) and not a.dynamic:
            addresses[(a.netns, a.ifindex)].append(_address(a.address, a.options))

    def extras(link: ObservedLink, body: dict[str, Any]) -> dict[str, Any]:
        key = (link.netns, link.index)
        if routes.get(key) or routes.get((link.netns, 0)):
            body["routes"] = routes[key] + routes.pop((link.netns, 0), [])
        if neighbors.get(key):
            body["neighbors"] = neighbors[key]
        return body

    parents: dict[str, dict[str, Any]] = {}
    forwarding = dict(observed.ip_forward)
    said_forwarding = set(forwarding)
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
            device["netns"] = {"path": link.netns} if is_path_netns(link.netns) else link.netns
        device["addresses"] = addresses.get((link.netns, link.index), [])
        device["mtu"] = link.mtu
        device["state"] = "up" if link.up else "down"
        # what differs from the kernel's default on a device of a new namespace, so a rollback restores it
        for family in ("ipv6", "ipv4"):
            block = {key.split(".", 1)[1]: _sysctl_value(key, value) for key, value in link.sysctls
                     if key.startswith(f"{family}.") and normalize.SYSCTLS[key].in_spec and not _default(key, value)}
            if block:
                device[family] = block
        forward = forwarding.pop(link.netns, None)  # the namespace's: said on its first device shown
        if forward is not None:
            device.setdefault("ipv4", {})["ip_forward"] = bool(forward)
        if link.netns in said_forwarding and "ipv4" in device:
            device["ipv4"].pop("forwarding", None)  # ip_forward sets them all (normalize.IP_FORWARD)
            if not device["ipv4"]:
                del device["ipv4"]
        parent.setdefault("devices", {})[link.name] = extras(link, device)
    # parents that carry only our routes or neighbors (a peer host's side)
    for name, link in sorted(root.items()):
        key = (None, link.index)
        if link.kind != "ipvlan" and (routes.get(key) or neighbors.get(key)):
            extras(link, parents.setdefault(name, {}))
    rejects = routes.pop((None, 0), [])  # in ipvland's own namespace, and no device of ours took them
    if rejects:
        home = min(parents) if parents else min((n for n, x in root.items() if x.kind != "ipvlan"), default=None)
        if home is not None:
            parents.setdefault(home, {}).setdefault("routes", []).extend(rejects)
    doc: dict[str, Any] = {"version": 1, "parents": dict(sorted(parents.items()))}
    rules = [_rule(r.rule) for r in observed.rules if r.owned]
    if rules:
        doc["rules"] = rules
    return doc


def _rule(rule: Rule) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if rule.netns is not None:
        out["netns"] = rule.netns
    out["priority"] = rule.priority
    out["family"] = f"ipv{rule.family}"
    selectors: tuple[tuple[str, object], ...] = (
        ("from", str(rule.src) if rule.src else None), ("to", str(rule.dst) if rule.dst else None),
        ("iif", rule.iif), ("oif", rule.oif), ("fwmark", rule.fwmark))
    out.update((key, value) for key, value in selectors if value is not None)
    if rule.fwmask is not None and rule.fwmask != FULL_MARK_MASK:
        out["fwmask"] = rule.fwmask
    if rule.action == "table":
        out["table"] = rule.table
    else:
        out["action"] = rule.action
    if rule.invert:
        out["not"] = True
    return out
