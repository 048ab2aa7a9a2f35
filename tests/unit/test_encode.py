"""The write requests' encoding (kernel.py's struct encoders), decoded by an independent decoder:
pyroute2's message classes. Pure: no socket; what the kernel does with each request is tested on the
kernel (tests/kernel/test_procedure.py, test_route_attrs.py, test_address_options.py, ...).
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from typing import Any

import pytest
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.ndmsg import ndmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from ipvland import kernel as k
from ipvland.model import RT_PROTO, AddressOptions, Flag, Mode, Neighbor, Nexthop, Route

ip = ipaddress.ip_address
net = ipaddress.ip_network
iface = ipaddress.ip_interface


class Sent:
    """A Kernel whose writes are recorded, not sent; the devices' indexes are known (as after a dump)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.kernel = k.Kernel()
        self.kernel._index = {None: {"eth0": 2, "eth1": 3}, "web": {"web0": 7, "web1": 8}}
        self.requests: list[tuple[str, int, int, bytes]] = []
        monkeypatch.setattr(self.kernel, "_write",
                            lambda netns, op, t, f, body: self.requests.append((op, t, f, body)))

    def last(self, cls: Any) -> tuple[Any, int, int]:
        """The last request decoded by pyroute2's class for it, with its type and flags."""
        _op, mtype, flags, body = self.requests[-1]
        msg = cls(struct.pack("IHHII", 16 + len(body), mtype, flags, 1, 0) + body)
        msg.decode()
        assert msg["header"]["length"] == 16 + len(body)
        return msg, mtype, flags


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> Any:
    s = Sent(monkeypatch)
    yield s
    s.kernel.close()


def ipvlan_data(body: bytes) -> tuple[int, int]:
    """(mode, flags) found in IFLA_LINKINFO/IFLA_INFO_DATA of a raw ifinfomsg body."""
    top = k._attrs(body, 16, len(body))
    info = k._attrs(top[k._IFLA_LINKINFO], 0, len(top[k._IFLA_LINKINFO]))
    data = k._attrs(info[k._IFLA_INFO_DATA], 0, len(info[k._IFLA_INFO_DATA]))
    return struct.unpack("H", data[k._IFLA_IPVLAN_MODE][:2])[0], struct.unpack("H", data[k._IFLA_IPVLAN_FLAGS][:2])[0]


def test_create_into_a_namespace_carries_parent_mode_flags_mtu_and_the_namespace(
        sent: Sent, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "web").write_text("")
    monkeypatch.setattr(k, "NETNS_DIR", str(tmp_path))
    sent.kernel.create_ipvlan("eth0", "ipvl-tmp", Mode.L3S, Flag.PRIVATE, 1400, "web")
    msg, mtype, flags = sent.last(ifinfmsg)
    assert mtype == k.RTM_NEWLINK and flags == k.NLM_F_CREATE | k.NLM_F_EXCL
    assert msg["index"] == 0 and msg["family"] == socket.AF_UNSPEC
    assert msg.get_attr("IFLA_IFNAME") == "ipvl-tmp" and msg.get_attr("IFLA_LINK") == 2
    assert msg.get_attr("IFLA_MTU") == 1400 and isinstance(msg.get_attr("IFLA_NET_NS_FD"), int)
    info = msg.get_attr("IFLA_LINKINFO")
    assert info.get_attr("IFLA_INFO_KIND") == "ipvlan"
    assert info.get_attr("IFLA_INFO_DATA").get_attr("IFLA_IPVLAN_MODE") == Mode.L3S.value
    assert ipvlan_data(sent.requests[-1][3]) == (Mode.L3S.value, Flag.PRIVATE.value)


def test_changelinks_name_the_device_by_index_or_by_name_before_any_dump(sent: Sent) -> None:
    sent.kernel.set_up("web", "web0", True)
    msg, mtype, _ = sent.last(ifinfmsg)
    assert (mtype, msg["index"], msg["flags"], msg["change"]) == (k.RTM_NEWLINK, 7, 1, 1)
    assert msg.get_attr("IFLA_IFNAME") is None
    sent.kernel.set_up("web", "new0", False)  # just created: no dump has shown it
    msg, _, _ = sent.last(ifinfmsg)
    assert (msg["index"], msg["flags"], msg["change"], msg.get_attr("IFLA_IFNAME")) == (0, 0, 1, "new0")
    sent.kernel.set_mtu("web", "web1", 9000)
    msg, _, _ = sent.last(ifinfmsg)
    assert (msg["index"], msg.get_attr("IFLA_MTU")) == (8, 9000)
    sent.kernel.set_port_mode(None, "eth0", Mode.L2, Flag.VEPA)
    assert ipvlan_data(sent.requests[-1][3]) == (Mode.L2.value, Flag.VEPA.value)
    sent.kernel.set_alias("web", "web0", "owner")
    assert sent.last(ifinfmsg)[0].get_attr("IFLA_IFALIAS") == "owner"
    sent.kernel.delete_link("web", "web1")
    msg, mtype, _ = sent.last(ifinfmsg)
    assert (mtype, msg["index"]) == (k.RTM_DELLINK, 8)


def test_rename_with_the_owner_sets_alias_and_promote_secondaries_at_once(sent: Sent) -> None:
    sent.kernel._index["web"]["tmp1"] = 9
    sent.kernel.rename_link("web", "tmp1", "app0", "ipvland")
    msg, _, _ = sent.last(ifinfmsg)
    assert (msg["index"], msg.get_attr("IFLA_IFNAME"), msg.get_attr("IFLA_IFALIAS")) == (9, "app0", "ipvland")
    assert sent.requests[-1][3].endswith(k._promote_secondaries())
    assert sent.kernel._index["web"]["app0"] == 9 and "tmp1" not in sent.kernel._index["web"]


@pytest.mark.parametrize(("address", "options", "local", "remote"), [
    ("192.0.2.10/24", AddressOptions(), "192.0.2.10", "192.0.2.10"),
    ("2001:db8::10/64", AddressOptions(nodad=True), None, "2001:db8::10"),
    ("10.0.0.1/32", AddressOptions(peer=ip("10.0.0.2")), "10.0.0.1", "10.0.0.2"),
])
def test_addresses(sent: Sent, address: str, options: AddressOptions, local: str | None, remote: str) -> None:
    a = iface(address)
    sent.kernel.add_address("web", "web0", a, options)
    msg, mtype, flags = sent.last(ifaddrmsg)
    assert mtype == k.RTM_NEWADDR and flags == k.NLM_F_CREATE | k.NLM_F_EXCL
    assert (msg["family"], msg["prefixlen"], msg["index"]) == (k._FAMILY[a.version], a.network.prefixlen, 7)
    assert (msg.get_attr("IFA_LOCAL"), msg.get_attr("IFA_ADDRESS")) == (local, remote)
    assert (msg.get_attr("IFA_FLAGS") or 0) == (0x02 if options.nodad else 0)  # IFA_F_NODAD
    sent.kernel.add_address("web", "web0", a, AddressOptions(deprecated=True), replace=True)
    msg, _, flags = sent.last(ifaddrmsg)
    assert flags == k.NLM_F_CREATE | k.NLM_F_REPLACE and msg.get_attr("IFA_CACHEINFO")["ifa_preferred"] == 0
    sent.kernel.delete_address("web", "web0", a, options.peer)
    msg, mtype, _ = sent.last(ifaddrmsg)
    assert mtype == k.RTM_DELADDR and msg.get_attr("IFA_ADDRESS") == remote


def test_routes(sent: Sent) -> None:
    kern = sent.kernel
    kern.set_route("web", "web0", Route(net("10.0.0.0/8"), ip("192.0.2.1"), 5, 1000, src=ip("192.0.2.10"), mtu=1400))
    msg, mtype, flags = sent.last(rtmsg)
    assert mtype == k.RTM_NEWROUTE and flags == k.NLM_F_CREATE | k.NLM_F_EXCL
    assert (msg["family"], msg["dst_len"], msg["table"], msg["proto"], msg["type"]) == (socket.AF_INET, 8, 252,
                                                                                        RT_PROTO, 1)
    assert (msg.get_attr("RTA_TABLE"), msg.get_attr("RTA_OIF"), msg.get_attr("RTA_DST")) == (1000, 7, "10.0.0.0")
    assert (msg.get_attr("RTA_GATEWAY"), msg.get_attr("RTA_PRIORITY"), msg.get_attr("RTA_PREFSRC")) == \
        ("192.0.2.1", 5, "192.0.2.10")
    assert msg.get_attr("RTA_METRICS").get_attr("RTAX_MTU") == 1400
    kern.delete_route("web", "web0", Route(net("10.0.0.0/8"), ip("192.0.2.1"), 5, 1000, src=ip("192.0.2.10")))
    msg, mtype, _ = sent.last(rtmsg)
    assert (mtype, msg["scope"], msg["proto"], msg.get_attr("RTA_PREFSRC")) == (k.RTM_DELROUTE, 255, RT_PROTO, None)
    kern.set_route("web", "web0", Route(net("0.0.0.0/0"), ip("fe80::1"), onlink=True), replace=True)
    msg, _, flags = sent.last(rtmsg)
    assert flags == k.NLM_F_CREATE | k.NLM_F_REPLACE and msg["dst_len"] == 0 and msg.get_attr("RTA_DST") is None
    assert msg["flags"] == 4 and msg["table"] == 254  # RTNH_F_ONLINK; main
    assert msg.get_attr("RTA_VIA") == {"family": socket.AF_INET6, "addr": "fe80::1"}
    kern.set_route("web", "web0", Route(net("2001:db8:1::/48"), type="blackhole"))
    msg, _, _ = sent.last(rtmsg)
    assert (msg["family"], msg["type"], msg.get_attr("RTA_OIF")) == (socket.AF_INET6, 6, None)
    kern.set_route("web", "web0", Route(net("198.51.100.0/24"), nexthops=(
        Nexthop(ip("192.0.2.1"), None, 2), Nexthop(ip("192.0.2.2"), "web1", 1))))
    msg, _, _ = sent.last(rtmsg)
    hops = msg.get_attr("RTA_MULTIPATH")
    assert [(h["oif"], h["hops"], h.get_attr("RTA_GATEWAY")) for h in hops] == [(7, 1, "192.0.2.1"),
                                                                                  (8, 0, "192.0.2.2")]


def test_neighbors(sent: Sent) -> None:
    n = Neighbor(ip("192.0.2.1"), "02:00:00:aa:bb:cc")
    sent.kernel.set_neighbor(None, "eth1", n)
    msg, mtype, flags = sent.last(ndmsg)
    assert mtype == k.RTM_NEWNEIGH and flags == k.NLM_F_CREATE | k.NLM_F_EXCL
    assert (msg["family"], msg["ifindex"], msg["state"]) == (socket.AF_INET, 3, 0x80)  # NUD_PERMANENT
    assert (msg.get_attr("NDA_DST"), msg.get_attr("NDA_LLADDR"), msg.get_attr("NDA_PROTOCOL")) == \
        ("192.0.2.1", "02:00:00:aa:bb:cc", RT_PROTO)
    sent.kernel.delete_neighbor(None, "eth1", Neighbor(ip("2001:db8::1"), "02:00:00:aa:bb:cc"))
    msg, mtype, _ = sent.last(ndmsg)
    assert (mtype, msg["family"], msg.get_attr("NDA_DST")) == (k.RTM_DELNEIGH, socket.AF_INET6, "2001:db8::1")
