"""The per-device sysctls in a link dump's IFLA_AF_SPEC, decoded and encoded without a kernel.

The layout (IPv4: u32 per IPV4_DEVCONF_*, 1-based; IPv6: s32 per DEVCONF_*, 0-based) is the
kernel's; that ipvland reads and writes the right slots is shown on the kernel
(tests/kernel/test_fixed_point.py: promote_secondaries and accept_ra read back after a write).
"""

from __future__ import annotations

import socket
import struct

from ipvland.kernel import _attrs, _nla, _promote_secondaries, _sysctls
from ipvland.normalize import KEEP_ADDR_ON_DOWN, PROMOTE_SECONDARIES


def af_spec(ipv4: list[int], ipv6: list[int]) -> bytes:
    inet = _nla(1, struct.pack(f"{len(ipv4)}I", *ipv4))  # IFLA_INET_CONF
    inet6 = _nla(2, struct.pack(f"{len(ipv6)}i", *ipv6))  # IFLA_INET6_CONF
    return _nla(socket.AF_INET, inet) + _nla(socket.AF_INET6, inet6)


def test_sysctls_are_read_from_their_slots() -> None:
    ipv4 = [0] * 33
    ipv4[19] = 1  # IPV4_DEVCONF_PROMOTE_SECONDARIES (20), 1-based
    ipv6 = [0, 64, 1500, 2, 1, 0] + [0] * 50  # forwarding, hop limit, mtu, accept_ra, redirects, autoconf
    ipv4[7], ipv4[17], ipv4[18] = 2, 1, 8  # RP_FILTER (8), ARP_ANNOUNCE (18), ARP_IGNORE (19)
    ipv6[26], ipv6[47] = 1, 3  # DEVCONF_DISABLE_IPV6, DEVCONF_ADDR_GEN_MODE
    ipv6[42] = 1  # DEVCONF_KEEP_ADDR_ON_DOWN
    assert dict(_sysctls(af_spec(ipv4, ipv6))) == {
        PROMOTE_SECONDARIES: 1, "ipv6.accept_ra": 2, "ipv6.autoconf": 0, "ipv6.disable_ipv6": 1,
        "ipv6.addr_gen_mode": 3, "ipv4.forwarding": 0, "ipv4.rp_filter": 2, "ipv4.arp_announce": 1,
        "ipv4.arp_ignore": 8, KEEP_ADDR_ON_DOWN: 1}


def test_a_device_without_ipv6_reports_no_ipv6_sysctls() -> None:
    blob = _nla(socket.AF_INET, _nla(1, struct.pack("33I", *([0] * 33))))
    assert {k for k, _ in _sysctls(blob)} == {PROMOTE_SECONDARIES, "ipv4.forwarding", "ipv4.rp_filter",
                                              "ipv4.arp_announce", "ipv4.arp_ignore"}
    assert _sysctls(b"") == ()


def test_promote_secondaries_is_one_nested_attribute_per_level() -> None:
    spec = _promote_secondaries()
    (kind, value), = _attrs(spec, 0, len(spec)).items()
    assert kind == 26  # IFLA_AF_SPEC (the nested flag is stripped by _attrs)
    (family, inner), = _attrs(value, 0, len(value)).items()
    assert family == socket.AF_INET
    (conf_kind, conf), = _attrs(inner, 0, len(inner)).items()
    assert conf_kind == 1  # IFLA_INET_CONF
    assert _attrs(conf, 0, len(conf)) == {20: struct.pack("I", 1)}
