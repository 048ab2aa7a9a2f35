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

    def recv_into(self, buf: bytearray) -> int:
        data = self.queue.pop(0)
        buf[: len(data)] = data
        return len(data)

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


# ---------------------------------------------------------------- posted (pipelined) writes


def test_posted_writes_go_out_together_and_only_refusals_come_back_by_tag() -> None:
    # Three writes posted (seq 1-3), the kernel refuses seq 2; settle's barrier (seq 4) is ACKed last.
    sock = FakeSocket([], [error(2, errno.EEXIST, "exists") + error(4, 0)])
    channel = _Channel(sock)  # type: ignore[arg-type]
    for i in range(3):
        channel.post(RTM_NEWLINK, b"\0" * 16, 0, (i, f"write {i}"))
    assert sock.sent == []  # nothing sent yet
    channel.flush()
    assert len(sock.sent) == 1 and len(sock.sent[0]) == 3 * 32  # one sendmsg, three requests
    flags = [struct.unpack_from("H", sock.sent[0], 32 * i + 6)[0] for i in range(3)]
    assert flags == [1, 1, 1]  # NLM_F_REQUEST, no NLM_F_ACK: a write that is done answers nothing
    refused = channel.settle()
    assert [(tag, e.errno) for tag, e in refused] == [((1, "write 1"), errno.EEXIST)]
    assert struct.unpack_from("HH", sock.sent[1], 4) == (1, 5)  # NLMSG_NOOP, NLM_F_REQUEST | NLM_F_ACK
    assert channel.posted == {} and channel.settle() == []


def test_a_refusal_of_a_posted_write_read_during_another_request_is_kept_for_settle() -> None:
    flushed: list[int] = []
    sock = FakeSocket([], [error(1, errno.ENETUNREACH) + msg(RTM_NEWLINK, 2, b"link") + error(2, 0)],
                      [error(3, 0)])
    channel = _Channel(sock, lambda: flushed.append(1))  # type: ignore[arg-type]
    channel.post(24, b"\0" * 12, 0, (7, "add route"))
    got = list(channel.request(18, b"", 1 | 4))  # a lookup: the posted write goes out first, alone
    assert flushed == [1] and len(sock.sent) == 2 and [d[16:20] for _, d, _ in got] == [b"link"]
    assert [(tag, e.errno) for tag, e in channel.settle()] == [((7, "add route"), errno.ENETUNREACH)]


def test_posted_writes_are_drained_every_window_so_refusals_never_fill_the_socket() -> None:
    # Review of issue 13: 700 refusals queued on a default host filled the receive queue; the kernel
    # then dropped every answer, and the next request waited forever.
    from ipvland.kernel import _POST_WINDOW

    sock = FakeSocket([], [error(3, errno.ENODEV) + error(_POST_WINDOW + 1, 0)], [], [error(_POST_WINDOW + 3, 0)])
    channel = _Channel(sock)  # type: ignore[arg-type]
    for i in range(_POST_WINDOW + 1):
        channel.post(RTM_NEWLINK, b"\0" * 16, 0, (i, f"write {i}"))
    # the window's writes went out, then a barrier, before the next write was queued
    assert len(sock.sent) == 2 and struct.unpack_from("H", sock.sent[1], 4)[0] == 1  # NLMSG_NOOP
    assert channel.posted == {_POST_WINDOW + 2: (_POST_WINDOW, f"write {_POST_WINDOW}")}
    assert [tag for tag, _ in channel.settle()] == [(2, "write 2")]


class FailingSocket(FakeSocket):
    def __init__(self, send_error: int | None, recv_error: int | None) -> None:
        super().__init__([])
        self.send_error, self.recv_error = send_error, recv_error

    def send(self, data: bytes) -> int:
        if self.send_error is not None:
            raise OSError(self.send_error, "refused as a whole")
        self.sent.append(data)
        return len(data)

    def recv_into(self, _buf: bytearray) -> int:
        raise OSError(self.recv_error, "no buffer space")


def test_a_send_refused_as_a_whole_refuses_each_write_in_it() -> None:
    channel = _Channel(FailingSocket(errno.EACCES, None))  # type: ignore[arg-type]
    for i in range(3):
        channel.post(RTM_NEWLINK, b"\0" * 16, 0, (i, f"write {i}"))
    refused = channel.settle()
    assert [(tag, e.errno) for tag, e in refused] == [((i, f"write {i}"), errno.EACCES) for i in range(3)]
    assert channel.posted == {} and channel.settle() == []


def test_a_lost_answer_is_said_to_be_lost_not_assumed_done_and_nothing_carries_over() -> None:
    channel = _Channel(FailingSocket(None, errno.ENOBUFS))  # type: ignore[arg-type]
    channel.post(RTM_NEWLINK, b"\0" * 16, 0, (0, "write 0"))
    refused = channel.settle()
    assert [(tag, e.errno) for tag, e in refused] == [((0, "write 0"), errno.ENOBUFS)]
    assert "answer was lost" in str(refused[0][1])
    assert channel.settle() == [] and channel.refused == [] and channel.posted == {}


class CountingChannel:
    """Stands in for a namespace's _Channel: counts what Kernel.settle asks of it."""

    def __init__(self) -> None:
        self.posts = self.settles = self.flushes = 0

    def post(self, msg_type: int, body: bytes, flags: int, tag: object) -> None:
        self.posts += 1

    def flush(self) -> None:
        self.flushes += 1

    def settle(self) -> list[object]:
        self.settles += 1
        return []

    def close(self) -> None:
        pass


def test_settle_reads_only_the_sockets_posted_to() -> None:
    """Regression (issue 13): settle() drained every namespace's socket, 1000 of them after a repair
    that wrote to one (0.15 s of each repair turn at 1000 namespaces under emulation)."""
    from ipvland.kernel import Kernel

    with Kernel() as k:
        channels = {f"bn{i}": CountingChannel() for i in range(1000)}
        k._channels.update({name: ((0, i), c) for i, (name, c) in enumerate(channels.items())})  # type: ignore[misc]
        k._channel = lambda netns: channels[netns]  # type: ignore[assignment,method-assign,index]
        with k.posting(1):
            k._write("bn5", "write a", RTM_NEWLINK, 0, b"\0" * 16)
            k._write("bn7", "write b", RTM_NEWLINK, 0, b"\0" * 16)
            k._write("bn5", "write c", RTM_NEWLINK, 0, b"\0" * 16)
        assert k.settle() == []
        settled = {name for name, c in channels.items() if c.settles}
        assert settled == {"bn5", "bn7"} and channels["bn5"].settles == 1
        assert channels["bn5"].posts == 2 and channels["bn5"].flushes >= 1  # sent before bn7's
        assert k.settle() == [] and sum(c.settles for c in channels.values()) == 2  # nothing posted since
        k._channels.clear()
