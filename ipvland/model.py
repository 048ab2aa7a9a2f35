"""The immutable types that flow between the stages: spec -> observe -> plan -> apply.

Everything here is plain data: frozen dataclasses, enums and ipaddress values. No I/O.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from enum import Enum

from ipvland import normalize

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

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


@dataclass(frozen=True, order=True)
class Route:
    """A route through a device. `to` of 0.0.0.0/0 or ::/0 is the default route."""

    to: IPNetwork
    via: IPAddress | None = None
    metric: int | None = None
    table: int | None = None  # None means the main table

    @property
    def family(self) -> int:
        return self.to.version

    @property
    def key(self) -> tuple[int, IPNetwork, int, int]:
        """What identifies a route in the kernel: family, destination, table, metric, as the kernel
        stores them (normalize: no metric is 0 for IPv4 and 1024 for IPv6; IPv6 metric 0 is 1024).
        """
        return (self.to.version, self.to, normalize.route_table(self.table),
                normalize.route_metric(self.to.version, self.metric))

    def describe(self) -> str:
        to = "default" if self.to.prefixlen == 0 else str(self.to)
        parts = [to if self.to.version == 4 or to != "default" else "default (ipv6)"]
        if self.via is not None:
            parts.append(f"via {self.via}")
        if self.metric is not None:
            parts.append(f"metric {self.metric}")
        if self.table is not None:
            parts.append(f"table {self.table}")
        return " ".join(parts)


@dataclass(frozen=True, order=True)
class Neighbor:
    """A neighbor entry. `lladdr` is lower-case colon-separated; "" for an observed incomplete one."""

    address: IPAddress
    lladdr: str


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


@dataclass(frozen=True)
class Parent:
    name: str
    mode: Mode | None = None  # required once the parent has devices
    flags: Flag = Flag.BRIDGE
    routes: tuple[Route, ...] = ()
    neighbors: tuple[Neighbor, ...] = ()
    devices: tuple[Device, ...] = ()


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

    @property
    def devices(self) -> tuple[Device, ...]:
        return tuple(d for p in self.parents for d in p.devices)

    @property
    def namespaces(self) -> frozenset[str]:
        return frozenset(d.netns for d in self.devices if d.netns is not None)


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
class Observed:
    """A snapshot of what the kernel has, in ipvland's own namespace and in named namespaces.

    `scanned` lists the namespaces whose addresses, routes and neighbors were dumped; elsewhere
    only links were read.

    `scope` None: links were read in every namespace. Otherwise a partial view for repairing drift
    fast: only these namespaces were read at all (ipvland's own, None, always among them); what is
    elsewhere is unknown, not absent, and the planner leaves it alone.

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
class AddressAdd(_OnDevice):
    netns: str | None
    dev: str
    address: IPInterface

    def describe(self) -> str:
        return f"+ address {self.address} dev {self.dev}{_where(self.netns)}"


@dataclass(frozen=True)
class AddressDelete(_OnDevice):
    netns: str | None
    dev: str
    address: IPInterface
    reason: str = ""  # said only when it is not "not in the spec"

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
        return f"{sign} route {self.route.describe()} dev {self.dev}{_where(self.netns)}"


@dataclass(frozen=True)
class RouteDelete(_OnDevice):
    netns: str | None
    dev: str
    route: Route

    def describe(self) -> str:
        return f"- route {self.route.describe()} dev {self.dev}{_where(self.netns)}"


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


Change = (NamespaceCreate | LinkCreate | LinkDelete | PortModeSet | LinkMtuSet | LinkStateSet
          | LinkSysctlSet | AddressAdd | AddressDelete | RouteSet | RouteDelete | NeighborSet | NeighborDelete)


@dataclass(frozen=True)
class Conflict:
    """Something in the spec that ipvland must not or cannot do; an error for that object alone."""

    subject: str  # e.g. "link web0 netns web"
    message: str

    def describe(self) -> str:
        return f"! {self.subject}: {self.message}"


@dataclass(frozen=True)
class Plan:
    changes: tuple[Change, ...] = ()
    conflicts: tuple[Conflict, ...] = ()
    pending: tuple[Conflict, ...] = ()  # waiting for something outside ipvland (a missing parent)
    # Set on a plan from a partial view (Observed.scope) when a decision needs the whole picture
    # (a parent's mode would change): the plan must not be applied; plan again from a full view.
    needs_full_view: str | None = None

    @property
    def empty(self) -> bool:
        return not self.changes
