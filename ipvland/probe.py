"""Connectivity probes: ICMP echo from a namespace to a target, without forking `ping`.

A raw ICMP socket is opened inside the probe's namespace (setns on this thread, socket, setns
back): a socket stays bound to the namespace it was created in. Needs CAP_NET_RAW.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import struct
import time
from dataclasses import dataclass

from ipvland.model import Probe
from ipvland.netns import entered

_ECHO_REQUEST = {4: 8, 6: 128}
_ECHO_REPLY = {4: 0, 6: 129}
_SEND_RETRY = 0.1  # seconds between sends that failed


@dataclass(frozen=True)
class ProbeResult:
    probe: Probe
    ok: bool
    tries: int  # how many echo requests were sent
    rtt_ms: float | None = None
    error: str | None = None

    def describe(self) -> str:
        where = f"netns {self.probe.netns}" if self.probe.netns else "host"
        head = f"probe {where} -> {self.probe.target}"
        if self.ok:
            return f"{head}: ok ({self.rtt_ms:.1f} ms, try {self.tries}/{self.probe.tries})"
        return f"{head}: FAILED after {self.tries} tries: {self.error or 'no reply'}"


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return int(~total & 0xFFFF)


def _echo(version: int, ident: int, seq: int) -> bytes:
    payload = b"ipvland-probe"
    header = struct.pack("!BBHHH", _ECHO_REQUEST[version], 0, 0, ident, seq)
    if version == 6:  # the kernel fills in the ICMPv6 checksum (it needs the pseudo-header)
        return header + payload
    return struct.pack("!BBHHH", 8, 0, _checksum(header + payload), ident, seq) + payload


def _is_reply(version: int, packet: bytes, ident: int, seq: int) -> bool:
    if version == 4:  # a raw IPv4 socket hands us the IP header too
        packet = packet[(packet[0] & 0x0F) * 4:] if packet else packet
    if len(packet) < 8:
        return False
    kind, _code, _sum, got_ident, got_seq = struct.unpack("!BBHHH", packet[:8])
    return bool(kind == _ECHO_REPLY[version] and got_ident == ident and got_seq == seq)


def run_probe(probe: Probe) -> ProbeResult:
    version = probe.target.version
    family = socket.AF_INET if version == 4 else socket.AF_INET6
    proto = socket.IPPROTO_ICMP if version == 4 else socket.IPPROTO_ICMPV6
    try:
        with entered(probe.netns):
            sock = socket.socket(family, socket.SOCK_RAW, proto)
    except OSError as e:
        hint = ""
        if e.errno in (errno.EAFNOSUPPORT, errno.EPERM, errno.EACCES):
            hint = " (needs CAP_NET_RAW; under systemd install systemd/ipvland-probes.conf)"
        return ProbeResult(probe, False, 0, error=f"cannot open an ICMP socket: {e.strerror or e}{hint}")
    ident = (os.getpid() ^ id(probe)) & 0xFFFF
    last = "no reply"
    # The probe's budget is tries x timeout. A send that fails (no usable source address while a new
    # IPv6 address is tentative, ~1-2 s of DAD; no route yet) uses time, not a try: it is retried
    # until the budget is spent, so a probe right after an apply waits for DAD instead of failing.
    budget_end = time.monotonic() + probe.tries * probe.timeout
    sent_count = 0
    with sock:
        while sent_count < probe.tries and (left := budget_end - time.monotonic()) > 0:
            sent = time.monotonic()
            try:
                sock.sendto(_echo(version, ident, sent_count + 1), (str(probe.target), 0))
            except OSError as e:
                last = e.strerror or str(e)
                time.sleep(min(_SEND_RETRY, left))
                continue
            sent_count += 1
            deadline = sent + probe.timeout
            while (left := deadline - time.monotonic()) > 0:
                # poll, not select: with a socket per namespace, this fd can be above 1023
                poller = select.poll()
                poller.register(sock, select.POLLIN)
                if not poller.poll(left * 1000):
                    break
                packet, _addr = sock.recvfrom(2048)
                if _is_reply(version, packet, ident, sent_count):
                    return ProbeResult(probe, True, sent_count, (time.monotonic() - sent) * 1000)
            last = "no reply"
    return ProbeResult(probe, False, sent_count, error=last)


def run_probes(probes: tuple[Probe, ...]) -> tuple[ProbeResult, ...]:
    return tuple(run_probe(p) for p in probes)
