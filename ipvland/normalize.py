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


SYSCTLS = {
    PROMOTE_SECONDARIES: Sysctl(PROMOTE_SECONDARIES, "ipv4/conf/{dev}/promote_secondaries"),
    # 1 in a new namespace: an ipvlan that hears router advertisements gets SLAAC addresses and an
    # RA default route (proto ra). ipv6: {accept_ra: false, autoconf: false} turns that off.
    "ipv6.accept_ra": Sysctl("ipv6.accept_ra", "ipv6/conf/{dev}/accept_ra"),
    "ipv6.autoconf": Sysctl("ipv6.autoconf", "ipv6/conf/{dev}/autoconf"),
    KEEP_ADDR_ON_DOWN: Sysctl(KEEP_ADDR_ON_DOWN, "ipv6/conf/{dev}/keep_addr_on_down"),
}


def sysctl_matches(wanted: int, observed: int | None) -> bool:
    """accept_ra 2 ("even when forwarding") is as much "on" as 1: only on/off is managed. On is
    above 0, as the kernel reads keep_addr_on_down (-1: off, even when `all` says on)."""
    return observed is not None and (observed > 0) == (wanted > 0)


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
