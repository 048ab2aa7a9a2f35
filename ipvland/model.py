"""The immutable types that flow between the stages: spec -> observe -> plan -> apply.

Everything here is plain data: frozen dataclasses, enums and ipaddress values. No I/O.
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass, field
from enum import Enum

from ipvland import normalize

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# One object per distinct interface address, shared by the spec (spec.py) and the kernel's decoding
# (kernel.py): the planner's set and dict lookups of addresses then find the very object, an identity
# check, instead of calling ipaddress's __eq__ (an IPv6Interface compares its address, then its
# network): a tenth of a resync's plan at N=1000 (issue 13). Bounded: past the bound the table starts
# again, and lookups fall back to __eq__, never to a wrong answer.
_INTERNED: dict[IPInterface, IPInterface] = {}
_INTERN_MAX = 1 << 16


def interned(iface: IPInterface) -> IPInterface:
    """The shared object equal to `iface` (iface itself the first time)."""
    got = _INTERNED.get(iface)
    if got is None:
        if len(_INTERNED) >= _INTERN_MAX:
            _INTERNED.clear()
        got = _INTERNED.setdefault(iface, iface)
    return got


# Ownership markers (see README "Ownership").
OWNER_ALIAS = "ipvland"  # IFLA_IFALIAS of every ipvlan ipvland created
RT_PROTO = 212  # rtm_protocol of routes and NDA_PROTOCOL of neighbors ipvland installed
TEMP_PREFIX = "ipvtmp-"  # a device being created is called ipvtmp-<8 hex> until it is ours
MAIN_TABLE = normalize.MAIN_TABLE


class Mode(Enum):
    """IPVLAN mode; the value is the kernel's IFLA_IPVLAN_MODE."""

    L2 = 0
    L3 = 1
    L3S = 2

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def from_label(cls, label: str) -> Mode:
        return cls[label.upper()]


class Flag(Enum):
    """IPVLAN port flags; the value is the kernel's IFLA_IPVLAN_FLAGS (0 = bridge)."""

    BRIDGE = 0
    PRIVATE = 1
    VEPA = 2

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def from_label(cls, label: str) -> Flag:
        return cls[label.upper()]


class State(Enum):
    UP = "up"
    DOWN = "down"


# ---------------------------------------------------------------- desired state (the spec)


def _said(*pairs: tuple[str, object]) -> list[str]:
    """"key value" for each value that is set ("" for a flag: the key alone)."""
    return [f"{k} {v}".rstrip() for k, v in pairs if v is not None]


@dataclass(frozen=True, order=True)
class Nexthop:
    """One path of a multipath route. `dev` None: the device the route is listed under."""

    via: IPAddress | None = None
    dev: str | None = None
    weight: int = 1

    def describe(self) -> str:
        parts = ["nexthop"]
        if self.via is not None:
            parts.append(f"via {self.via}")
        if self.dev is not None:
            parts.append(f"dev {self.dev}")
        if self.weight != 1:
            parts.append(f"weight {self.weight}")
        return " ".join(parts)


@dataclass(frozen=True)
class Route:
    """A route through a device. `to` of 0.0.0.0/0 or ::/0 is the default route."""

    to: IPNetwork
    via: IPAddress | None = None
    metric: int | None = None
    table: int | None = None  # None means the main table
    src: IPAddress | None = None  # preferred source (RTA_PREFSRC); not part of the key
    type: str = "unicast"  # a key of normalize.ROUTE_TYPES
    onlink: bool = False
    scope: int | None = None  # rtm_scope; None: the kernel's default (normalize.route_scope)
    mtu: int | None = None  # RTAX_MTU
    nexthops: tuple[Nexthop, ...] = ()  # multipath, instead of via

    @property
    def family(self) -> int:
        return self.to.version

    @functools.cached_property
    def key(self) -> tuple[int, IPNetwork, int, int]:
        """What identifies a route in the kernel: family, destination, table, metric, as the kernel
        stores them (normalize: no metric is 0 for IPv4 and 1024 for IPv6; IPv6 metric 0 is 1024).
        Kept once computed, as attrs."""
        return (self.to.version, self.to, normalize.route_table(self.table),
                normalize.route_metric(self.to.version, self.metric))

    @property
    def reject(self) -> bool:
        """blackhole, unreachable, prohibit: no device, no gateway."""
        return self.type in normalize.REJECT_TYPES

    @property
    def effective_scope(self) -> int:
        gateway = self.via is not None or any(n.via is not None for n in self.nexthops)
        label = next((k for k, v in normalize.ROUTE_SCOPES.items() if v == self.scope), None)
        if self.scope is not None and label is None:
            return self.scope  # observed: a scope the spec cannot say (site, say)
        return normalize.route_scope(self.to.version, self.type, label, gateway)

    @functools.cached_property
    def attrs(self) -> tuple[object, ...]:
        """What a route with the same key may differ in, changed in place (NLM_F_REPLACE). Kept once
        computed (the planner compares it for every route at every reconcile; the route is frozen)."""
        hops = tuple(sorted(self.nexthops, key=lambda n: (n.dev or "", str(n.via), n.weight)))
        return (self.via, self.src, self.type, self.onlink, self.effective_scope, self.mtu, hops)

    def describe(self) -> str:
        to = "default" if self.to.prefixlen == 0 else str(self.to)
        parts = [] if self.type == "unicast" else [self.type]
        parts.append(to if self.to.version == 4 or to != "default" else "default (ipv6)")
        scope = None
        if self.scope is not None and self.scope != normalize.route_scope(self.to.version, self.type, None, bool(
                self.via is not None or any(n.via is not None for n in self.nexthops))):
            scope = next((k for k, v in normalize.ROUTE_SCOPES.items() if v == self.scope), str(self.scope))
        parts += _said(("via", self.via), ("onlink", "" if self.onlink else None), ("src", self.src),
                       ("scope", scope), ("metric", self.metric), ("table", self.table), ("mtu", self.mtu))
        parts.extend(n.describe() for n in self.nexthops)
        return " ".join(parts)


@dataclass(frozen=True, order=True)
class Neighbor:
    """A neighbor entry. `lladdr` is lower-case colon-separated; "" for an observed incomplete one."""

    address: IPAddress
    lladdr: str


@dataclass(frozen=True)
class AddressOptions:
    """What an address may say beside its IP and prefix length (all off: a plain static address)."""

    nodad: bool = False  # IPv6: no duplicate address detection (usable at once)
    noprefixroute: bool = False  # the kernel adds no prefix route for it
    home: bool = False  # IPv6: Mobile IPv6 home address
    deprecated: bool = False  # preferred lifetime 0: never chosen as a source (valid forever)
    peer: IPAddress | None = None  # point-to-point: the other end (the prefix length is the peer's)

    def describe(self) -> str:
        words = [k for k in ("nodad", "noprefixroute", "home", "deprecated") if getattr(self, k)]
        if self.peer is not None:
            words.append(f"peer {self.peer}")
        return "".join(f" {w}" for w in words)


PLAIN = AddressOptions()


RULE_ACTIONS = {"table": 1, "blackhole": 6, "unreachable": 7, "prohibit": 8}  # FR_ACT_*
FULL_MARK_MASK = 0xFFFFFFFF


@dataclass(frozen=True)
class Rule:
    """A policy routing rule (ip rule) in one namespace. ipvland's own carry FRA_PROTOCOL RT_PROTO."""

    priority: int
    family: int  # 4 or 6: a rule lives in one family's list
    netns: str | None = None
    src: IPNetwork | None = None  # from
    dst: IPNetwork | None = None  # to
    iif: str | None = None
    oif: str | None = None
    fwmark: int | None = None
    fwmask: int | None = None  # None with a fwmark: the kernel's 0xffffffff
    table: int | None = None  # action "table" (lookup) only
    action: str = "table"  # a key of RULE_ACTIONS
    invert: bool = False  # ip rule not ...

    @property
    def key(self) -> tuple[str | None, int, int]:
        return (self.netns, self.family, self.priority)

    @property
    def attrs(self) -> tuple[object, ...]:
        """Everything the kernel compares; the mask as it stores it (normalize)."""
        # The kernel's (mark, mask): no mask given is 0xffffffff for a mark, 0 for mark 0; a mask of 0
        # matches every packet, as no fwmark does. fwmark 0/0xff ("unmarked only") is a real filter.
        mask = self.fwmask if self.fwmask is not None else (FULL_MARK_MASK if self.fwmark else 0)
        fw = (self.fwmark or 0, mask) if mask else None
        return (self.src, self.dst, self.iif, self.oif, fw, self.table, self.action, self.invert)

    def describe(self) -> str:
        parts = [f"rule {self.priority}" + ("" if self.family == 4 else " (ipv6)")]
        if self.invert:
            parts.append("not")
        parts.append(f"from {self.src or 'all'}")
        parts += _said(("to", self.dst), ("iif", self.iif), ("oif", self.oif))
        if self.fwmark is not None and (self.fwmark or self.fwmask):
            parts.append(f"fwmark {self.fwmark:#x}" + (f"/{self.fwmask:#x}" if self.fwmask is not None else ""))
        parts.append(f"lookup {self.table}" if self.action == "table" else self.action)
        return " ".join(parts) + _where(self.netns)


def is_path_netns(netns: str | None) -> bool:
    """A namespace given by path (`netns: {path: ...}`, a container runtime's), not by name: its
    absolute path is its key everywhere (os.path.join(NETNS_DIR, path) is the path itself). ipvland
    never creates nor deletes one."""
    return netns is not None and netns.startswith("/")


@dataclass(frozen=True)
class Device:
    name: str
    parent: str
    netns: str | None = None  # None: the parent's (ipvland's own) namespace
    addresses: tuple[IPInterface, ...] = ()
    mtu: int | None = None
    state: State = State.UP
    routes: tuple[Route, ...] = ()
    neighbors: tuple[Neighbor, ...] = ()
    # Per-device sysctls the spec sets, as (normalize.SYSCTLS key, value), e.g. ("ipv6.accept_ra", 0).
    sysctls: tuple[tuple[str, int], ...] = ()
    ip_forward: bool | None = None  # its namespace's net.ipv4.ip_forward (normalize.IP_FORWARD)
    # The addresses that say more than IP and prefix length, and what (AddressOptions).
    address_options: tuple[tuple[IPInterface, AddressOptions], ...] = ()

    def options(self, address: IPInterface) -> AddressOptions:
        return next((o for a, o in self.address_options if a == address), PLAIN)


@dataclass(frozen=True)
class ParentMatch:
    """A stable key for a NIC whose name differs between hosts (os-net-config's nic1 -> a MAC)."""

    mac: str | None = None  # the current MAC address (IFLA_ADDRESS)
    permanent_mac: str | None = None  # the burnt-in one (IFLA_PERM_ADDRESS; a bond port's stays)
    path: str | None = None  # udev's ID_PATH, e.g. pci-0000:3b:00.0

    def describe(self) -> str:
        return ", ".join(f"{k} {v}" for k, v in vars(self).items() if v is not None)


@dataclass(frozen=True)
class Parent:
    name: str  # with match: a label, replaced by the matching NIC's name at every plan
    mode: Mode | None = None  # required once the parent has devices
    flags: Flag = Flag.BRIDGE
    routes: tuple[Route, ...] = ()
    neighbors: tuple[Neighbor, ...] = ()
    devices: tuple[Device, ...] = ()
    match: ParentMatch | None = None


@dataclass(frozen=True)
class Probe:
    """A connectivity check (issue 5): ICMP from a namespace to a target."""

    target: IPAddress
    netns: str | None = None
    tries: int = 3
    timeout: float = 1.0


@dataclass(frozen=True)
class Spec:
    version: int
    parents: tuple[Parent, ...] = ()
    sources: tuple[str, ...] = ()  # the files it was read from, in merge order
    probes: tuple[Probe, ...] = ()
    rules: tuple[Rule, ...] = ()
    # SHA-256 of the bytes this Spec was parsed from (spec.Tree.spec), "" when it was not read from files.
    # Taken from the very bytes parsed, never by reading the files again: a file replaced between the
    # parse and a second read would pair one content with the other's digest. Not part of equality:
    # a comment changes the files, not the config.
    files_sha256: str = field(default="", compare=False)

    # Worked out once per Spec (frozen): a repair asks for them several times, 1000 devices each.
    @functools.cached_property
    def devices(self) -> tuple[Device, ...]:
        return tuple(d for p in self.parents for d in p.devices)

    @functools.cached_property
    def namespaces(self) -> frozenset[str]:
        return frozenset(d.netns for d in self.devices if d.netns is not None)

    @functools.cached_property
    def path_namespaces(self) -> frozenset[str]:
        """The namespaces given by path (is_path_netns)."""
        return frozenset(ns for ns in self.namespaces if is_path_netns(ns))


# ---------------------------------------------------------------- observed state (the kernel)


@dataclass(frozen=True)
class ObservedLink:
    netns: str | None  # None: ipvland's own namespace
    index: int
    name: str
    kind: str | None  # "ipvlan", "veth", ... or None for a physical NIC
    mtu: int
    up: bool  # IFF_UP (admin state)
    mac: str | None = None
    alias: str | None = None
    parent: str | None = None  # for an ipvlan: the name of its parent in ipvland's own namespace
    mode: Mode | None = None  # for an ipvlan
    flags: Flag | None = None  # for an ipvlan
    # For an ipvlan: the per-device sysctls of normalize.SYSCTLS the link dump reports, as
    # (key, value); a key is missing when the device has no such setting (no IPv6 below 1280).
    sysctls: tuple[tuple[str, int], ...] = ()
    permanent_mac: str | None = None  # IFLA_PERM_ADDRESS (Linux 5.6+; physical NICs)
    path: str | None = None  # udev's ID_PATH, read only when a parent is matched by it

    @property
    def owned(self) -> bool:
        return self.kind == "ipvlan" and self.alias == OWNER_ALIAS

    @property
    def leftover(self) -> bool:
        """A temporary device of an interrupted create: ipvland's own, to be removed."""
        return self.kind == "ipvlan" and self.name.startswith(TEMP_PREFIX) and not self.owned

    def sysctl(self, key: str) -> int | None:
        return next((v for k, v in self.sysctls if k == key), None)


@dataclass(frozen=True)
class ObservedAddress:
    netns: str | None
    ifindex: int
    address: IPInterface
    # A finite valid lifetime: SLAAC, temporary or DHCP, another agent's; ipvland leaves it alone.
    dynamic: bool = False
    dad_failed: bool = False  # IPv6 duplicate address detection failed: present but unusable
    options: AddressOptions = PLAIN
    # IPv6 DAD still running (IFA_F_TENTATIVE, ~1-2 s after an add): present, not yet usable
    # (a bind() to it fails with EADDRNOTAVAIL); the kernel sends RTM_NEWADDR when it is done.
    tentative: bool = False


@dataclass(frozen=True)
class ObservedRoute:
    netns: str | None
    ifindex: int  # the output device (RTA_OIF)
    route: Route  # table/metric filled in as the kernel reports them (None for main/0)
    protocol: int

    @property
    def owned(self) -> bool:
        return self.protocol == RT_PROTO

    @property
    def protocol_name(self) -> str:
        return normalize.protocol_name(self.protocol)


@dataclass(frozen=True)
class ObservedNeighbor:
    netns: str | None
    ifindex: int
    neighbor: Neighbor
    permanent: bool
    protocol: int | None

    @property
    def owned(self) -> bool:
        return self.protocol == RT_PROTO


@dataclass(frozen=True)
class ObservedRule:
    rule: Rule  # netns set
    protocol: int  # FRA_PROTOCOL (0 on a kernel before 4.17)

    @property
    def owned(self) -> bool:
        return self.protocol == RT_PROTO


@dataclass(frozen=True)
class Observed:
    """A snapshot of what the kernel has, in ipvland's own namespace and in named namespaces.

    `scanned` lists the namespaces whose addresses, routes, neighbors and rules were dumped;
    elsewhere only links were read, and those objects are unknown, not absent.

    `scope` None: links were read in every namespace. Otherwise a partial view for repairing drift
    fast: only these namespaces were read at all (ipvland's own, None, always among them, for its
    links: the parents); what is elsewhere is unknown, not absent, and the planner leaves it alone.
    Ipvland's own namespace is in `scanned` only when the repair was asked for it (observe).

    `ports_known`: a partial view that also shows the mode of every port of the spec: out of scope,
    ipvlans were read (one filtered link dump per namespace, nothing else) until each port showed
    a member (all members share the port's mode and flags), or every namespace was read (the port
    has none). What a device re-created alone on its port needs: its create sets the port's mode,
    which changes nothing when the port is already in that mode.
    """

    namespaces: frozenset[str] = frozenset()  # named namespaces that exist (/run/netns)
    links: tuple[ObservedLink, ...] = ()
    addresses: tuple[ObservedAddress, ...] = ()
    routes: tuple[ObservedRoute, ...] = ()
    neighbors: tuple[ObservedNeighbor, ...] = ()
    scanned: frozenset[str | None] = field(default_factory=lambda: frozenset({None}))
    scope: frozenset[str | None] | None = None
    rules: tuple[ObservedRule, ...] = ()  # read where addresses are (scanned)
    # (netns, value) of net.ipv4.ip_forward, read only in the namespaces whose spec sets it
    ip_forward: tuple[tuple[str | None, int], ...] = ()
    ports_known: bool = False

    def sees(self, netns: str | None) -> bool:
        return self.scope is None or netns in self.scope


# ---------------------------------------------------------------- changes (the plan)
#
# Each change is one small value that prints as one line. `device` names the (netns, name) of the
# link a change acts on, so that apply can skip the changes of a device whose creation failed.

DeviceRef = tuple[str | None, str]  # (netns, name)


def _where(netns: str | None) -> str:
    return f" netns {netns}" if netns is not None else ""


def route_dev(route: Route, dev: str) -> str:
    """' dev NAME' for a route through a device; a reject or multipath route says its own."""
    return "" if route.reject or route.nexthops else f" dev {dev}"


class _OnLink:
    """A change to link `name` in `netns`."""

    netns: str | None
    name: str

    @property
    def device(self) -> DeviceRef:
        return (self.netns, self.name)


class _OnDevice:
    """A change to an object (address, route, neighbor) of device `dev` in `netns`."""

    netns: str | None
    dev: str

    @property
    def device(self) -> DeviceRef:
        return (self.netns, self.dev)


@dataclass(frozen=True)
class NamespaceCreate:
    name: str

    @property
    def device(self) -> DeviceRef | None:
        return None

    def describe(self) -> str:
        return f"+ netns {self.name}"


@dataclass(frozen=True)
class LinkCreate:
    """Create an ipvlan in two requests that leave nothing unowned behind if ipvland dies between them.

    The device is created on its parent straight into its namespace under `temp_name`, then named
    and marked ours (alias) in one changelink. A device left under a temporary name is removed by
    the next plan; one with the final name but no alias would be foreign (a conflict) forever.
    """

    spec: Device
    mode: Mode
    flags: Flag
    temp_name: str

    @property
    def device(self) -> DeviceRef:
        return (self.spec.netns, self.spec.name)

    def describe(self) -> str:
        flags = "" if self.flags is Flag.BRIDGE else f" {self.flags.label}"
        mtu = f" mtu {self.spec.mtu}" if self.spec.mtu is not None else ""
        return (f"+ link {self.spec.name} ipvlan {self.mode.label}{flags} on {self.spec.parent}"
                f"{_where(self.spec.netns)}{mtu}")


@dataclass(frozen=True)
class LinkDelete(_OnLink):
    netns: str | None
    name: str
    reason: str = "not in the spec"

    def describe(self) -> str:
        return f"- link {self.name}{_where(self.netns)} ({self.reason})"


@dataclass(frozen=True)
class PortModeSet:
    """Mode and flags belong to the parent: set once, through one ipvlan ipvland owns on it."""

    parent: str
    via: DeviceRef
    mode: Mode
    flags: Flag
    old_mode: Mode | None
    old_flags: Flag | None

    @property
    def device(self) -> DeviceRef:
        return self.via

    def describe(self) -> str:
        parts = []
        if self.old_mode != self.mode:
            parts.append(f"mode {self.old_mode.label if self.old_mode else '?'} -> {self.mode.label}")
        if self.old_flags != self.flags:
            parts.append(f"flags {self.old_flags.label if self.old_flags else '?'} -> {self.flags.label}")
        return f"~ parent {self.parent} " + ", ".join(parts)


@dataclass(frozen=True)
class LinkMtuSet(_OnLink):
    netns: str | None
    name: str
    old: int
    new: int

    def describe(self) -> str:
        return f"~ link {self.name}{_where(self.netns)} mtu {self.old} -> {self.new}"


@dataclass(frozen=True)
class LinkStateSet(_OnLink):
    netns: str | None
    name: str
    up: bool

    def describe(self) -> str:
        old, new = ("down", "up") if self.up else ("up", "down")
        return f"~ link {self.name}{_where(self.netns)} state {old} -> {new}"


@dataclass(frozen=True)
class LinkSysctlSet(_OnLink):
    """A per-device sysctl (normalize.SYSCTLS) in the device's namespace; old None: not known yet."""

    netns: str | None
    name: str
    key: str
    old: int | None
    new: int

    def describe(self) -> str:
        old = "?" if self.old is None else str(self.old)
        return f"~ link {self.name}{_where(self.netns)} {self.key} {old} -> {self.new}"


@dataclass(frozen=True)
class NamespaceSysctlSet:
    """A namespace's own sysctl (normalize.IP_FORWARD); old None: not known yet."""

    netns: str | None
    key: str
    old: int | None
    new: int

    @property
    def device(self) -> DeviceRef:
        return (self.netns, "")

    def describe(self) -> str:
        old = "?" if self.old is None else str(self.old)
        where = f"netns {self.netns}" if self.netns is not None else "ipvland's own namespace"
        return f"~ {where} {self.key} {old} -> {self.new}"


@dataclass(frozen=True)
class AddressAdd(_OnDevice):
    """Add an address, or change the options of one in place (replace: IPv6 flags and peer, the
    preferred lifetime of both families)."""

    netns: str | None
    dev: str
    address: IPInterface
    options: AddressOptions = PLAIN
    replace: bool = False

    def describe(self) -> str:
        sign = "~" if self.replace else "+"
        return f"{sign} address {self.address}{self.options.describe()} dev {self.dev}{_where(self.netns)}"


@dataclass(frozen=True)
class AddressDelete(_OnDevice):
    netns: str | None
    dev: str
    address: IPInterface
    reason: str = ""  # said only when it is not "not in the spec"
    peer: IPAddress | None = None  # what finds a point-to-point IPv4 address in the kernel

    def describe(self) -> str:
        why = f" ({self.reason})" if self.reason else ""
        return f"- address {self.address} dev {self.dev}{_where(self.netns)}{why}"


@dataclass(frozen=True)
class RouteSet(_OnDevice):
    """Add a route, or replace one of ours with the same key (destination, table, metric)."""

    netns: str | None
    dev: str
    route: Route
    replace: bool = False

    def describe(self) -> str:
        sign = "~" if self.replace else "+"
        return f"{sign} route {self.route.describe()}{route_dev(self.route, self.dev)}{_where(self.netns)}"


@dataclass(frozen=True)
class RouteDelete(_OnDevice):
    netns: str | None
    dev: str
    route: Route

    def describe(self) -> str:
        return f"- route {self.route.describe()}{route_dev(self.route, self.dev)}{_where(self.netns)}"


@dataclass(frozen=True)
class NeighborSet(_OnDevice):
    """Add a permanent neighbor entry, or replace one of ours with another lladdr."""

    netns: str | None
    dev: str
    neighbor: Neighbor
    replace: bool = False

    def describe(self) -> str:
        sign = "~" if self.replace else "+"
        n = self.neighbor
        return f"{sign} neighbor {n.address} lladdr {n.lladdr} dev {self.dev}{_where(self.netns)}"


@dataclass(frozen=True)
class NeighborDelete(_OnDevice):
    netns: str | None
    dev: str
    neighbor: Neighbor

    def describe(self) -> str:
        n = self.neighbor
        return f"- neighbor {n.address} lladdr {n.lladdr} dev {self.dev}{_where(self.netns)}"


@dataclass(frozen=True)
class RuleAdd:
    rule: Rule

    @property
    def device(self) -> DeviceRef:
        return (self.rule.netns, "")  # no device; a namespace that failed to be made skips it

    def describe(self) -> str:
        return f"+ {self.rule.describe()}"


@dataclass(frozen=True)
class RuleDelete:
    rule: Rule
    reason: str = ""

    @property
    def device(self) -> DeviceRef:
        return (self.rule.netns, "")

    def describe(self) -> str:
        why = f" ({self.reason})" if self.reason else ""
        return f"- {self.rule.describe()}{why}"


Change = (NamespaceCreate | LinkCreate | LinkDelete | PortModeSet | LinkMtuSet | LinkStateSet
          | LinkSysctlSet | AddressAdd | AddressDelete | RouteSet | RouteDelete | NeighborSet | NeighborDelete
          | RuleAdd | RuleDelete | NamespaceSysctlSet)


@dataclass(frozen=True)
class Conflict:
    """Something in the spec that ipvland must not or cannot do; an error for that object alone."""

    subject: str  # e.g. "link web0 netns web"
    message: str

    def describe(self) -> str:
        return f"! {self.subject}: {self.message}"


@dataclass(frozen=True)
class Settling:
    """An object in place that the kernel has not finished with (an IPv6 address in DAD)."""

    netns: str | None
    subject: str  # e.g. "address 2001:db8::10/64 dev web0 netns web"
    message: str

    def describe(self) -> str:
        return f"{self.subject}: {self.message}"


@dataclass(frozen=True)
class Plan:
    changes: tuple[Change, ...] = ()
    conflicts: tuple[Conflict, ...] = ()
    pending: tuple[Conflict, ...] = ()  # waiting for something outside ipvland (a missing parent)
    # Set on a plan from a partial view (Observed.scope) when a decision needs the whole picture
    # (a parent's mode would change): the plan must not be applied; plan again from a full view.
    needs_full_view: str | None = None
    # Spec'd addresses that are in place but not usable yet (IPv6 DAD running): converged, and
    # not yet "online" (wait-online waits for them).
    settling: tuple[Settling, ...] = ()
    # (label, NIC name) of each parent matched by a stable key (ParentMatch) in this plan
    resolved: tuple[tuple[str, str], ...] = ()

    @property
    def empty(self) -> bool:
        return not self.changes
