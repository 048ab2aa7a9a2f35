"""What the kernel rewrites, adds or refuses on its own: ONE table, shared by validation and planner.

A reconciler that compares the spec with what the kernel reports must compare what the kernel
*stores*, or a valid spec has no fixed point (the plan never becomes empty, the daemon rewrites the
same object forever). Every entry here was seen on the kernel (Debian's 6.1, in the test VM) and
has a kernel test (tests/kernel/test_fixed_point.py, test_engine.py); README "What the kernel
rewrites" lists them for people. Pure data and pure functions: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

# ---------------------------------------------------------------- routes

MAIN_TABLE = 254  # a route without a table goes to main; the dump says 254
# The metric the kernel stores when a request has none, per IP version.
DEFAULT_METRIC = {4: 0, 6: 1024}
# IPv6 only: a request with metric 0 is stored as 1024 (IP6_RT_PRIO_USER), exactly as without a
# metric. ipvland normalises it (it does not reject it): `metric: 0` on an IPv6 route means 1024,
# the same route as no metric at all (so both in one namespace are one route).
IPV6_METRIC_ZERO_BECOMES = 1024
# For every address on an up device the kernel installs a prefix route of its own (proto kernel) in
# the main table: IPv4 (not for a /32) with metric 0, IPv6 (not for a /128) with metric 256.
# A spec route with the same destination, table and metric in that namespace can never be added
# (EEXIST): validation refuses it.
PREFIX_ROUTE_METRIC = {4: 0, 6: 256}


def route_metric(version: int, metric: int | None) -> int:
    """The metric the kernel stores for a route requested with `metric` (None: none sent)."""
    if metric is None:
        return DEFAULT_METRIC[version]
    if version == 6 and metric == 0:
        return IPV6_METRIC_ZERO_BECOMES
    return metric


def route_table(table: int | None) -> int:
    return MAIN_TABLE if table is None else table


# What identifies a route (read in the kernel's fib code): IPv4 fib_table_insert() finds an existing
# route by [table, prefix, TOS (DSCP), priority]; IPv6 fib6_add_rt2node() by [table, prefix, source
# prefix (subtrees), metric]. ipvland sends neither TOS nor a source prefix (both always 0), so its
# key is (family, destination, table, metric): Route.key. Everything else (gateway or nexthops,
# type, scope, src, onlink, MTU) is replaced in place (NLM_F_REPLACE on the same key).

# rtm_type of the route types the spec can say (include/uapi/linux/rtnetlink.h).
ROUTE_TYPES = {"unicast": 1, "local": 2, "blackhole": 6, "unreachable": 7, "prohibit": 8}
# These drop what they match: the kernel refuses a device, gateway or nexthops with them (IPv4:
# "Gateway, device and multipath can not be specified for this route type"). An IPv6 one is
# attached to lo, and the dump says so (RTA_OIF lo): ipvland ignores the device of a reject route.
REJECT_TYPES = frozenset({"blackhole", "unreachable", "prohibit"})
# rtm_scope by name. IPv6 routes have no scope: the kernel dumps every one as global (universe),
# so `scope:` on an IPv6 route is refused (it could never be read back).
ROUTE_SCOPES = {"global": 0, "link": 253, "host": 254}
# A route's MTU metric above 65535 - 15 is stored as 65520 (ip_metrics_convert()); the schema's
# bound, so a spec never asks for what the kernel would rewrite.
ROUTE_MTU_MAX = 65520
# RTNH_F_ONLINK: an on-link gateway. Without a gateway the kernel refuses it (IPv4: "Invalid flags
# for nexthop - PERVASIVE and ONLINK can not be set"): validation requires `via`.
RTNH_F_ONLINK = 4
# A multipath route of ONE nexthop is stored as a plain route (its weight is lost): nexthops need 2+.


def route_scope(version: int, rtype: str, scope: str | None, has_gateway: bool) -> int:
    """The rtm_scope the kernel stores for a route (iproute2's defaults when the spec says none)."""
    if version == 6:
        return ROUTE_SCOPES["global"]
    if scope is not None:
        return ROUTE_SCOPES[scope]
    if rtype == "local":
        return ROUTE_SCOPES["host"]
    if rtype == "unicast" and not has_gateway:
        return ROUTE_SCOPES["link"]
    return ROUTE_SCOPES["global"]


def has_prefix_route(version: int, prefixlen: int) -> bool:
    """Whether an address of this length gets a kernel prefix route (not a host address)."""
    return prefixlen < (32 if version == 4 else 128)


# ---------------------------------------------------------------- links

# An ipvlan's MTU bounds (`ip -d link` shows minmtu 68 maxmtu 65535); the kernel does not bound it
# by the parent's MTU, but resets it to the parent's whenever the parent's MTU changes.
MTU_MIN = 68
MTU_MAX = 65535
# Below 1280 the kernel drops IPv6 from the device (addresses and ipv6 sysctls vanish).
IPV6_MIN_MTU = 1280

# ---------------------------------------------------------------- addresses

# Deleting an IPv4 primary address deletes its secondaries, unless promote_secondaries is 1 on
# the device (0 in a new namespace). ipvland sets it on every device it creates (in the same
# request that names it) and keeps it set; with it, a change of addresses adds before it deletes.
PROMOTE_SECONDARIES = "ipv4.promote_secondaries"
# ifa_cacheinfo's valid lifetime of a static address. An address with a finite one is dynamic:
# SLAAC, temporary (privacy) or DHCP addresses, owned by whoever keeps refreshing them (nmstate and
# ifstate leave them alone too).
INFINITY_LIFE_TIME = 0xFFFFFFFF
# Address options (AddressOptions) the kernel can change in place with a replace (RTM_NEWADDR
# NLM_F_REPLACE): IPv6 inet6_addr_modify() takes the flags (nodad, noprefixroute, home), the peer
# and the lifetimes; IPv4 only the lifetimes (its flags and peer are fixed at the add, and the peer
# is part of what finds an IPv4 address). Anything else is a delete and an add.
IFA_F_NODAD = 0x02
IFA_F_HOMEADDRESS = 0x10
IFA_F_DEPRECATED = 0x20
IFA_F_NOPREFIXROUTE = 0x200
IPV4_REPLACEABLE = frozenset({"deprecated"})
# A static address with a finite *valid* lifetime would vanish and be re-added forever: the spec
# has only "deprecated" (preferred lifetime 0, valid forever), as `ip addr ... preferred_lft 0`.
# The dump of an address with an infinite valid lifetime says "preferred forever" even then (seen):
# IFA_F_DEPRECATED is what tells.
# A new IPv6 address is tentative for DAD (~1-2 s); a duplicate leaves it "dadfailed" for good,
# present but unusable: ipvland deletes and re-adds it, and reports the duplicate.
# Setting a device down flushes its IPv6 addresses (and IPv6 is what a container's ipvlan is often
# addressed with) unless net.ipv6.conf.DEV.keep_addr_on_down is above 0 (0 in a new namespace; the
# kernel keeps them when `all` or the device says so, static global addresses only). ipvland sets it
# on its devices that carry an IPv6 address of the spec, so `state: down` (or a down/up by hand)
# keeps them.
KEEP_ADDR_ON_DOWN = "ipv6.keep_addr_on_down"

# ---------------------------------------------------------------- down devices

# A down device carries no routes: the kernel refuses a route through it (ENETDOWN, "Device for
# nexthop is not up" from fib_check_nh for IPv4, "Nexthop device is not up" from fib6_nh_init for
# IPv6) and flushes its routes when it goes down. So the routes of a `state: down` device are
# inactive, neither planned nor an error, until it is up. Going down flushes its neighbor entries
# too (permanent ones included), and so does going up in l3/l3s (ipvlan_open sets IFF_NOARP, and a
# NOARP change flushes the device's entries); an entry can be added to a down device and stays.
# So a plan that changes a device's state sets its neighbors again after the change.
DOWN_DEVICE_HAS_ROUTES = False


# ---------------------------------------------------------------- per-device sysctls


@dataclass(frozen=True)
class Sysctl:
    """A per-device setting ipvland manages: its key in plans, and its path under /proc/sys/net."""

    key: str  # as plans print it, e.g. ipv6.accept_ra
    proc: str  # e.g. ipv6/conf/{dev}/accept_ra
    default: int = 0  # the kernel's own value on a device of a new namespace (show leaves it out)
    exact: bool = False  # compared by value; otherwise only on/off is managed
    labels: tuple[str, ...] = ()  # the spec's names of values 0, 1, ... (addr_gen_mode)
    in_spec: bool = True  # False: ipvland's own setting, never in a config


def _conf(family: str, name: str, default: int = 0, exact: bool = False, labels: tuple[str, ...] = ()) -> Sysctl:
    return Sysctl(f"{family}.{name}", f"{family}/conf/{{dev}}/{name}", default, exact, labels)


SYSCTLS = {
    PROMOTE_SECONDARIES: Sysctl(PROMOTE_SECONDARIES, "ipv4/conf/{dev}/promote_secondaries", in_spec=False),
    # 1 in a new namespace: an ipvlan that hears router advertisements gets SLAAC addresses and an
    # RA default route (proto ra). ipv6: {accept_ra: false, autoconf: false} turns that off.
    "ipv6.accept_ra": _conf("ipv6", "accept_ra", 1),
    "ipv6.autoconf": _conf("ipv6", "autoconf", 1),
    # 1: the device has no IPv6 at all (its addresses go); it then keeps its other ipv6 settings.
    "ipv6.disable_ipv6": _conf("ipv6", "disable_ipv6"),
    # How the link-local (and SLAAC) interface id is made. stable_privacy needs a stable_secret
    # (the kernel refuses it otherwise); none: no link-local address at all.
    "ipv6.addr_gen_mode": _conf("ipv6", "addr_gen_mode", exact=True,
                                labels=("eui64", "none", "stable_privacy", "random")),
    # The kernel uses the larger of conf/all and conf/DEV for rp_filter (0 off, 1 strict, 2 loose)
    # and arp_ignore; the device's own value is what ipvland sets and reads.
    "ipv4.rp_filter": _conf("ipv4", "rp_filter", exact=True),
    "ipv4.arp_ignore": _conf("ipv4", "arp_ignore", exact=True),
    "ipv4.arp_announce": _conf("ipv4", "arp_announce", exact=True),
    "ipv4.forwarding": _conf("ipv4", "forwarding"),
    KEEP_ADDR_ON_DOWN: Sysctl(KEEP_ADDR_ON_DOWN, "ipv6/conf/{dev}/keep_addr_on_down", in_spec=False),
}


# A namespace's own setting, said on a device for its namespace (ipv4: {ip_forward: true}).
# Writing it sets conf.all.forwarding AND every device's forwarding in the namespace (the kernel's
# inet_forward_change()), so a spec may not set both on one namespace. The kernel reports it in
# the RTM_GETNETCONF dump as the forwarding of ifindex NETCONFA_IFINDEX_ALL.
IP_FORWARD = "ipv4.ip_forward"
IP_FORWARD_PROC = "ipv4/ip_forward"


def sysctl_matches(wanted: int, observed: int | None, key: str = "") -> bool:
    """accept_ra 2 ("even when forwarding") is as much "on" as 1: only on/off is managed, except
    for the settings with several meaningful values (exact). On is above 0, as the kernel reads
    keep_addr_on_down (-1: off, even when `all` says on)."""
    if observed is None:
        return False
    sysctl = SYSCTLS.get(key)
    return observed == wanted if sysctl is not None and sysctl.exact else (observed > 0) == (wanted > 0)


# ---------------------------------------------------------------- route protocols

# rtm_protocol names as iproute2 prints them (its rt_protos table), so a conflict says
# "proto static", not "proto 4".
PROTOCOL_NAMES = {
    0: "unspec", 1: "redirect", 2: "kernel", 3: "boot", 4: "static", 8: "gated", 9: "ra", 10: "mrt",
    11: "zebra", 12: "bird", 13: "dnrouted", 14: "xorp", 15: "ntk", 16: "dhcp", 18: "keepalived",
    42: "babel", 99: "openr", 186: "bgp", 187: "isis", 188: "ospf", 189: "rip", 192: "eigrp",
    212: "ipvland",
}


def protocol_name(protocol: int) -> str:
    return PROTOCOL_NAMES.get(protocol, str(protocol))
