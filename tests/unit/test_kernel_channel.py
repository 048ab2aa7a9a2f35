"""kernel._Channel's own logic, on canned datagrams: how it reads answers, not what the kernel does.

What the kernel sends is tested on the kernel (tests/kernel); these pin the parsing rules that a
kernel test cannot trigger on demand: a dump interrupted by a concurrent change (the kernel refuses
a new dump, EBUSY, while one is not read to its end: seen on a real kernel in review), an error's
extended ACK after a capped echo, late answers to an abandoned request.
"""

from __future__ import annotations

import errno
import struct

import pytest

from ipvland.kernel import _Channel

NLMSG_ERROR, NLMSG_DONE, RTM_NEWLINK = 2, 3, 16
DUMP_INTR, CAPPED, ACK_TLVS = 0x10, 0x100, 0x200


def msg(mtype: int, seq: int, payload: bytes = b"", flags: int = 0) -> bytes:
    body = payload + bytes(-len(payload) % 4)
    return struct.pack("IHHII", 16 + len(payload), mtype, flags, seq, 0) + body


def error(seq: int, code: int, text: str = "") -> bytes:
    echoed = struct.pack("IHHII", 32, RTM_NEWLINK, 5, seq, 0)  # capped: the request's header only
    tlv = b""
    if text:
        raw = text.encode() + b"\0"
        tlv = struct.pack("HH", 4 + len(raw), 1) + raw + bytes(-len(raw) % 4)
    return msg(NLMSG_ERROR, seq, struct.pack("i", -code) + echoed + tlv, CAPPED | (ACK_TLVS if text else 0))


class FakeSocket:
    def __init__(self, *rounds: list[bytes]) -> None:
        self.rounds = list(rounds)  # per request sent: the datagrams answering it
        self.sent: list[bytes] = []
        self.queue: list[bytes] = []

    def send(self, data: bytes) -> int:
        self.sent.append(data)
        if self.queue:  # as the kernel does while a dump on this socket is not read to its end
            self.queue.append(error(struct.unpack_from("I", data, 8)[0], errno.EBUSY))
            return len(data)
        self.queue.extend(self.rounds.pop(0))
        return len(data)

    def recv(self, _size: int) -> bytes:
        return self.queue.pop(0)

    def close(self) -> None:
        pass


def test_an_interrupted_dump_is_read_to_its_end_then_taken_again() -> None:
    sock = FakeSocket(
        [msg(RTM_NEWLINK, 1, b"old1") + msg(RTM_NEWLINK, 1, b"old2", DUMP_INTR),
         msg(NLMSG_DONE, 1, b"\0" * 4, DUMP_INTR)],
        [msg(RTM_NEWLINK, 2, b"new1"), msg(NLMSG_DONE, 2, b"\0" * 4)],
    )
    got = _Channel(sock).dump(18, b"")  # type: ignore[arg-type]
    assert len(sock.sent) == 2  # the second request went out only after the first dump's DONE
    assert [d[16:20] for d in got] == [b"new1"]


def test_a_refusal_carries_the_extended_ack_after_a_capped_echo() -> None:
    sock = FakeSocket([error(1, errno.EADDRINUSE, "Address already assigned to an ipvlan device")])
    with pytest.raises(OSError) as e:
        _Channel(sock).write(RTM_NEWLINK, b"\0" * 16, 0)  # type: ignore[arg-type]
    assert e.value.errno == errno.EADDRINUSE
    assert e.value.strerror == "Address already in use: Address already assigned to an ipvlan device"


def test_late_answers_to_an_abandoned_request_are_skipped() -> None:
    # seq 1 was abandoned (an exception mid-dump); its leftovers arrive before seq 2's ACK.
    sock = FakeSocket([msg(RTM_NEWLINK, 1, b"late"), msg(NLMSG_DONE, 1, b"\0" * 4) + error(2, 0)])
    channel = _Channel(sock)  # type: ignore[arg-type]
    channel.seq = 1
    channel.write(RTM_NEWLINK, b"\0" * 16, 0)  # returns on seq 2's ACK, nothing raised
    assert sock.queue == []
