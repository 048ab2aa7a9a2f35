"""The netlink layer: read the kernel's state as model types, and make single changes.

One plain rtnetlink socket per namespace carries both reads and writes:
- reads are dumps decoded by a small struct decoder that looks only at the attributes ipvland needs
  (decoding everything through pyroute2 costs far more than the dump itself);
- writes are encoded with `struct` by the small encoders below (the kernel's uapi structs, one
  attribute each), and sent on that same socket, one request and its ACK at a time. pyroute2's IPRoute
  transport is not used (its per-request asyncio machinery cost about 3x the kernel's own time per
  write, issue 6), nor its message classes any more: encoding the 100 nested create messages alone
  took 2.7 s of a profiled cold apply at N=100 (issue 13). pyroute2 stays the reference decoder in
  the unit tests of these encoders (tests/unit/test_encode.py).
- errors carry the kernel's extended ACK message (NETLINK_EXT_ACK), e.g. "Address already assigned
  to an ipvlan device", next to strerror.

Sockets for another namespace are opened on the calling thread by setns into it and back: the socket
stays bound to the namespace it was created in, with no helper process.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import errno as errnos
import functools
import ipaddress
import os
import resource
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any, Generic, TypeVar

from ipvland import normalize
from ipvland.model import (
    MAIN_TABLE,
    PLAIN,
    RT_PROTO,
    RULE_ACTIONS,
    AddressOptions,
    Flag,
    IPAddress,
    IPInterface,
    Mode,
    Neighbor,
    Nexthop,
    ObservedAddress,
    ObservedLink,
    ObservedNeighbor,
    ObservedRoute,
    ObservedRule,
    Route,
    Rule,
    interned,
    is_path_netns,
    route_dev,
)
from ipvland.netns import NETNS_DIR, entered, is_namespace, mount_new_namespace

# ---------------------------------------------------------------- namespaces and sockets

_libc = ctypes.CDLL(None, use_errno=True)

T = TypeVar("T")


def _in_netns(netns: str | None, fn: Callable[[], T]) -> T:
    """Run fn with this thread in the named namespace (None: where it is), then come back."""
    with entered(netns):
        return fn()


_SOL_NETLINK = 270
_NETLINK_CAP_ACK = 10  # an error echoes only the request's header, not the whole request
_NETLINK_EXT_ACK = 11  # and carries the kernel's message saying what exactly was refused
_NETLINK_GET_STRICT_CHK = 12  # dump requests are checked strictly, and their filters applied (4.20)


def _open_raw(netns: str | None) -> socket.socket:
    def make() -> socket.socket:
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        for option in (_NETLINK_CAP_ACK, _NETLINK_EXT_ACK):
            with contextlib.suppress(OSError):  # older kernels: plain errors
                s.setsockopt(_SOL_NETLINK, option, 1)
        s.bind((0, 0))  # no multicast groups: a socket that reads and writes must not queue events
        return s

    return _in_netns(netns, make)


def raise_fd_limit() -> None:
    """Lift the soft limit of open files to the hard one: ipvland keeps a socket per namespace (and
    the daemon a second one for events), so 1000 namespaces, one container each, need over 2000
    descriptors, past the usual soft limit of 1024. Nothing here uses select(); epoll has no such
    bound."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 1 << 20 if hard == resource.RLIM_INFINITY else hard  # nr_open's default is 2^20
    if soft != resource.RLIM_INFINITY and soft < want:
        with contextlib.suppress(OSError, ValueError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


# A repair's listing of /run/netns is reused while the directory has not changed, and only when it
# was taken this long after the directory's last change: `ip netns add` creates the name, then mounts
# the namespace on it, and the mount does not touch the directory (so a listing taken between the
# two must not be kept); the directory's time is also coarse (a jiffy), two changes can share it.
LISTING_SETTLE_NS = 5_000_000_000


def list_namespaces() -> frozenset[str]:
    """The named namespaces: names under /run/netns that are mounted namespaces (see is_namespace)."""
    return _scan_namespaces()[0]


def _scan_namespaces() -> tuple[frozenset[str], bool]:
    """list_namespaces(), and whether the listing may be reused while /run/netns is unchanged
    (Kernel._list): every name a namespace mounted on it. An empty file (a mount gone, or not made
    yet) can be mounted on later, and a symlink's namespace goes with its process, neither touching
    the directory."""
    try:
        nsfs = os.stat("/proc/self/ns/net").st_dev
        names = []
        clean = True
        for e in os.scandir(NETNS_DIR):
            if e.name.startswith("."):
                continue
            try:  # (a try, not contextlib.suppress: this loop runs once per namespace, 1000s of them)
                # followed: `ln -s /proc/PID/ns/net /run/netns/NAME` (a common Docker recipe) is a namespace
                if e.stat().st_dev == nsfs:
                    names.append(e.name)
                    clean = clean and not e.is_symlink()
                    continue
            except OSError:
                pass
            clean = False
        return frozenset(names), clean
    except FileNotFoundError:
        return frozenset(), False


def _foreign_mount_ns() -> str | None:
    """The host's mount namespace when ours is a sandbox (systemd's ProtectSystem= and friends).

    A bind mount made in a sandbox never reaches the host (systemd makes its mounts slaves), so
    the unit names the host's mount namespace in $IPVLAND_HOST_MOUNT_NS and namespaces are
    created there. When that namespace is named but cannot be read, creating the namespace here
    instead would fill a namespace only this process can see (the host's `ip netns` would find an
    empty file at /run/netns/NAME): that is an error, never a fallback.
    """
    host = os.environ.get("IPVLAND_HOST_MOUNT_NS")
    if not host:
        return None
    try:
        theirs = os.stat(host)
    except OSError as e:
        # /proc/1/ns/* passes the kernel's ptrace access check: PID 1's capabilities are a superset
        # of a sandboxed daemon's, so without CAP_SYS_PTRACE this is EACCES.
        raise KernelError("open the host mount namespace", e.errno or errnos.EACCES,
                          f"{host}: {e.strerror}; the unit must grant CAP_SYS_PTRACE (see systemd/ipvland.service)"
                          ) from None
    ours = os.stat("/proc/self/ns/mnt")
    return None if (ours.st_dev, ours.st_ino) == (theirs.st_dev, theirs.st_ino) else host


def _proc_sys_net() -> str:
    """Where /proc/sys/net is writable: ours, or, in a sandbox, the host's through its root.

    The shipped unit's sandbox (ProtectKernelTunables=, ProcSubset=pid) and a pod (the runtime
    mounts /proc/sys read-only) cannot write sysctls in their own /proc; the host's /proc, reached
    through /proc/PID/root of the process whose mount namespace $IPVLAND_HOST_MOUNT_NS names, can
    (the same CAP_SYS_PTRACE as for the namespace mounts). Which namespace a net sysctl belongs
    to is the opening thread's network namespace, not the /proc mount's, so this is still the
    namespace entered.
    """
    host = _foreign_mount_ns()
    if host is None:
        return "/proc/sys/net"
    head, _, tail = host.rpartition("/ns/")
    if tail != "mnt" or not head.startswith("/proc/"):
        raise KernelError("write a sysctl", errnos.EINVAL,
                          f"IPVLAND_HOST_MOUNT_NS={host} is not /proc/PID/ns/mnt: the host's /proc/sys cannot be "
                          "reached from it (and this sandbox's is read-only)")
    return f"{head}/root/proc/sys/net"


def create_namespace(name: str) -> None:
    """Like `ip netns add NAME` (see netns.mount_new_namespace), in the host's mount namespace."""
    host = _foreign_mount_ns()
    try:
        if host is None:
            mount_new_namespace(name)
            return
        # setns() into a mount namespace is refused to a multi-threaded process: a short-lived child of
        # our own Python does it. It imports ipvland.netns alone (the standard library, no pyroute2) and
        # only then enters the host's mount namespace, where our Python need not exist (a container).
        code = ("import sys\nfrom ipvland.netns import create_in_mount_namespace\ntry:\n"
                "    create_in_mount_namespace(sys.argv[1], sys.argv[2])\nexcept OSError as e:\n"
                "    sys.exit(f'{e.errno} {e.strerror}')")
        # -I: the child's sys.path is the installation's, never the cwd's or $PYTHONPATH's.
        done = subprocess.run([sys.executable, "-I", "-c", code, host, name],
                              capture_output=True, text=True, check=False, timeout=30)
    except subprocess.TimeoutExpired:
        raise KernelError(f"create netns {name}", errnos.ETIMEDOUT, "the child that mounts it hung for 30 s") from None
    except OSError as e:
        raise KernelError(f"create netns {name}", e.errno or errnos.EPERM, e.strerror or str(e)) from None
    if done.returncode < 0:
        raise KernelError(f"create netns {name}", errnos.EINTR,
                          f"the child that mounts it was killed by signal {-done.returncode}")
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["0 ?"])[-1]
        code_text, _, message = last.partition(" ")
        err = int(code_text) if code_text.isdigit() else errnos.EPERM
        raise KernelError(f"create netns {name}", err, f"in the host mount namespace: {message or last}")


def delete_namespace(name: str) -> None:
    """Like `ip netns delete NAME` (used by tests; ipvland itself never deletes namespaces)."""
    path = os.path.join(NETNS_DIR, name)
    _libc.umount2(path.encode(), 2)  # MNT_DETACH
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


# ---------------------------------------------------------------- errors


class KernelError(Exception):
    def __init__(self, op: str, errno: int, message: str) -> None:
        super().__init__(op, errno, message)
        self.op = op
        self.errno = errno
        self.message = message

    def __str__(self) -> str:
        name = errnos.errorcode.get(self.errno, str(self.errno))
        if self.errno == errnos.EOPNOTSUPP and "Unknown device type" in self.message:
            # rtnetlink knows no link kind "ipvlan" (the only kind ipvland creates); the op would
            # only name the temporary device
            return f"this kernel lacks IPVLAN (modprobe ipvlan): {self.message} ({name})"
        return f"{self.op}: {self.message} ({name})"


def _kernel_error(op: str, e: OSError) -> KernelError:
    code = e.errno or 0
    return KernelError(op, code, e.strerror or os.strerror(code))


# ---------------------------------------------------------------- the raw socket

# include/uapi/linux/netlink.h and rtnetlink.h
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_REPLACE = 0x100
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
RTM_NEWLINK = 16
RTM_DELLINK = 17
RTM_NEWADDR = 20
RTM_DELADDR = 21
RTM_NEWROUTE = 24
RTM_DELROUTE = 25
RTM_NEWNEIGH = 28
RTM_DELNEIGH = 29
_NLMSG_ERROR = 2
_NLMSG_DONE = 3
_NLM_F_DUMP = 0x300
_NLM_F_DUMP_INTR = 0x10
_RTM_GETLINK = 18
_RTM_GETADDR = 22
_RTM_GETROUTE = 26
_RTM_GETNEIGH = 30
_RTM_NEWRULE = 32
_RTM_GETNETCONF = 82
_NETCONFA_IFINDEX = 1
_NETCONFA_FORWARDING = 2
_RTM_DELRULE = 33
_RTM_GETRULE = 34
# fib_rule_hdr's attributes (include/uapi/linux/fib_rules.h)
_FRA_DST = 1
_FRA_SRC = 2
_FRA_IIFNAME = 3
_FRA_PRIORITY = 6
_FRA_FWMARK = 10
_FRA_TABLE = 15
_FRA_FWMASK = 16
_FRA_OIFNAME = 17
_FRA_PROTOCOL = 21
_FIB_RULE_INVERT = 2
_RULE_ACTION_NAMES = {v: k for k, v in RULE_ACTIONS.items()}
_FAMILY = {4: socket.AF_INET, 6: socket.AF_INET6}
_RTM_GETNSID = 90
_IFLA_ADDRESS = 1
_IFLA_IFNAME = 3
_IFLA_MTU = 4
_IFLA_LINK = 5
_IFLA_LINKINFO = 18
_IFLA_IFALIAS = 20
_IFLA_NET_NS_FD = 28
_IFLA_EXT_MASK = 29
_IFLA_LINK_NETNSID = 37
_IFLA_PERM_ADDRESS = 54
_IFLA_AF_SPEC = 26
_IFLA_INET_CONF = 1  # in IFLA_AF_SPEC/AF_INET: u32 per IPV4_DEVCONF_* (1-based), dumped as an array
_IFLA_INET6_CONF = 2  # in IFLA_AF_SPEC/AF_INET6: s32 per DEVCONF_* (0-based), dumped as an array
_NLA_F_NESTED = 0x8000
# Where each sysctl of normalize.SYSCTLS sits in the link dump: (family, index in its devconf array).
_DEVCONF = {
    normalize.PROMOTE_SECONDARIES: (socket.AF_INET, 19),  # IPV4_DEVCONF_PROMOTE_SECONDARIES=20
    "ipv6.accept_ra": (socket.AF_INET6, 3),  # DEVCONF_ACCEPT_RA
    "ipv6.autoconf": (socket.AF_INET6, 5),  # DEVCONF_AUTOCONF
    "ipv6.disable_ipv6": (socket.AF_INET6, 26),  # DEVCONF_DISABLE_IPV6
    "ipv6.addr_gen_mode": (socket.AF_INET6, 47),  # DEVCONF_ADDR_GEN_MODE
    "ipv4.forwarding": (socket.AF_INET, 0),  # IPV4_DEVCONF_FORWARDING=1
    "ipv4.rp_filter": (socket.AF_INET, 7),  # IPV4_DEVCONF_RP_FILTER=8
    "ipv4.arp_announce": (socket.AF_INET, 17),  # IPV4_DEVCONF_ARP_ANNOUNCE=18
    "ipv4.arp_ignore": (socket.AF_INET, 18),  # IPV4_DEVCONF_ARP_IGNORE=19
    normalize.KEEP_ADDR_ON_DOWN: (socket.AF_INET6, 42),  # DEVCONF_KEEP_ADDR_ON_DOWN
}
_DEVCONF_ATTR = {socket.AF_INET: _IFLA_INET_CONF, socket.AF_INET6: _IFLA_INET6_CONF}  # the array, per family
_IPV4_DEVCONF_PROMOTE_SECONDARIES = 20
_RTEXT_FILTER_SKIP_STATS = 1 << 3
_IFLA_INFO_KIND = 1
_IFLA_INFO_DATA = 2
_IFLA_IPVLAN_MODE = 1
_IFLA_IPVLAN_FLAGS = 2
_VETH_INFO_PEER = 1
_IFF_UP = 1
_IFA_ADDRESS = 1
_IFA_LOCAL = 2
_IFA_CACHEINFO = 6
_IFA_FLAGS = 8
_IFA_F_DADFAILED = 0x08
_IFA_F_TENTATIVE = 0x40
_RTA_DST = 1
_RTA_OIF = 4
_RTA_GATEWAY = 5
_RTA_PRIORITY = 6
_RTA_PREFSRC = 7
_RTA_TABLE = 15
_RTA_VIA = 18
_RTA_METRICS = 8
_RTA_MULTIPATH = 9
_RTAX_MTU = 2
_RTN_UNICAST = 1
_ROUTE_TYPE_NAMES = {v: k for k, v in normalize.ROUTE_TYPES.items()}
_LOCAL_TABLE = 255
_NDA_DST = 1
_NDA_LLADDR = 2
_NDA_PROTOCOL = 12
_NUD_PERMANENT = 0x80
_NETNSA_NSID = 1
_NETNSA_FD = 3
_AF = {socket.AF_INET: 4, socket.AF_INET6: 6}

Attrs = dict[int, bytes]


_NLA_HEADER = struct.Struct("HH").unpack_from


def _attrs(data: bytes, off: int, end: int) -> Attrs:
    out: Attrs = {}
    while off + 4 <= end:
        length, kind = _NLA_HEADER(data, off)
        if length < 4:
            break
        out[kind & 0x3FFF] = data[off + 4 : off + length]  # strip NLA_F_NESTED / byte-order bits
        off += (length + 3) & ~3
    return out


def _nla(kind: int, value: bytes) -> bytes:
    return struct.pack("HH", 4 + len(value), kind) + value + bytes(-len(value) % 4)


def _u32_nla(kind: int, value: int) -> bytes:
    return _nla(kind, struct.pack("I", value))


def _str_nla(kind: int, value: str) -> bytes:
    return _nla(kind, value.encode() + b"\0")


def _ifinfomsg(index: int = 0, flags: int = 0, change: int = 0) -> bytes:
    """struct ifinfomsg: family (AF_UNSPEC), type, index, flags, change."""
    return struct.pack("BxHiII", socket.AF_UNSPEC, 0, index, flags, change)


def _linkinfo(kind: str, data: bytes) -> bytes:
    """IFLA_LINKINFO: the link kind and its IFLA_INFO_DATA."""
    return _nla(_IFLA_LINKINFO | _NLA_F_NESTED,
                _str_nla(_IFLA_INFO_KIND, kind) + _nla(_IFLA_INFO_DATA | _NLA_F_NESTED, data))


def _ipvlan_linkinfo(mode: Mode, flags: Flag) -> bytes:
    """IFLA_LINKINFO of kind ipvlan: the mode and flags (u16 each)."""
    return _linkinfo("ipvlan", _nla(_IFLA_IPVLAN_MODE, struct.pack("H", mode.value))
                     + _nla(_IFLA_IPVLAN_FLAGS, struct.pack("H", flags.value)))


def _str(value: bytes) -> str:
    return value.split(b"\0", 1)[0].decode(errors="replace")


def _u32(value: bytes) -> int:
    return int(struct.unpack_from("I", value)[0])


# The values a dump decodes again and again (the same addresses, prefixes and MACs at every resync)
# are built once: ipaddress' constructors and the MAC text were a third of a no-op's decoding at
# N=1000 (README, Performance). The objects are immutable, so sharing them is safe; each cache is
# bounded, so a host whose objects keep changing costs a cache miss, never memory.
_VALUE_CACHE = 1 << 14


@functools.lru_cache(maxsize=_VALUE_CACHE)
def _mac(value: bytes) -> str:
    return ":".join(f"{b:02x}" for b in value)


@functools.lru_cache(maxsize=_VALUE_CACHE)
def _ip(family: int, value: bytes) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.IPv4Address(value[:4]) if family == socket.AF_INET else ipaddress.IPv6Address(value[:16])


@functools.lru_cache(maxsize=_VALUE_CACHE)
def _interface(family: int, value: bytes, prefixlen: int) -> IPInterface:
    return interned(ipaddress.IPv4Interface((value[:4], prefixlen)) if family == socket.AF_INET
                    else ipaddress.IPv6Interface((value[:16], prefixlen)))


_NLM_F_CAPPED = 0x100
_NLM_F_ACK_TLVS = 0x200
_NLMSGERR_ATTR_MSG = 1


def _refusal(data: bytes, off: int, length: int, mflags: int) -> OSError:
    """The OSError for an NLMSG_ERROR: strerror, then the extended ACK's message when there is one."""
    err = -struct.unpack_from("i", data, off + 16)[0]
    text = os.strerror(err)
    if mflags & _NLM_F_ACK_TLVS:
        echoed = 16 if mflags & _NLM_F_CAPPED else struct.unpack_from("I", data, off + 20)[0]
        tlvs = off + 20 + ((echoed + 3) & ~3)
        message = _attrs(data, tlvs, off + length).get(_NLMSGERR_ATTR_MSG)
        if message:
            text = f"{text}: {_str(message)}"
    return OSError(err, text)


def _sysctls(af_spec: bytes) -> tuple[tuple[str, int], ...]:
    """The sysctls of normalize.SYSCTLS from a link's IFLA_AF_SPEC (IPv4 and IPv6 devconf arrays)."""
    families = _attrs(af_spec, 0, len(af_spec))
    confs: dict[int, bytes] = {}
    for family in (socket.AF_INET, socket.AF_INET6):
        if family in families:
            inner = families[family]
            confs[family] = _attrs(inner, 0, len(inner)).get(_DEVCONF_ATTR[family], b"")
    # by the arrays alone: the rest of IFLA_AF_SPEC (IPv6 cache info, counters) changes by itself
    return _devconf(confs.get(socket.AF_INET, b""), confs.get(socket.AF_INET6, b""))


@functools.lru_cache(maxsize=_VALUE_CACHE)
def _devconf(conf4: bytes, conf6: bytes) -> tuple[tuple[str, int], ...]:
    out = []
    for key, (family, index) in _DEVCONF.items():
        conf = conf4 if family == socket.AF_INET else conf6
        if len(conf) >= 4 * (index + 1):
            out.append((key, int(struct.unpack_from("i", conf, 4 * index)[0])))
    return tuple(out)


def _promote_secondaries() -> bytes:
    """IFLA_AF_SPEC setting net.ipv4.conf.DEV.promote_secondaries=1, for a changelink."""
    conf = _nla(_IFLA_INET_CONF | _NLA_F_NESTED, _u32_nla(_IPV4_DEVCONF_PROMOTE_SECONDARIES, 1))
    return _nla(_IFLA_AF_SPEC | _NLA_F_NESTED, _nla(socket.AF_INET | _NLA_F_NESTED, conf))


def _gateway(family: int, a: Attrs) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if _RTA_GATEWAY in a:
        return _ip(family, a[_RTA_GATEWAY])
    if _RTA_VIA in a:
        vfam = struct.unpack_from("H", a[_RTA_VIA])[0]
        return _ip(vfam, a[_RTA_VIA][2:])
    return None


def _route_of(family: int, dst_len: int, table: int, scope: int, rtype: str, rflags: int, a: Attrs,
              names: dict[int, str]) -> tuple[int, Route] | None:
    """(output ifindex, Route) of one route message; None for a route through no device that is
    not a reject route (ipvland makes none). A reject route's device (IPv6: lo) is 0 here; a
    multipath route's is its first nexthop's, and each nexthop names its device."""
    nexthops: list[Nexthop] = []
    ifindex = _u32(a[_RTA_OIF]) if _RTA_OIF in a else 0
    mp = a.get(_RTA_MULTIPATH, b"")
    off = 0
    while off + 8 <= len(mp):
        length, _, hops, index = struct.unpack_from("HBBi", mp, off)
        if length < 8:
            break
        nexthops.append(Nexthop(_gateway(family, _attrs(mp, off + 8, off + length)), names.get(index, str(index)),
                                hops + 1))
        ifindex = ifindex or index
        off += (length + 3) & ~3
    if rtype in normalize.REJECT_TYPES:
        ifindex = 0
    elif not ifindex:
        return None
    metrics = a.get(_RTA_METRICS, b"")
    mtu = _attrs(metrics, 0, len(metrics)).get(_RTAX_MTU)
    metric = _u32(a[_RTA_PRIORITY]) if _RTA_PRIORITY in a else None
    return ifindex, Route(
        to=_network(family, a.get(_RTA_DST, bytes(16)), dst_len),
        via=_gateway(family, a),
        metric=metric or None,
        table=None if table == MAIN_TABLE else table,
        src=_ip(family, a[_RTA_PREFSRC]) if _RTA_PREFSRC in a else None,
        type=rtype,
        onlink=bool(rflags & normalize.RTNH_F_ONLINK),
        scope=scope,
        mtu=_u32(mtu) if mtu else None,
        nexthops=tuple(nexthops),
    )


@functools.lru_cache(maxsize=_VALUE_CACHE)
def _network(family: int, packed: bytes, prefixlen: int) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    # From the packed bytes: building it from a "addr/len" string costs several times more.
    if family == socket.AF_INET:
        return ipaddress.IPv4Network((packed[:4], prefixlen), strict=False)
    return ipaddress.IPv6Network((packed[:16], prefixlen), strict=False)


def _address_of(netns: str | None, data: bytes) -> ObservedAddress | None:
    """One RTM_NEWADDR; None for one ipvland has no use for."""
    family, prefixlen, _, _, index = struct.unpack_from("BBBBI", data, 16)
    if family not in _AF:
        return None
    a = _attrs(data, 24, len(data))
    value = a.get(_IFA_LOCAL) or a.get(_IFA_ADDRESS)
    if value is None:
        return None
    iface = _interface(family, value, prefixlen)
    flags = _u32(a[_IFA_FLAGS]) if _IFA_FLAGS in a else data[18]
    # ifa_cacheinfo: preferred, valid (seconds left; INFINITY_LIFE_TIME for a static one), ...
    valid = _u32(a[_IFA_CACHEINFO][4:8]) if len(a.get(_IFA_CACHEINFO, b"")) >= 8 else None
    peer = None
    if _IFA_LOCAL in a and _IFA_ADDRESS in a and a[_IFA_LOCAL] != a[_IFA_ADDRESS]:
        peer = _ip(family, a[_IFA_ADDRESS])
    preferred = _u32(a[_IFA_CACHEINFO][:4]) if len(a.get(_IFA_CACHEINFO, b"")) >= 8 else None
    options = AddressOptions(
        nodad=bool(flags & normalize.IFA_F_NODAD), noprefixroute=bool(flags & normalize.IFA_F_NOPREFIXROUTE),
        home=bool(flags & normalize.IFA_F_HOMEADDRESS),
        deprecated=bool(flags & normalize.IFA_F_DEPRECATED) or preferred == 0, peer=peer)
    return ObservedAddress(
        netns=netns, ifindex=index, address=iface,
        dynamic=valid is not None and valid != normalize.INFINITY_LIFE_TIME,
        dad_failed=bool(flags & _IFA_F_DADFAILED), options=PLAIN if options == PLAIN else options,
        # a failed DAD leaves the tentative bit set too: that one is dad_failed, not settling
        tentative=bool(flags & _IFA_F_TENTATIVE) and not flags & _IFA_F_DADFAILED)


def _observed_route(netns: str | None, data: bytes, ours_only: bool, tables: frozenset[int] | None,
                    names: dict[int, str]) -> ObservedRoute | None:
    """One RTM_NEWROUTE of Kernel.routes (`ours_only`: from its dump of ipvland's protocol); None
    for one ipvland has no use for."""
    family, dst_len, _, _, table, proto, scope, rtype, rflags = struct.unpack_from("BBBBBBBBI", data, 16)
    if family not in _AF or rtype not in _ROUTE_TYPE_NAMES or table == _LOCAL_TABLE:
        return None  # the local table (the kernel's own, most of a namespace's routes) is in the header
    if ours_only and proto != RT_PROTO:
        return None  # a kernel that ignored the filter
    a = _attrs(data, 28, len(data))
    if _RTA_TABLE in a:
        table = _u32(a[_RTA_TABLE])
    if table == _LOCAL_TABLE:
        return None
    if tables is not None and (table in tables) == ours_only:
        return None  # another table (a kernel that ignored the filter), or already in its table's dump
    found = _route_of(family, dst_len, table, scope, _ROUTE_TYPE_NAMES[rtype], rflags, a, names)
    if found is None:
        return None
    ifindex, route = found
    return ObservedRoute(netns=netns, ifindex=ifindex, route=route, protocol=proto)


class _Decoded(Generic[T]):
    """What the last dump of one kind in one namespace decoded, by message: the same message (without
    its netlink header, whose sequence number changes at every dump) is not decoded again. Decoding
    was most of a no-op reconcile at N=1000 (README, Performance): now a resync of namespaces whose
    objects did not change costs the dumps. Sound because each decoder is a pure function of the
    message, of its `salt` (which dump it came from) and of `context` (what else it reads, such as
    the tables asked for): another context forgets everything; a result that reads more than that is
    not kept (`keep`). Only the last dump's messages are kept, up to _MEMO_LIMIT, and a namespace's
    memo goes with its socket (a re-created namespace starts afresh)."""

    __slots__ = ("context", "memo")

    def __init__(self) -> None:
        self.context: object = _NO_CONTEXT
        self.memo: dict[tuple[object, bytes], T | None] = {}

    def decode(self, context: object, messages: Iterable[tuple[object, bytes]],
               fn: Callable[[object, bytes], T | None], keep: Callable[[T], bool] = lambda _: True) -> list[T]:
        """fn(salt, message) for each message not seen in the last dump; `keep` says which results
        may be kept (the others depend on more than the message and the context)."""
        old = self.memo if context == self.context else {}
        new: dict[tuple[object, bytes], T | None] = {}
        out = []
        for salt, data in messages:
            key = (salt, data[16:])
            got = old[key] if key in old else fn(salt, data)
            if got is None or keep(got):
                new[key] = got
            if got is not None:
                out.append(got)
        # Only once the dump is whole: a failed one keeps the old memo. A dump too big to keep (a
        # router's full table in `main`) is decoded every time, as before, rather than held.
        self.context, self.memo = context, new if len(new) <= _MEMO_LIMIT else {}
        return out


_NO_CONTEXT = object()
# Messages of one dump kept decoded, at most (per namespace and kind): about 1.5 KiB each with the
# decoded route, so a namespace holds at most ~15 MiB; a namespace of ipvland's devices has tens.
_MEMO_LIMIT = 10_000


_NLMSG_NOOP = 1
Posted = tuple[int, str]  # a posted write: the caller's tag, and the operation (for the error)
_OUTBOX_LIMIT = 32 << 10  # bytes of posted requests sent in one sendmsg (the kernel takes up to sk_sndbuf)
# Posted writes between two barriers. A refusal waits in the socket's receive queue until read; once
# that queue is full the kernel drops answers and marks the socket congested until it is read empty,
# dropping every ACK meanwhile (a later request would wait forever: found in review, 700 refusals on
# a default host, rmem_max 212992). 64 refusals of about 1 KiB each stay far below it.
_POST_WINDOW = 64


_RECEIVE = threading.local()


def _receive(sock: socket.socket) -> bytes:
    """One datagram, into a buffer kept per thread and copied out at its size. sock.recv(1 MiB)
    allocates (and the allocator maps and unmaps) a 1 MiB object for every datagram, at least two
    per dump: measured 3x the cost of a small dump natively, and far more under emulation. 1 MiB
    because a datagram bigger than the buffer is cut (one link with many VFs can pass 64 KiB)."""
    buf = getattr(_RECEIVE, "buf", None)
    if buf is None:
        buf = _RECEIVE.buf = bytearray(1 << 20)
    n = sock.recv_into(buf)
    return bytes(memoryview(buf)[:n])


class _Channel:
    """A raw rtnetlink socket in one namespace: requests and dumps, answers handed back undecoded.

    Writes may also be *posted* (pipelined): sent without NLM_F_ACK, several in one sendmsg, their
    answers read later. rtnetlink does each request inside the sendmsg that carries it, in order, and
    answers one without NLM_F_ACK only when it refuses it, so a posted write costs no read at all;
    `settle()` sends a NLMSG_NOOP with NLM_F_ACK behind them (a barrier: its ACK comes after every
    refusal of what was posted before it) and hands back the refusals by the tag each was posted with.
    Every other request first sends what is posted (`flush`, also the other channels' through the
    Kernel): the kernel then has done every earlier write, in the order they were made.
    """

    def __init__(self, sock: socket.socket, flush_others: Callable[[], None] = lambda: None) -> None:
        self.sock = sock
        self.seq = 0
        self.outbox = bytearray()
        self.unsent: list[int] = []  # the seqs in outbox
        self.posted: dict[int, Posted] = {}  # seq -> what was posted, until a barrier's ACK is read
        self.refused: list[tuple[Posted, OSError]] = []  # refusals of posted writes, read so far
        self._flush_others = flush_others
        # the id under which this namespace knows ipvland's own (Kernel._nsid_of_home): fixed for the
        # life of the two namespaces, so asked once per socket, not once per dump
        self.home_nsid: int | None = None
        self.home_nsid_known = False
        self.decoded: dict[str, _Decoded[object]] = {}  # by kind: Kernel._decoded

    def close(self) -> None:
        self.sock.close()

    def post(self, msg_type: int, body: bytes, flags: int, tag: Posted) -> None:
        """Queue a write without NLM_F_ACK; sent at the latest by the next request or settle()."""
        if len(self.posted) >= _POST_WINDOW:
            self.drain()
        self.seq += 1
        self.posted[self.seq] = tag
        self.unsent.append(self.seq)
        self.outbox += struct.pack("IHHII", 16 + len(body), msg_type, NLM_F_REQUEST | flags, self.seq, 0) + body
        if len(self.outbox) >= _OUTBOX_LIMIT:
            self.flush()

    def flush(self) -> None:
        """Send what is posted. A send the kernel refuses as a whole refuses each write in it."""
        if not self.outbox:
            return
        data, seqs = bytes(self.outbox), self.unsent
        self.outbox.clear()
        self.unsent = []
        try:
            self.sock.send(data)
        except OSError as e:
            self.refused.extend((self.posted.pop(seq), e) for seq in seqs)

    def drain(self) -> None:
        """Read every answer to what was posted so far: a barrier (NLMSG_NOOP with NLM_F_ACK) is
        answered after all of them. On a failing socket, what was not answered is refused with that error."""
        if not self.posted:
            return
        try:
            for _ in self.request(_NLMSG_NOOP, b"", NLM_F_REQUEST | NLM_F_ACK):
                pass
        except OSError as e:  # not known to be done: said so, not assumed
            self.refused.extend((p, OSError(e.errno, f"{e.strerror}: the kernel's answer was lost"))
                                for p in self.posted.values())
        self.posted.clear()

    def settle(self) -> list[tuple[Posted, OSError]]:
        """The refusals of every write posted so far, with their tags (none: all were done)."""
        self.drain()
        refused, self.refused = self.refused, []
        return refused

    def request(self, msg_type: int, body: bytes, flags: int) -> Iterator[tuple[int, bytes, int]]:
        """Yields (type, data, offset of the payload) for each answer until DONE, or the one answer.

        A request with NLM_F_ACK and no answer of its own yields nothing; a refusal raises OSError.
        """
        self._flush_others()
        self.flush()  # on its own: a dump's first answers would otherwise wait behind the posted writes
        self.seq += 1
        seq = self.seq
        self.sock.send(struct.pack("IHHII", 16 + len(body), msg_type, flags, seq, 0) + body)
        interrupted = False
        while True:
            data = _receive(self.sock)
            off = 0
            while off + 16 <= len(data):
                length, mtype, mflags, mseq, _ = struct.unpack_from("IHHII", data, off)
                if length < 16:
                    return
                if mseq != seq and mseq in self.posted and mtype == _NLMSG_ERROR:
                    if struct.unpack_from("i", data, off + 16)[0]:  # a posted write was refused
                        self.refused.append((self.posted.pop(mseq), _refusal(data, off, length, mflags)))
                elif mseq == seq:  # anything else is a late answer to an abandoned request
                    # A dump that raced with a change: read it to its end (the kernel refuses a new
                    # dump on this socket, EBUSY, while one is under way), then say so.
                    interrupted = interrupted or bool(mflags & _NLM_F_DUMP_INTR)
                    if mtype == _NLMSG_DONE:
                        if interrupted:
                            raise _DumpInterrupted
                        return
                    if mtype == _NLMSG_ERROR:
                        if struct.unpack_from("i", data, off + 16)[0]:
                            raise _refusal(data, off, length, mflags)
                        return  # the ACK
                    if not interrupted:
                        yield mtype, data[off : off + length], 16
                    if not flags & (_NLM_F_DUMP | NLM_F_ACK):
                        return
                off += (length + 3) & ~3

    @contextlib.contextmanager
    def strict(self) -> Iterator[None]:
        """Dumps whose filters the kernel applies (NETLINK_GET_STRICT_CHK), for the requests inside
        only: elsewhere on this socket the usual lenient checking stays. Kernels without it (before
        4.20) ignore the filters: callers filter what comes back all the same."""
        try:
            self.sock.setsockopt(_SOL_NETLINK, _NETLINK_GET_STRICT_CHK, 1)
        except OSError:
            yield
            return
        try:
            yield
        finally:
            self.sock.setsockopt(_SOL_NETLINK, _NETLINK_GET_STRICT_CHK, 0)

    def dump(self, msg_type: int, body: bytes) -> list[bytes]:
        for _ in range(5):  # the kernel flags a dump that raced with a change: take it again
            try:
                return [d for _, d, _ in self.request(msg_type, body, NLM_F_REQUEST | _NLM_F_DUMP)]
            except _DumpInterrupted:
                continue
        raise OSError(errnos.EAGAIN, "dump interrupted repeatedly")

    def write(self, msg_type: int, body: bytes, flags: int) -> None:
        """One change, acknowledged: returns when the kernel has done it, raises OSError if refused."""
        for _ in self.request(msg_type, body, NLM_F_REQUEST | NLM_F_ACK | flags):
            pass


class _DumpInterrupted(Exception):
    pass


# ---------------------------------------------------------------- the Kernel


class Kernel:
    """Per-namespace sockets (cached), reads as model types, and single write operations.

    `writes` counts every netlink write request sent (add/set/del), so a caller can check that a
    reconcile with nothing to do sent none; `dumps` counts dump requests per namespace.

    Writes made inside `posting(tag)` are pipelined (see _Channel): sent without waiting for an
    answer, and `settle()` hands back the refused ones with their tags. Only one channel holds
    unsent posted writes at a time, and they are sent before any request on any channel, a /proc
    write, or a write to another channel: the kernel sees every change in the order it was made.
    Which writes are posted is the caller's choice (apply.SYNCHRONOUS keeps creates waited for).
    """

    def __init__(self) -> None:
        self.writes = 0
        self.dumps: collections.Counter[str | None] = collections.Counter()
        raise_fd_limit()
        self._home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)  # ipvland's own namespace
        # per namespace: the namespace's identity when the socket was opened, and the socket
        self._channels: dict[str | None, tuple[tuple[int, int] | None, _Channel]] = {}
        self._index: dict[str | None, dict[str, int]] = {}  # name -> ifindex, from the latest dump
        self._root_names: dict[int, str] = {}
        self._tag: int | None = None  # not None: writes are posted under this tag
        self._posting: _Channel | None = None  # the channel whose posted writes may be unsent
        # the channels posted to since the last settle(), which reads only theirs: a repair at 1000
        # namespaces posts to one or two of 1000 sockets
        self._posted_to: dict[int, _Channel] = {}
        self._refused: list[tuple[int, KernelError]] = []  # of channels closed before settle()
        self._turns = 0  # depth of one_listing()
        self._listed: frozenset[str] | None = None  # the listing held by one_listing()
        self._listing: tuple[tuple[int, int, int], frozenset[str]] | None = None  # see LISTING_SETTLE_NS
        self._reuse = False  # this turn may reuse self._listing (one_listing(reuse=True))

    # -- lifetime

    def close(self) -> None:
        for _, channel in self._channels.values():
            channel.close()
        self._channels.clear()
        self._posted_to.clear()
        if self._home >= 0:
            os.close(self._home)
            self._home = -1

    def __enter__(self) -> Kernel:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def forget(self, netns: str) -> None:
        """Drop the cached socket of a namespace (e.g. after it was deleted)."""
        cached = self._channels.pop(netns, None)
        if cached is not None:
            self._refused.extend(self._settle(cached[1]))
            self._posted_to.pop(id(cached[1]), None)
            cached[1].close()
        self._index.pop(netns, None)

    # -- pipelined writes

    @contextlib.contextmanager
    def posting(self, tag: int) -> Iterator[None]:
        """Writes inside are posted under `tag`, not waited for; settle() says which were refused."""
        self._tag = tag
        try:
            yield
        finally:
            self._tag = None

    def settle(self) -> list[tuple[int, KernelError]]:
        """(tag, the kernel's refusal) of every posted write it refused, once all were done."""
        refused, self._refused = self._refused, []
        posted_to, self._posted_to = self._posted_to, {}
        for channel in posted_to.values():
            refused.extend(self._settle(channel))
        self._posting = None
        return refused

    def _settle(self, channel: _Channel) -> list[tuple[int, KernelError]]:
        if self._posting is channel:
            self._posting = None
        return [(tag, _kernel_error(op, error)) for (tag, op), error in channel.settle()]

    def _flush_posted(self) -> None:
        if self._posting is not None:
            self._posting.flush()

    def retain(self, namespaces: frozenset[str]) -> None:
        """Close the sockets of every named namespace but these (the spec's): a socket keeps its
        namespace alive, so ipvland holds none in other tools' namespaces (cni-*, say) between
        reads, nor in one that left the spec: `ip netns del` then frees it at once."""
        for netns in [ns for ns in self._channels if ns is not None and ns not in namespaces]:
            self.forget(netns)

    def _channel(self, netns: str | None) -> _Channel:
        """The namespace's socket, opened anew when the name now means another namespace.

        A socket keeps its namespace alive: one left on a namespace deleted by hand would keep its
        devices (and their addresses, in the way of re-creating them), and one on a namespace
        deleted and re-created under the same name would read and change the old one.
        """
        identity = None
        if netns is not None:
            st = os.stat(os.path.join(NETNS_DIR, netns))  # the nsfs inode: the namespace itself
            identity = (st.st_dev, st.st_ino)
        cached = self._channels.get(netns)
        if cached is not None and cached[0] == identity:
            return cached[1]
        if cached is not None and netns is not None:
            self.forget(netns)  # the name now means another namespace
        channel = _Channel(_open_raw(netns), self._flush_posted)
        self._channels[netns] = (identity, channel)
        return channel

    def _decoded(self, netns: str | None, kind: str, op: str) -> tuple[_Channel, _Decoded[Any]]:
        """The namespace's socket and its memo of a kind's decoded messages. The memo lives with the
        socket, so a namespace re-created under the same name starts afresh; the dumps that follow
        use this same socket (one check of the name per read, not one per dump)."""
        try:
            channel = self._channel(netns)
        except OSError as e:
            raise _kernel_error(f"{op}{_where(netns)}", e) from None
        return channel, channel.decoded.setdefault(kind, _Decoded())

    def _dump(self, netns: str | None, op: str, msg_type: int, body: bytes,
              channel: _Channel | None = None) -> list[bytes]:
        """One dump in `netns`, on `channel` when the caller already holds the namespace's socket."""
        self.dumps[netns] += 1
        try:
            return (channel or self._channel(netns)).dump(msg_type, body)
        except OSError as e:
            raise _kernel_error(f"{op}{_where(netns)}", e) from None

    # -- namespaces

    def list_namespaces(self) -> frozenset[str]:
        """The named namespaces; the sockets of those that are gone are closed (see _channel).
        Inside one_listing(), the list taken first (with the namespaces created since)."""
        if self._listed is not None:
            return self._listed
        names = self._list()
        for netns in [ns for ns in self._channels if ns is not None and ns not in names
                      and not (is_path_netns(ns) and is_namespace(ns))]:  # one by path stays while it exists
            self.forget(netns)
        if self._turns:
            self._listed = names
        return names

    def _list(self) -> frozenset[str]:
        """list_namespaces(); in a turn that may reuse it (a repair), the last listing while /run/netns
        is as it was then: a stat of the directory instead of one per namespace (LISTING_SETTLE_NS).
        Kept only when every name was a namespace mounted on it and no symlink (_scan_namespaces).
        What a reused listing cannot see: another tool mounting on, or unmounting from, a name without
        touching the directory, more than LISTING_SETTLE_NS after the name was created (`ip netns`
        does neither). The next full turn (a resync, a config change) lists afresh."""
        try:
            st = os.stat(NETNS_DIR)
        except OSError:
            self._listing = None
            return list_namespaces()
        key = (st.st_dev, st.st_ino, st.st_mtime_ns)
        if self._reuse and self._listing is not None and self._listing[0] == key:
            return self._listing[1]
        listed_at = time.time_ns()
        names, clean = _scan_namespaces()
        self._listing = (key, names) if clean and listed_at - st.st_mtime_ns >= LISTING_SETTLE_NS else None
        return names

    @contextlib.contextmanager
    def one_listing(self, reuse: bool = False) -> Iterator[None]:
        """/run/netns is listed once for everything inside: one reconcile (its observes before and
        after applying) or one turn of the daemon (its monitor's updates too). Listing is a scan and a
        stat per namespace: at 1000 namespaces, done four times, it was most of a repair's time
        (issue 13). Namespaces ipvland creates inside are added; one another tool adds or deletes
        meanwhile is seen at the next turn (its event, or /run/netns's, asks for one). Nests: the
        outermost decides. reuse: the listing of an earlier turn may serve (see _list); the daemon's
        repairs only."""
        if not self._turns:
            self._reuse = reuse
        self._turns += 1
        try:
            yield
        finally:
            self._turns -= 1
            if not self._turns:
                self._listed = None
                self._reuse = False

    def create_namespace(self, name: str) -> None:
        create_namespace(name)
        self._listing = None  # a mount on an existing name (a leftover empty file) leaves the directory as it was
        if self._listed is not None:
            self._listed = self._listed | {name}

    # -- reads

    def links(self, netns: str | None, kind: str | None = None) -> list[ObservedLink]:
        """The namespace's links; with `kind`, only those of that kind (the kernel filters the dump
        when it knows the kind, as `ip link show type KIND`; anything else is dropped here)."""
        body = struct.pack("BxHiII", socket.AF_UNSPEC, 0, 0, 0, 0)
        body += struct.pack("HHI", 8, _IFLA_EXT_MASK, _RTEXT_FILTER_SKIP_STATS)  # no counters: less to copy
        if kind is not None:
            body += _nla(_IFLA_LINKINFO | _NLA_F_NESTED, _nla(_IFLA_INFO_KIND, kind.encode()))
        raw: list[tuple[int, str, Attrs, int, Attrs]] = []
        for data in self._dump(netns, "list links", _RTM_GETLINK, body):
            _, _, index, ifflags, _ = struct.unpack_from("BxHiII", data, 16)
            a = _attrs(data, 32, len(data))
            info = _attrs(a[_IFLA_LINKINFO], 0, len(a[_IFLA_LINKINFO])) if _IFLA_LINKINFO in a else {}
            if kind is not None and _str(info.get(_IFLA_INFO_KIND, b"")) != kind:
                continue
            raw.append((index, _str(a.get(_IFLA_IFNAME, b"")), a, ifflags, info))
        names = {index: name for index, name, *_ in raw}
        if kind is None:  # a filtered dump does not know every name
            self._index[netns] = {name: index for index, name, *_ in raw}
        if netns is None and kind is None:
            self._root_names = names
        home_nsid: int | None = None
        home_nsid_known = False
        out = []
        for index, name, a, ifflags, info in raw:
            kind = _str(info[_IFLA_INFO_KIND]) if _IFLA_INFO_KIND in info else None
            parent = mode = flags = None
            sysctls: tuple[tuple[str, int], ...] = ()
            if kind == "ipvlan":
                sysctls = _sysctls(a.get(_IFLA_AF_SPEC, b""))
                data = info.get(_IFLA_INFO_DATA, b"")
                d = _attrs(data, 0, len(data))
                if _IFLA_IPVLAN_MODE in d:
                    mode = _enum(Mode, struct.unpack_from("H", d[_IFLA_IPVLAN_MODE])[0])
                flags = _enum(Flag, struct.unpack_from("H", d[_IFLA_IPVLAN_FLAGS])[0] if
                              _IFLA_IPVLAN_FLAGS in d else 0)
                if _IFLA_LINK in a:
                    plink = _u32(a[_IFLA_LINK])
                    if _IFLA_LINK_NETNSID not in a:
                        # The parent is in the same namespace: a name only if that is ipvland's own.
                        parent = names.get(plink) if netns is None else None
                    elif netns is not None:
                        if not home_nsid_known:
                            home_nsid, home_nsid_known = self._nsid_of_home(netns), True
                        if home_nsid is not None and struct.unpack("i", a[_IFLA_LINK_NETNSID][:4])[0] == home_nsid:
                            parent = self._root_name(plink)
            out.append(ObservedLink(
                netns=netns, index=index, name=name, kind=kind,
                mtu=_u32(a[_IFLA_MTU]) if _IFLA_MTU in a else 0,
                up=bool(ifflags & _IFF_UP),
                mac=_mac(a[_IFLA_ADDRESS]) if a.get(_IFLA_ADDRESS) else None,
                alias=_str(a[_IFLA_IFALIAS]) or None if _IFLA_IFALIAS in a else None,
                parent=parent, mode=mode, flags=flags, sysctls=sysctls,
                permanent_mac=_mac(a[_IFLA_PERM_ADDRESS]) if a.get(_IFLA_PERM_ADDRESS) else None,
            ))
        return out

    def _nsid_of_home(self, netns: str) -> int | None:
        """The id under which `netns` knows ipvland's own namespace (what IFLA_LINK_NETNSID means there)."""
        channel = self._channel(netns)
        if not channel.home_nsid_known:
            channel.home_nsid = self._ask_nsid_of_home(channel)
            # None (no id yet: the kernel gives one when a link first refers across) is asked again
            channel.home_nsid_known = channel.home_nsid is not None
        return channel.home_nsid

    def _ask_nsid_of_home(self, channel: _Channel) -> int | None:
        body = struct.pack("Bxxx", socket.AF_UNSPEC) + struct.pack("HHI", 8, _NETNSA_FD, self._home)
        try:
            for _, data, off in channel.request(_RTM_GETNSID, body, NLM_F_REQUEST):
                a = _attrs(data, off + 4, len(data))
                if _NETNSA_NSID in a:
                    nsid = struct.unpack("i", a[_NETNSA_NSID][:4])[0]
                    return None if nsid < 0 else int(nsid)
        except OSError:
            return None
        return None

    def _root_name(self, index: int) -> str | None:
        if index not in self._root_names:
            self.links(None)  # one dump refreshes the map; a parent is rarely new
        return self._root_names.get(index)

    def addresses(self, netns: str | None) -> list[ObservedAddress]:
        channel, memo = self._decoded(netns, "addresses", "list addresses")
        messages = self._dump(netns, "list addresses", _RTM_GETADDR, struct.pack("BBBBI", 0, 0, 0, 0, 0), channel)
        return memo.decode(None, ((None, d) for d in messages), lambda _, data: _address_of(netns, data))

    def _route_dumps(self, netns: str | None, channel: _Channel, tables: frozenset[int] | None
                     ) -> Iterator[tuple[bool, bytes]]:
        """The route dumps: everything, or (tables given) each of these tables whatever its routes'
        protocol, then ipvland's protocol in every table. Yields (from the protocol dump, message)."""
        if tables is None:
            for data in self._dump(netns, "list routes", _RTM_GETROUTE, struct.pack("BBBBBBBBI", *[0] * 9), channel):
                yield False, data
            return
        with channel.strict():
            for table in sorted(tables):
                body = struct.pack("BBBBBBBBI", 0, 0, 0, 0, table if table < 256 else 252, 0, 0, 0, 0)
                body += _u32_nla(_RTA_TABLE, table)
                for data in self._dump(netns, "list routes", _RTM_GETROUTE, body, channel):
                    yield False, data
            for data in self._dump(netns, "list routes", _RTM_GETROUTE,
                                   struct.pack("BBBBBBBBI", 0, 0, 0, 0, 0, RT_PROTO, 0, 0, 0), channel):
                yield True, data

    def routes(self, netns: str | None, tables: frozenset[int] | None = None) -> list[ObservedRoute]:
        """The namespace's unicast routes through one device. With `tables`: only the routes of those
        tables, and ipvland's own (RT_PROTO) wherever they are, filtered by the kernel: a host with
        100,000 routes of other tools in other tables costs what its few relevant ones cost."""
        names = {index: name for name, index in self._index.get(netns, {}).items()}  # a nexthop's device
        # A multipath route names its nexthops' devices from `names`: never kept, decoded each time
        # (rare), so that a link added or renamed anywhere does not make every other route a miss.
        channel, memo = self._decoded(netns, "routes", "list routes")
        decoded = memo.decode(
            tables, self._route_dumps(netns, channel, tables),
            lambda ours_only, data: _observed_route(netns, data, bool(ours_only), tables, names),
            keep=lambda observed: not observed.route.nexthops)
        out = []
        seen: set[tuple[object, ...]] = set()  # an IPv6 multipath route may come once per sibling
        for observed in decoded:
            route = observed.route
            if route.nexthops:
                if (route.key, route.attrs) in seen:
                    continue
                seen.add((route.key, route.attrs))
            out.append(observed)
        return out

    def neighbors(self, netns: str | None) -> list[ObservedNeighbor]:
        out = []
        for data in self._dump(netns, "list neighbors", _RTM_GETNEIGH, struct.pack("BxxxiHBB", 0, 0, 0, 0, 0)):
            family, index, state = struct.unpack_from("BxxxiH", data, 16)
            if family not in _AF:
                continue
            a = _attrs(data, 28, len(data))
            if _NDA_DST not in a:
                continue
            # Incomplete or failed entries have no lladdr ("" here) but do exist: the planner must
            # see them, or it would send an add that fails with EEXIST instead of a replace.
            lladdr = _mac(a[_NDA_LLADDR]) if a.get(_NDA_LLADDR) else ""
            out.append(ObservedNeighbor(
                netns=netns, ifindex=index,
                neighbor=Neighbor(address=_ip(family, a[_NDA_DST]), lladdr=lladdr),
                permanent=bool(state & _NUD_PERMANENT),
                protocol=a[_NDA_PROTOCOL][0] if _NDA_PROTOCOL in a else None,
            ))
        return out

    # -- writes

    def rules(self, netns: str | None) -> list[ObservedRule]:
        """Every IPv4 and IPv6 rule of the namespace (one dump, family AF_UNSPEC)."""
        out = []
        for data in self._dump(netns, "list rules", _RTM_GETRULE, struct.pack("BBBBBBBBI", *[0] * 9)):
            family, dst_len, src_len, _, table, _, _, action, flags = struct.unpack_from("BBBBBBBBI", data, 16)
            if family not in _AF or action not in _RULE_ACTION_NAMES:
                continue
            a = _attrs(data, 28, len(data))
            # the kernel dumps FRA_FWMARK and FRA_FWMASK whenever either is non-zero (fwmark 0/0xff too)
            mark = _u32(a[_FRA_FWMARK]) if _FRA_FWMARK in a else 0
            mask = _u32(a[_FRA_FWMASK]) if _FRA_FWMASK in a else None
            rule = Rule(
                priority=_u32(a[_FRA_PRIORITY]) if _FRA_PRIORITY in a else 0,
                family=_AF[family], netns=netns,
                src=_network(family, a[_FRA_SRC], src_len) if _FRA_SRC in a else None,
                dst=_network(family, a[_FRA_DST], dst_len) if _FRA_DST in a else None,
                iif=_str(a[_FRA_IIFNAME]) if _FRA_IIFNAME in a else None,
                oif=_str(a[_FRA_OIFNAME]) if _FRA_OIFNAME in a else None,
                fwmark=mark if mark or mask else None,
                fwmask=mask if mark or mask else None,
                table=(_u32(a[_FRA_TABLE]) if _FRA_TABLE in a else table) if _RULE_ACTION_NAMES[action] == "table"
                else None,
                action=_RULE_ACTION_NAMES[action],
                invert=bool(flags & _FIB_RULE_INVERT),
            )
            out.append(ObservedRule(rule, a[_FRA_PROTOCOL][0] if _FRA_PROTOCOL in a else 0))
        return out

    def _rule_request(self, netns: str | None, op: str, msg_type: int, rule: Rule, flags: int) -> None:
        """A rule by all its attributes and ipvland's protocol: a delete then matches only that rule of ours."""
        family = _FAMILY[rule.family]
        table = rule.table or 0
        body = struct.pack("BBBBBBBBI", family, rule.dst.prefixlen if rule.dst else 0,
                           rule.src.prefixlen if rule.src else 0, 0, table if table < 256 else 0, 0, 0,
                           RULE_ACTIONS[rule.action], _FIB_RULE_INVERT if rule.invert else 0)
        body += _u32_nla(_FRA_PRIORITY, rule.priority)
        body += _nla(_FRA_PROTOCOL, struct.pack("B", RT_PROTO))
        if table:
            body += _u32_nla(_FRA_TABLE, table)
        if rule.src is not None:
            body += _nla(_FRA_SRC, rule.src.network_address.packed)
        if rule.dst is not None:
            body += _nla(_FRA_DST, rule.dst.network_address.packed)
        if rule.iif is not None:
            body += _str_nla(_FRA_IIFNAME, rule.iif)
        if rule.oif is not None:
            body += _str_nla(_FRA_OIFNAME, rule.oif)
        if rule.fwmark is not None and (rule.fwmark or rule.fwmask):  # 0/MASK: unmarked packets only
            body += _u32_nla(_FRA_FWMARK, rule.fwmark)
            if rule.fwmask is not None:
                body += _u32_nla(_FRA_FWMASK, rule.fwmask)
        self.writes += 1
        try:
            self._channel(netns).write(msg_type, body, flags)
        except OSError as e:
            raise _kernel_error(op, e) from None

    def add_rule(self, rule: Rule) -> None:
        self._rule_request(rule.netns, f"add {rule.describe()}", _RTM_NEWRULE, rule, NLM_F_CREATE | NLM_F_EXCL)

    def delete_rule(self, rule: Rule) -> None:
        self._rule_request(rule.netns, f"delete {rule.describe()}", _RTM_DELRULE, rule, 0)

    def _write(self, netns: str | None, op: str, msg_type: int, flags: int, body: bytes) -> None:
        """Send one request (its body: the uapi struct and attributes) on the namespace's socket; the
        channel writes the header (length, sequence number). Waits for the ACK unless posting()."""
        self.writes += 1
        try:
            channel = self._channel(netns)
            if self._tag is None:
                channel.write(msg_type, body, flags)
                return
            if self._posting is not channel:
                self._flush_posted()
                self._posting = channel
                self._posted_to[id(channel)] = channel
            channel.post(msg_type, body, flags, (self._tag, op))
        except OSError as e:
            raise _kernel_error(op, e) from None

    def ifindex(self, netns: str | None, name: str) -> int:
        """From the latest links() dump of the namespace when it knows the name, else one lookup."""
        index = self._index.get(netns, {}).get(name)
        if index is not None:
            return index
        body = struct.pack("BxHiII", socket.AF_UNSPEC, 0, 0, 0, 0)
        body += _u32_nla(_IFLA_EXT_MASK, _RTEXT_FILTER_SKIP_STATS)
        body += _str_nla(_IFLA_IFNAME, name)
        try:
            for _, data, off in self._channel(netns).request(_RTM_GETLINK, body, NLM_F_REQUEST):
                index = struct.unpack_from("BxHiII", data, off)[2]
        except OSError as e:
            raise KernelError(f"find link {name}{_where(netns)}", e.errno or 0, e.strerror or "") from None
        if index is None:
            raise KernelError(f"find link {name}{_where(netns)}", errnos.ENODEV, os.strerror(errnos.ENODEV))
        self._index.setdefault(netns, {})[name] = index
        return int(index)

    def _forget_name(self, netns: str | None, name: str) -> None:
        self._index.get(netns, {}).pop(name, None)

    def _link_msg(self, netns: str | None, name: str, attrs: bytes = b"", flags: int = 0, change: int = 0) -> bytes:
        """A changelink of the device `name`: by the ifindex the latest dump gave it, so a device
        renamed or replaced since is not the one changed (the kernel answers ENODEV); by name
        (ifindex 0) only when no dump has shown it yet (just created)."""
        index = self._index.get(netns, {}).get(name)
        if index:
            return _ifinfomsg(index, flags, change) + attrs
        return _ifinfomsg(0, flags, change) + _str_nla(_IFLA_IFNAME, name) + attrs

    def create_ipvlan(self, parent: str, name: str, mode: Mode, flags: Flag, mtu: int | None = None,
                      netns: str | None = None) -> None:
        """Create on `parent` (in ipvland's own namespace), straight into `netns`: one request.

        With IFLA_NET_NS_FD the kernel resolves the parent in the sender's namespace and registers
        the name only in the target one (seen on 6.1). The mode is always sent: a request without
        it means L3 and re-modes every sibling. IFLA_IFALIAS is ignored on create (seen on 6.1):
        see rename_link.
        """
        op = f"create link {name}{_where(netns)}"
        try:
            parent_index = self.ifindex(None, parent)
        except KernelError as e:
            raise KernelError(op, e.errno, f"parent {parent}: {e.message}") from None
        body = (_ifinfomsg() + _str_nla(_IFLA_IFNAME, name) + _u32_nla(_IFLA_LINK, parent_index)
                + _ipvlan_linkinfo(mode, flags))
        if mtu is not None:
            body += _u32_nla(_IFLA_MTU, mtu)
        self._forget_name(netns, name)
        fd = -1
        try:
            if netns is not None:
                try:
                    fd = os.open(os.path.join(NETNS_DIR, netns), os.O_RDONLY | os.O_CLOEXEC)
                except OSError as e:
                    raise KernelError(op, e.errno or 0, f"netns {netns}: {os.strerror(e.errno or 0)}") from None
                body += _u32_nla(_IFLA_NET_NS_FD, fd)
            self._write(None, op, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body)
        finally:
            if fd >= 0:
                os.close(fd)

    def create_veth(self, name: str, peer: str) -> None:
        """A veth pair in ipvland's own namespace (marks.detect's throwaway parent)."""
        peer_info = _nla(_VETH_INFO_PEER | _NLA_F_NESTED, _ifinfomsg() + _str_nla(_IFLA_IFNAME, peer))
        body = _ifinfomsg() + _str_nla(_IFLA_IFNAME, name) + _linkinfo("veth", peer_info)
        self._write(None, f"create veth {name}", RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body)

    def rename_link(self, netns: str | None, old: str, new: str, alias: str | None = None) -> None:
        """Rename, and set the alias in the same request: a device gets its name and owner at once.

        With the alias (a device becoming ipvland's), the same request sets promote_secondaries, so
        that deleting an IPv4 primary never takes its secondaries with it (normalize)."""
        index = self.ifindex(netns, old)
        body = _ifinfomsg(index) + _str_nla(_IFLA_IFNAME, new)
        if alias is not None:
            body += _str_nla(_IFLA_IFALIAS, alias) + _promote_secondaries()
        self._write(netns, f"rename link {old} to {new}{_where(netns)}", RTM_NEWLINK, 0, body)
        self._forget_name(netns, old)
        self._index.setdefault(netns, {})[new] = index

    def delete_link(self, netns: str | None, name: str) -> None:
        self._write(netns, f"delete link {name}{_where(netns)}", RTM_DELLINK, 0, self._link_msg(netns, name))
        self._forget_name(netns, name)

    def set_port_mode(self, netns: str | None, name: str, mode: Mode, flags: Flag) -> None:
        """Changelink of one ipvlan: mode and flags belong to its parent, so every sibling changes."""
        self._write(netns, f"set mode of link {name}{_where(netns)}", RTM_NEWLINK, 0,
                    self._link_msg(netns, name, _ipvlan_linkinfo(mode, flags)))

    def set_mtu(self, netns: str | None, name: str, mtu: int) -> None:
        self._write(netns, f"set mtu of link {name}{_where(netns)}", RTM_NEWLINK, 0,
                    self._link_msg(netns, name, _u32_nla(_IFLA_MTU, mtu)))

    def set_sysctl(self, netns: str | None, name: str, key: str, value: int) -> None:
        """A per-device sysctl of normalize.SYSCTLS: promote_secondaries by netlink (a changelink),
        the IPv6 ones by writing /proc/sys/net in the device's namespace (the kernel takes no IPv6
        devconf over netlink). Both count as writes."""
        op = f"set {key} of link {name}{_where(netns)}"
        if key == normalize.PROMOTE_SECONDARIES and value == 1:
            self._write(netns, op, RTM_NEWLINK, 0, self._link_msg(netns, name, _promote_secondaries()))
            return
        self._write_proc(netns, op, normalize.SYSCTLS[key].proc.format(dev=name), value)

    def _write_proc(self, netns: str | None, op: str, proc: str, value: int) -> None:
        """Write /proc/sys/net/PROC as seen from the namespace (the file is opened inside it)."""
        path = os.path.join(_proc_sys_net(), proc)
        self.writes += 1
        self._flush_posted()  # the device it names may have been posted
        try:
            with entered(netns):
                fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, f"{value}\n".encode())
            finally:
                os.close(fd)
        except OSError as e:
            raise _kernel_error(op, e) from None

    def set_ip_forward(self, netns: str | None, value: int) -> None:
        """net.ipv4.ip_forward of the namespace (every device's forwarding follows, normalize.IP_FORWARD)."""
        self._write_proc(netns, f"set {normalize.IP_FORWARD}{_where(netns)}", normalize.IP_FORWARD_PROC, value)

    def ip_forward(self, netns: str | None) -> int | None:
        """The namespace's IPv4 forwarding: the RTM_GETNETCONF entry of NETCONFA_IFINDEX_ALL (-1)."""
        body = struct.pack("Bxxx", socket.AF_INET) + _nla(_NETCONFA_IFINDEX, struct.pack("i", -1))
        try:
            for _, data, off in self._channel(netns).request(_RTM_GETNETCONF, body, NLM_F_REQUEST):
                a = _attrs(data, off + 4, len(data))
                if _NETCONFA_FORWARDING in a:
                    return int(struct.unpack_from("i", a[_NETCONFA_FORWARDING])[0])
        except OSError as e:
            raise _kernel_error(f"read ip_forward{_where(netns)}", e) from None
        return None

    def set_alias(self, netns: str | None, name: str, alias: str) -> None:
        self._write(netns, f"set alias of link {name}{_where(netns)}", RTM_NEWLINK, 0,
                    self._link_msg(netns, name, _str_nla(_IFLA_IFALIAS, alias)))

    def set_up(self, netns: str | None, name: str, up: bool) -> None:
        self._write(netns, f"set link {name}{_where(netns)} {'up' if up else 'down'}", RTM_NEWLINK, 0,
                    self._link_msg(netns, name, flags=_IFF_UP if up else 0, change=_IFF_UP))

    def _addr_msg(self, netns: str | None, dev: str, iface: IPInterface, peer: IPAddress | None = None) -> bytes:
        """struct ifaddrmsg and the address. IFA_LOCAL is the address, IFA_ADDRESS the peer of a
        point-to-point one (else the address again): the kernel finds an IPv4 address by both."""
        body = struct.pack("BBBBI", _FAMILY[iface.version], iface.network.prefixlen, 0, 0,
                           self.ifindex(netns, dev))
        body += _nla(_IFA_ADDRESS, (peer if peer is not None else iface.ip).packed)
        if iface.version == 4 or peer is not None:
            body += _nla(_IFA_LOCAL, iface.ip.packed)
        return body

    def add_address(self, netns: str | None, dev: str, iface: IPInterface, options: AddressOptions = PLAIN,
                    replace: bool = False) -> None:
        """Add (or, replace, change in place) an address with its flags and preferred lifetime."""
        body = self._addr_msg(netns, dev, iface, options.peer)
        flags = ((normalize.IFA_F_NODAD if options.nodad else 0) | (normalize.IFA_F_HOMEADDRESS if options.home else 0)
                 | (normalize.IFA_F_NOPREFIXROUTE if options.noprefixroute else 0))
        if flags or replace:
            body += _u32_nla(_IFA_FLAGS, flags)
        if options.deprecated or replace:
            forever = normalize.INFINITY_LIFE_TIME
            body += _nla(_IFA_CACHEINFO, struct.pack("4I", 0 if options.deprecated else forever, forever, 0, 0))
        self._write(netns, f"{'replace' if replace else 'add'} address {iface}{options.describe()} dev {dev}"
                    f"{_where(netns)}", RTM_NEWADDR, NLM_F_CREATE | (NLM_F_REPLACE if replace else NLM_F_EXCL),
                    body)

    def delete_address(self, netns: str | None, dev: str, iface: IPInterface, peer: IPAddress | None = None) -> None:
        self._write(netns, f"delete address {iface} dev {dev}{_where(netns)}", RTM_DELADDR, 0,
                    self._addr_msg(netns, dev, iface, peer))

    def _route_msg(self, netns: str | None, dev: str, route: Route, delete: bool = False) -> bytes:
        """struct rtmsg and the route's attributes. A delete names the route by its key, type and
        protocol (scope: any), plus its device and gateway when it has one path."""
        table = route.table if route.table is not None else MAIN_TABLE
        body = struct.pack(
            "BBBBBBBBI", _FAMILY[route.to.version], route.to.prefixlen, 0, 0,
            table if table < 256 else 252,  # RT_TABLE_COMPAT; the real id is in RTA_TABLE
            RT_PROTO,  # also in a delete: the kernel then refuses (ESRCH) one ipvland did not add
            255 if delete else route.effective_scope,  # RT_SCOPE_NOWHERE: any (a delete)
            normalize.ROUTE_TYPES[route.type],
            normalize.RTNH_F_ONLINK if route.onlink and not delete else 0)
        body += _u32_nla(_RTA_TABLE, table)
        if not route.reject and not route.nexthops:
            body += _u32_nla(_RTA_OIF, self.ifindex(netns, dev))
        if route.to.prefixlen:
            body += _nla(_RTA_DST, route.to.network_address.packed)
        if route.via is not None:
            if route.via.version == route.to.version:
                body += _nla(_RTA_GATEWAY, route.via.packed)
            else:  # struct rtvia: the gateway's family, then its address
                body += _nla(_RTA_VIA, struct.pack("H", _FAMILY[route.via.version]) + route.via.packed)
        if route.metric is not None:
            body += _u32_nla(_RTA_PRIORITY, route.metric)
        if delete:
            return body
        if route.src is not None:
            body += _nla(_RTA_PREFSRC, route.src.packed)
        if route.mtu is not None:
            body += _nla(_RTA_METRICS | _NLA_F_NESTED, _u32_nla(_RTAX_MTU, route.mtu))
        if route.nexthops:
            hops = b""
            for hop in route.nexthops:
                gw = b"" if hop.via is None else _nla(_RTA_GATEWAY, hop.via.packed)
                hops += struct.pack("HBBi", 8 + len(gw), 0, hop.weight - 1,
                                    self.ifindex(netns, hop.dev or dev)) + gw
            body += _nla(_RTA_MULTIPATH, hops)
        return body

    def set_route(self, netns: str | None, dev: str, route: Route, replace: bool = False) -> None:
        flags = NLM_F_CREATE | (NLM_F_REPLACE if replace else NLM_F_EXCL)
        self._write(netns, f"{'replace' if replace else 'add'} route {route.describe()}{route_dev(route, dev)}"
                    f"{_where(netns)}", RTM_NEWROUTE, flags, self._route_msg(netns, dev, route))

    def delete_route(self, netns: str | None, dev: str, route: Route) -> None:
        self._write(netns, f"delete route {route.describe()}{route_dev(route, dev)}{_where(netns)}",
                    RTM_DELROUTE, 0, self._route_msg(netns, dev, route, delete=True))

    def _neigh_msg(self, netns: str | None, dev: str, neighbor: Neighbor) -> bytes:
        """struct ndmsg (family, ifindex, state, flags, type), a permanent entry of ipvland's protocol."""
        body = struct.pack("BxxxiHBB", _FAMILY[neighbor.address.version], self.ifindex(netns, dev),
                           _NUD_PERMANENT, 0, 0)
        return (body + _nla(_NDA_DST, neighbor.address.packed)
                + _nla(_NDA_LLADDR, bytes.fromhex(neighbor.lladdr.replace(":", "")))
                + _nla(_NDA_PROTOCOL, struct.pack("B", RT_PROTO)))

    def set_neighbor(self, netns: str | None, dev: str, neighbor: Neighbor, replace: bool = False) -> None:
        flags = NLM_F_CREATE | (NLM_F_REPLACE if replace else NLM_F_EXCL)
        op = f"{'replace' if replace else 'add'} neighbor {neighbor.address} dev {dev}{_where(netns)}"
        self._write(netns, op, RTM_NEWNEIGH, flags, self._neigh_msg(netns, dev, neighbor))

    def delete_neighbor(self, netns: str | None, dev: str, neighbor: Neighbor) -> None:
        self._write(netns, f"delete neighbor {neighbor.address} dev {dev}{_where(netns)}", RTM_DELNEIGH, 0,
                    self._neigh_msg(netns, dev, neighbor))


E = TypeVar("E", Mode, Flag)


def _enum(cls: type[E], value: int) -> E | None:
    try:
        return cls(value)
    except ValueError:
        return None


def _where(netns: str | None) -> str:
    return f" netns {netns}" if netns is not None else ""

