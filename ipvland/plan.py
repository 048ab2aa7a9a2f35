"""(desired Spec, Observed kernel state) -> Plan: the ordered, minimal list of changes. Pure: no I/O.

Ownership rules (README "Ownership"): ipvland changes only ipvlans whose alias is OWNER_ALIAS,
routes and neighbor entries whose protocol is RT_PROTO, and addresses on devices it owns. Anything
else that stands in the way is a Conflict for that one object; the rest of the plan goes on.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace

from ipvland import normalize
from ipvland.model import (
    TEMP_PREFIX,
    AddressAdd,
    AddressDelete,
    Change,
    Conflict,
    Device,
    Flag,
    IPInterface,
    LinkCreate,
    LinkDelete,
    LinkMtuSet,
    LinkStateSet,
    LinkSysctlSet,
    Mode,
    NamespaceCreate,
    NamespaceSysctlSet,
    Neighbor,
    NeighborDelete,
    NeighborSet,
    Observed,
    ObservedAddress,
    ObservedLink,
    ObservedNeighbor,
    ObservedRoute,
    ObservedRule,
    Parent,
    ParentMatch,
    Plan,
    PortModeSet,
    Route,
    RouteDelete,
    RouteSet,
    RuleAdd,
    RuleDelete,
    Settling,
    Spec,
    State,
    is_path_netns,
)

# The order in which changes run: sysctls of kept devices first (promote_secondaries must be set
# before an address is deleted), deletions (they free names and addresses), then namespace, port
# mode, device, its sysctls, MTU, addresses, the deletion of addresses that nothing else needs gone
# first (added before deleted: an address that stays never goes with a primary), up, routes,
# neighbors. See _rank.
_ORDER: tuple[type | str, ...] = (
    "sysctl-kept", NeighborDelete, RouteDelete, "address-freed", LinkDelete,
    NamespaceCreate, NamespaceSysctlSet, PortModeSet, LinkCreate, "sysctl-new", LinkMtuSet, AddressAdd, AddressDelete,
    LinkStateSet, RouteSet, NeighborSet, RuleAdd, RuleDelete,
)
_LINK_LOCAL = ipaddress.IPv6Network("fe80::/10")
_DAD_FAILED = "DAD failed: a duplicate on the link; re-added"

Ns = str | None


def temp_name(netns: str | None, name: str) -> str:
    """A deterministic temporary name, so that `plan` shows exactly what `apply` does."""
    digest = hashlib.sha256(f"{netns}/{name}".encode()).hexdigest()[:8]
    return f"{TEMP_PREFIX}{digest}"


def _where(netns: Ns) -> str:
    return f" netns {netns}" if netns is not None else ""


@dataclass
class _Index:
    """Observed state indexed for O(1) lookups, so planning stays linear in the number of objects."""

    links: dict[tuple[Ns, str], ObservedLink] = field(default_factory=dict)
    by_index: dict[tuple[Ns, int], ObservedLink] = field(default_factory=dict)
    addresses: dict[tuple[Ns, int], dict[IPInterface, ObservedAddress]] = field(
        default_factory=lambda: defaultdict(dict))
    routes: dict[tuple[Ns, tuple[int, object, int, int]], list[ObservedRoute]] = field(
        default_factory=lambda: defaultdict(list))
    neighbors: dict[tuple[Ns, int, object], ObservedNeighbor] = field(default_factory=dict)
    port_members: dict[str, list[ObservedLink]] = field(default_factory=lambda: defaultdict(list))

    @classmethod
    def of(cls, observed: Observed) -> _Index:
        ix = cls()
        for link in observed.links:
            ix.links[(link.netns, link.name)] = link
            ix.by_index[(link.netns, link.index)] = link
            if link.kind == "ipvlan" and link.parent is not None:
                ix.port_members[link.parent].append(link)
        for a in observed.addresses:
            ix.addresses[(a.netns, a.ifindex)][a.address] = a
        for r in observed.routes:
            ix.routes[(r.netns, r.route.key)].append(r)
        for n in observed.neighbors:
            ix.neighbors[(n.netns, n.ifindex, n.neighbor.address)] = n
        return ix


class _Planner:
    def __init__(self, spec: Spec, observed: Observed) -> None:
        self.spec = spec
        self.observed = observed
        self.ix = _Index.of(observed)
        self.changes: list[Change] = []
        self.conflicts: list[Conflict] = []
        self.pending: list[Conflict] = []
        self.settling: list[Settling] = []
        # Owned links that stay (in the spec, on the right parent) and those we delete.
        self.kept: set[tuple[Ns, str]] = set()
        self.doomed: set[tuple[Ns, str]] = set()
        # (netns, dev-name) of every device/parent whose routes and neighbors the spec manages.
        self.wanted_routes: set[tuple[Ns, tuple[int, object, int, int]]] = set()
        self.wanted_neighbors: set[tuple[Ns, int, object]] = set()
        self.needs_full_view: str | None = None
        # parents given by a match that found no NIC, or several: (reason, an error rather than pending)
        self.unresolved: dict[str, tuple[str, bool]] = {}
        self.port_unseen: set[str] = set()  # parents with no ipvlan in a partial view
        # (netns, ifindex) of links whose owned routes and neighbors wait with them: the devices and
        # the renamed parent of a spec parent that is missing (they are never pruned meanwhile).
        self.waiting: set[tuple[Ns, int]] = set()

    # ------------------------------------------------------------ entry point

    def run(self) -> Plan:
        namespaces_made: set[str] = set()
        resolved = self._resolve()
        for parent in self.spec.parents:
            self._parent(parent, namespaces_made)
        self._prune()
        self._rules()
        self._ip_forward()
        changes = sorted(self.changes, key=_Rank(self.changes))  # stable: spec order within a kind
        return Plan(tuple(changes), tuple(self.conflicts), tuple(self.pending), self.needs_full_view,
                    settling=tuple(self.settling), resolved=tuple(resolved))

    def _resolve(self) -> list[tuple[str, str]]:
        """Parents given by a stable key (ParentMatch) get the name of the one NIC that matches, now.
        No match: the parent is missing (its devices pending, as for a missing name); two or more,
        or a NIC another parent names too: an error for that parent alone, which then plans nothing."""
        if not any(p.match for p in self.spec.parents):
            return []
        named = {p.name for p in self.spec.parents if p.match is None}
        nics = [x for x in self.observed.links if x.netns is None and x.kind != "ipvlan"]
        parents: list[Parent] = []
        resolved: list[tuple[str, str]] = []
        for parent in self.spec.parents:
            if parent.match is None:
                parents.append(parent)
                continue
            hits = sorted(x.name for x in nics if _matches(x, parent.match))
            what = parent.match.describe()
            if len(hits) == 1 and hits[0] not in named and hits[0] not in (n for _, n in resolved):
                resolved.append((parent.name, hits[0]))
                parents.append(_renamed(parent, hits[0]))
                continue
            # unresolved: planned as a missing parent (its devices wait and are never deleted meanwhile)
            if len(hits) > 1:
                self.unresolved[parent.name] = (f"{what} matches {len(hits)} NICs ({', '.join(hits)}); make "
                                                "the match say one", True)
            elif hits:
                self.unresolved[parent.name] = (f"{what} matches {hits[0]}, which another parent of the spec "
                                                "is already", True)
            else:
                self.unresolved[parent.name] = (f"no NIC matches {what}", False)
            parents.append(parent)
        self.spec = replace(self.spec, parents=tuple(parents))
        return resolved

    # ------------------------------------------------------------ per parent

    def _parent(self, parent: Parent, namespaces_made: set[str]) -> None:
        link = self.ix.links.get((None, parent.name))
        if link is None or parent.name in self.unresolved:
            self._missing_parent(parent)
            return
        if link.kind == "ipvlan":
            self.conflicts.append(Conflict(
                f"parent {parent.name}", "is itself an ipvlan; name its real parent instead"))
            return
        if None in self.observed.scanned:  # else a repair elsewhere: the host's own are unknown
            self._routes(None, parent.name, link.index, parent.routes)
            self._neighbors(None, parent.name, link.index, parent.neighbors)
        if not parent.devices:
            return
        assert parent.mode is not None  # the loader requires a mode once a parent has devices
        port_ok = self._port(parent, parent.mode)
        for device in parent.devices:
            self._device(parent, device, parent.mode, port_ok, namespaces_made)

    def _missing_parent(self, parent: Parent) -> None:
        """A parent not found: its devices are pending. Those that exist (owned, under the same
        name) sit on a parent renamed outside ipvland (same ifindex, new name): they are kept as
        they are, never deleted, until the spec names their parent again."""
        waiting = f"; {len(parent.devices)} device(s) wait for it" if parent.devices else ""
        found: dict[str, list[str]] = defaultdict(list)
        for device in parent.devices:
            existing = self.ix.links.get((device.netns, device.name))
            if existing is None or not existing.owned or not self.observed.sees(device.netns):
                continue
            self.kept.add((device.netns, device.name))
            self.waiting.add((device.netns, existing.index))
            for route in device.routes:
                self.wanted_routes.add((device.netns, route.key))
            on = existing.parent or "?"
            found[on].append(device.name + _where(device.netns))
            host = self.ix.links.get((None, on))
            if host is not None:
                self.waiting.add((None, host.index))
        for route in parent.routes:
            self.wanted_routes.add((None, route.key))
        kept = "".join(f"; {', '.join(names)} found on parent {on} (renamed?): kept as they are until "
                       f"the spec names their parent" for on, names in sorted(found.items()))
        reason, error = self.unresolved.get(parent.name, ("not found", False))
        problem = Conflict(f"parent {parent.name}", f"{reason}{waiting}{kept}")
        (self.conflicts if error else self.pending).append(problem)

    def _port(self, parent: Parent, mode: Mode) -> bool:
        """Plan the parent's mode and flags. False when creating on it would re-mode a foreign ipvlan."""
        members = self.ix.port_members.get(parent.name, [])
        if not members:
            if self.observed.scope is not None and not self.observed.ports_known:
                # None in view, so the port's mode is unknown: a create would set it for siblings
                # out of view, foreign ones included. Creating needs the whole picture.
                self.port_unseen.add(parent.name)
            return True
        current_mode, current_flags = members[0].mode, members[0].flags
        if current_mode == mode and current_flags == parent.flags:
            return True
        if self.observed.scope is not None:
            # Siblings in namespaces out of view (foreign ones included) would change too.
            self.needs_full_view = f"parent {parent.name}: mode/flags differ"
            return False
        # A leftover temporary device is ours: it is deleted before the mode changes.
        foreign = sorted(m.name + _where(m.netns) for m in members if not (m.owned or m.leftover))
        if foreign:
            self.conflicts.append(Conflict(
                f"parent {parent.name}",
                f"mode/flags {_label(current_mode)}/{_label(current_flags)} -> {mode.label}/"
                f"{parent.flags.label} would also change ipvlan(s) ipvland does not own: "
                + ", ".join(foreign)))
            return False
        wanted = {(d.netns, d.name) for d in parent.devices}
        via = next((m for m in members if m.owned and (m.netns, m.name) in wanted), None)
        if via is not None:
            self.changes.append(PortModeSet(parent.name, (via.netns, via.name), mode, parent.flags,
                                            current_mode, current_flags))
        # Otherwise every member is ours and leaves the spec: creating new ones sets the mode.
        return True

    # ------------------------------------------------------------ per device

    def _device(self, parent: Parent, device: Device, mode: Mode, port_ok: bool,
                namespaces_made: set[str]) -> None:
        ns, name = device.netns, device.name
        if not self.observed.sees(ns):
            return  # out of view: unknown, not absent
        subject = f"link {name}{_where(ns)}"
        if is_path_netns(ns) and ns not in self.observed.namespaces:
            # never created by ipvland: a container runtime's, gone with its container (or not yet there)
            self.pending.append(Conflict(subject, "the namespace path is no network namespace now (its container "
                                                  "stopped?); the device waits for it"))
            return
        existing = self.ix.links.get((ns, name))
        if existing is not None and not existing.owned:
            kind = existing.kind or "physical"
            self.conflicts.append(Conflict(
                subject, f"a {kind} device that ipvland does not own has this name; left untouched"))
            return
        if existing is not None and existing.parent != parent.name:
            self.changes.append(LinkDelete(ns, name, f"parent {existing.parent} -> {parent.name}"))
            self.doomed.add((ns, name))
            existing = None
        if existing is None:
            if parent.name in self.port_unseen:
                self.needs_full_view = f"link {name}{_where(ns)}: the mode of parent {parent.name} is not in view"
                return
            if not port_ok:
                self.conflicts.append(Conflict(subject, f"not created: parent {parent.name} is in conflict"))
                return
            self._create(device, mode, parent.flags, namespaces_made)
            return
        self.kept.add((ns, name))
        if device.mtu is not None and existing.mtu != device.mtu:
            self.changes.append(LinkMtuSet(ns, name, existing.mtu, device.mtu))
        if (device.state is State.UP) != existing.up:
            self.changes.append(LinkStateSet(ns, name, device.state is State.UP))
        self._sysctls(device, existing)
        if ns not in self.observed.scanned:
            return  # only its link was read (a device in ipvland's own namespace, a repair elsewhere)
        self._addresses(device, self.ix.addresses.get((ns, existing.index), {}))
        self._routes(ns, name, existing.index, _active_routes(device))
        # a state change flushes its neighbor entries: they are set again after it (normalize.py)
        flushed = (device.state is State.UP) != existing.up
        self._neighbors(ns, name, existing.index, device.neighbors, flushed)

    def _create(self, device: Device, mode: Mode, flags: Flag, namespaces_made: set[str]) -> None:
        ns = device.netns
        if ns is not None and ns not in self.observed.namespaces and ns not in namespaces_made:
            namespaces_made.add(ns)
            self.changes.append(NamespaceCreate(ns))
        self.changes.append(LinkCreate(device, mode, flags, temp_name(ns, device.name)))
        self.kept.add((ns, device.name))
        # promote_secondaries is set by the create itself (normalize.PROMOTE_SECONDARIES)
        self._sysctls(device, None)
        self._addresses(device, {})
        if device.state is State.UP:
            self.changes.append(LinkStateSet(ns, device.name, True))
        self._routes(ns, device.name, None, _active_routes(device))
        self._neighbors(ns, device.name, None, device.neighbors)

    def _sysctls(self, device: Device, existing: ObservedLink | None) -> None:
        """The device's sysctls: promote_secondaries always (ours), the spec's own (ipv6: ...)."""
        wanted = dict(device.sysctls)
        if existing is not None:
            wanted.setdefault(normalize.PROMOTE_SECONDARIES, 1)
        if any(a.version == 6 for a in device.addresses):  # going down must not flush them
            wanted.setdefault(normalize.KEEP_ADDR_ON_DOWN, 1)
        for key, value in wanted.items():
            old = existing.sysctl(key) if existing is not None else None
            if not normalize.sysctl_matches(value, old, key):
                self.changes.append(LinkSysctlSet(device.netns, device.name, key, old, value))

    def _addresses(self, device: Device, present: dict[IPInterface, ObservedAddress]) -> None:
        """Add what is missing, delete what is not in the spec (see _ORDER for when), and re-add an
        address whose DAD failed. Link-local and dynamic addresses (a finite lifetime: SLAAC,
        temporary, DHCP) belong to the kernel and other agents: left alone."""
        ns, name = device.netns, device.name
        wanted = set(device.addresses)
        # the kernel's and other agents' addresses first left out, then the rest sorted (by its text,
        # which costs: every device has a link-local address that is never sorted here)
        extra = [address for address in present.keys() - wanted
                 if not (address.version == 6 and address.ip in _LINK_LOCAL) and not present[address].dynamic]
        for address in sorted(extra, key=_address_order):
            self.changes.append(AddressDelete(ns, name, address, peer=present[address].options.peer))
        for address in device.addresses:
            seen = present.get(address)
            options = device.options(address)
            if seen is not None and seen.dad_failed:
                self.changes.append(AddressDelete(ns, name, address, _DAD_FAILED, seen.options.peer))
                self.conflicts.append(Conflict(
                    f"address {address} dev {name}{_where(ns)}",
                    "duplicate address detected on the link (IPv6 DAD failed): another host has it; "
                    "re-added"))
            if seen is None or seen.dad_failed:
                self.changes.append(AddressAdd(ns, name, address, options))
                continue
            if seen.tentative and device.state is not State.DOWN:  # DAD waits for up: not settling
                self.settling.append(Settling(ns, f"address {address} dev {name}{_where(ns)}",
                                              "IPv6 duplicate address detection in progress"))
            if seen.options != options:
                changed = {k for k in vars(options) if getattr(options, k) != getattr(seen.options, k)}
                if address.version == 6 or changed <= normalize.IPV4_REPLACEABLE:
                    self.changes.append(AddressAdd(ns, name, address, options, replace=True))
                else:  # an IPv4 address keeps its flags and peer: delete it, add it anew
                    self.changes.append(AddressDelete(ns, name, address, f"{', '.join(sorted(changed))} "
                                                                         "changed: re-added", seen.options.peer))
                    self.changes.append(AddressAdd(ns, name, address, options))

    def _routes(self, ns: Ns, dev: str, ifindex: int | None, routes: Iterable[Route]) -> None:
        for route in routes:
            route = _through(route, dev)
            self.wanted_routes.add((ns, route.key))
            same_key = self.ix.routes.get((ns, route.key), [])
            ours = [r for r in same_key if r.owned]
            # a reject route has no device; a multipath one names its devices in its nexthops
            anywhere = route.reject or bool(route.nexthops)
            if ours and all((anywhere or r.ifindex == ifindex) and r.route.attrs == route.attrs for r in ours):
                continue  # in place; another agent's route beside it (an RA's, say) is not fought
            foreign = [r for r in same_key if not r.owned]
            if foreign:
                self.conflicts.append(Conflict(
                    f"route {route.describe()} dev {dev}{_where(ns)}",
                    f"a route ipvland does not own (proto {foreign[0].protocol_name}) has this "
                    f"destination, table and metric; left untouched{_hint(foreign[0])}"))
                continue
            self.changes.append(RouteSet(ns, dev, route, replace=bool(same_key)))

    def _neighbors(self, ns: Ns, dev: str, ifindex: int | None, neighbors: Iterable[Neighbor],
                   flushed: bool = False) -> None:
        """flushed: the plan sets the device up or down, which flushes its entries: each is set again."""
        for neighbor in neighbors:
            if ifindex is None:
                self.changes.append(NeighborSet(ns, dev, neighbor))
                continue
            key = (ns, ifindex, neighbor.address)
            self.wanted_neighbors.add(key)
            present = self.ix.neighbors.get(key)
            if present is None:
                self.changes.append(NeighborSet(ns, dev, neighbor))
            elif flushed and present.owned:
                self.changes.append(NeighborSet(ns, dev, neighbor, replace=True))
            elif present.permanent and not present.owned:
                self.conflicts.append(Conflict(
                    f"neighbor {neighbor.address} dev {dev}{_where(ns)}",
                    f"a permanent entry ipvland does not own (lladdr {present.neighbor.lladdr}) is there; "
                    "left untouched"))
            elif not (present.owned and present.permanent and present.neighbor.lladdr == neighbor.lladdr):
                # a learned (dynamic) entry, or ours with another lladdr: replace in place
                self.changes.append(NeighborSet(ns, dev, neighbor, replace=True))

    # ------------------------------------------------------------ what leaves the spec

    def _prune(self) -> None:
        for link in self.observed.links:
            if not self.observed.sees(link.netns):
                continue  # read only for its port's sake (Observed.ports_known)
            key = (link.netns, link.name)
            # parent None: its parent is not in our namespace, so another ipvland instance (a peer
            # host in a lab, say) made it; never ours to prune.
            mine = (link.owned or link.leftover) and link.parent is not None
            if mine and key not in self.kept and key not in self.doomed:
                reason = "leftover of an interrupted create" if link.leftover else "not in the spec"
                self.changes.append(LinkDelete(link.netns, link.name, reason))
                self.doomed.add(key)
        for r in self.observed.routes:
            if (r.netns, r.ifindex) in self.waiting:
                continue
            if r.owned and (r.netns, r.route.key) not in self.wanted_routes:
                dev = "" if r.route.reject else self._surviving_name(r.netns, r.ifindex)
                if dev is not None:
                    self.changes.append(RouteDelete(r.netns, dev, r.route))
        for n in self.observed.neighbors:
            if (n.netns, n.ifindex) in self.waiting:
                continue
            if n.owned and (n.netns, n.ifindex, n.neighbor.address) not in self.wanted_neighbors:
                dev = self._surviving_name(n.netns, n.ifindex)
                if dev is not None:
                    self.changes.append(NeighborDelete(n.netns, dev, n.neighbor))

    def _rules(self) -> None:
        """Rules per namespace: ours (FRA_PROTOCOL) are added, and deleted once no spec rule has their
        attributes; a changed rule is added before the old one goes (the kernel takes two rules at one
        priority), so no packet meets a gap. Foreign rules, the kernel's 0/32766/32767 included,
        are never touched; one identical to a spec rule makes that rule a conflict."""
        observed: dict[tuple[Ns, int, int], list[ObservedRule]] = defaultdict(list)
        for r in self.observed.rules:
            observed[r.rule.key].append(r)
        wanted: set[tuple[tuple[Ns, int, int], tuple[object, ...]]] = set()
        for rule in self.spec.rules:
            if not self.observed.sees(rule.netns) or rule.netns not in self.observed.scanned | self._made:
                continue  # out of view, or a namespace not read: unknown
            wanted.add((rule.key, rule.attrs))
            same = [r for r in observed.get(rule.key, []) if r.rule.attrs == rule.attrs]
            if any(r.owned for r in same):
                continue
            if same:
                self.conflicts.append(Conflict(rule.describe(), f"an identical rule ipvland does not own "
                                                                f"(proto {same[0].protocol}) is there; left "
                                                                "untouched"))
                continue
            self.changes.append(RuleAdd(rule))
        for r in self.observed.rules:
            if r.owned and self.observed.sees(r.rule.netns) and (r.rule.key, r.rule.attrs) not in wanted:
                self.changes.append(RuleDelete(r.rule))

    def _ip_forward(self) -> None:
        """The namespaces' ip_forward (normalize.IP_FORWARD), once per namespace the spec sets it in."""
        seen = dict(self.observed.ip_forward)
        wanted = {d.netns: int(d.ip_forward) for d in self.spec.devices if d.ip_forward is not None}
        for ns, value in wanted.items():
            if not self.observed.sees(ns) or (ns not in self.observed.scanned and ns not in self._made):
                continue
            old = seen.get(ns)
            if not normalize.sysctl_matches(value, old):
                self.changes.append(NamespaceSysctlSet(ns, normalize.IP_FORWARD, old, value))

    @property
    def _made(self) -> set[Ns]:
        return {c.name for c in self.changes if isinstance(c, NamespaceCreate)}

    def _surviving_name(self, ns: Ns, ifindex: int) -> str | None:
        """The name of a device that is not being deleted (its routes and neighbors go with it)."""
        link = self.ix.by_index.get((ns, ifindex))
        if link is None or (ns, link.name) in self.doomed:
            return None
        return link.name


class _Rank:
    """The sort key of a change: its place in _ORDER.

    An address is deleted before the adds only when something needs it gone first: the same IP is
    added in this plan (moved to a sibling, a new prefix length, a failed DAD re-added; the kernel
    would refuse the add). Any other deletion waits until the adds are done, so a renumbering never
    leaves a device without the addresses that stay. Sysctls of a device being created follow
    its creation; those of a kept device go first (promote_secondaries before any deletion).
    """

    def __init__(self, changes: list[Change]) -> None:
        self.order = {kind: i for i, kind in enumerate(_ORDER)}
        self.added = {c.address.ip for c in changes if isinstance(c, AddressAdd)}
        self.created = {c.device for c in changes if isinstance(c, LinkCreate)}

    def __call__(self, change: Change) -> int:
        if isinstance(change, AddressDelete) and change.address.ip in self.added:
            return self.order["address-freed"]
        if isinstance(change, LinkSysctlSet):
            return self.order["sysctl-new" if change.device in self.created else "sysctl-kept"]
        return self.order[type(change)]


def _matches(link: ObservedLink, match: ParentMatch) -> bool:
    return ((match.mac is None or link.mac == match.mac)
            and (match.permanent_mac is None or link.permanent_mac == match.permanent_mac)
            and (match.path is None or link.path == match.path))


def _renamed(parent: Parent, name: str) -> Parent:
    """The parent under the name of the NIC it matched, its devices with it."""
    return replace(parent, name=name, match=None, devices=tuple(replace(d, parent=name) for d in parent.devices))


def _through(route: Route, dev: str) -> Route:
    """The route with every nexthop's device named: one without `dev` goes through `dev`, the
    device (or parent) the route is listed under; the kernel reports each nexthop's device."""
    if not any(n.dev is None for n in route.nexthops):
        return route
    return replace(route, nexthops=tuple(n if n.dev is not None else replace(n, dev=dev) for n in route.nexthops))


def _active_routes(device: Device) -> tuple[Route, ...]:
    """A down device carries no routes (normalize.DOWN_DEVICE_HAS_ROUTES): its spec routes wait."""
    if device.state is State.DOWN and not normalize.DOWN_DEVICE_HAS_ROUTES:
        return ()
    return tuple(device.routes)


def _hint(route: ObservedRoute) -> str:
    if route.protocol == 9:  # ra: a router advertisement's
        return " (a router advertisement's: set ipv6: {accept_ra: false} on the device to refuse them)"
    return ""


def _label(value: Mode | Flag | None) -> str:
    return value.label if value is not None else "?"


def _address_order(address: IPInterface) -> tuple[int, str]:
    return (address.version, str(address))


def plan(spec: Spec, observed: Observed) -> Plan:
    """The one function that computes what `plan`, `apply` and the daemon do."""
    return _Planner(spec, observed).run()


def iter_lines(p: Plan) -> Iterator[str]:
    for label, name in p.resolved:
        yield f"= parent {label} is {name}"
    for change in p.changes:
        yield change.describe()
    for conflict in (*p.conflicts, *p.pending):
        yield conflict.describe()
