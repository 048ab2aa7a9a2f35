"""kernel._Decoded, the memo of decoded dump messages (issue 13), with plain bytes: what it keeps,
what it forgets, and that a failed dump leaves it as it was. On the kernel: tests/kernel/test_decode_memo.py."""

from __future__ import annotations

import struct
from collections.abc import Iterator

import pytest

from ipvland.kernel import _Decoded


def message(seq: int, body: bytes) -> bytes:
    return struct.pack("IHHII", 16 + len(body), 24, 2, seq, 0) + body


class Counting:
    def __init__(self) -> None:
        self.calls: list[bytes] = []

    def __call__(self, salt: object, data: bytes) -> str | None:
        self.calls.append(data[16:])
        return None if data[16:] == b"skip" else f"{salt}:{data[16:].decode()}"


def test_the_same_message_under_another_header_is_decoded_once() -> None:
    memo: _Decoded[str] = _Decoded()
    fn = Counting()
    assert memo.decode("ctx", [(1, message(1, b"a")), (1, message(2, b"skip"))], fn) == ["1:a"]
    assert memo.decode("ctx", [(1, message(7, b"a")), (1, message(8, b"skip"))], fn) == ["1:a"]
    assert fn.calls == [b"a", b"skip"]  # the None of a skipped message is remembered too


def test_the_salt_and_the_context_are_part_of_what_a_decoder_read() -> None:
    memo: _Decoded[str] = _Decoded()
    fn = Counting()
    memo.decode("ctx", [(1, message(1, b"a"))], fn)
    assert memo.decode("ctx", [(2, message(2, b"a"))], fn) == ["2:a"]  # another dump: decoded
    assert memo.decode("other", [(2, message(3, b"a"))], fn) == ["2:a"]  # another context: decoded
    assert fn.calls == [b"a", b"a", b"a"]


def test_only_the_last_dump_is_kept() -> None:
    memo: _Decoded[str] = _Decoded()
    fn = Counting()
    memo.decode(None, [(0, message(1, b"a")), (0, message(2, b"b"))], fn)
    memo.decode(None, [(0, message(3, b"b"))], fn)
    assert list(memo.memo) == [(0, b"b")]
    memo.decode(None, [(0, message(4, b"a"))], fn)
    assert fn.calls == [b"a", b"b", b"a"]


def test_a_dump_that_fails_half_way_leaves_the_memo_as_it_was() -> None:
    memo: _Decoded[str] = _Decoded()
    fn = Counting()
    memo.decode(None, [(0, message(1, b"a"))], fn)

    def failing() -> Iterator[tuple[object, bytes]]:
        yield 0, message(2, b"c")
        raise OSError(105, "No buffer space available")

    with pytest.raises(OSError):
        memo.decode(None, failing(), fn)
    assert list(memo.memo) == [(0, b"a")]


def test_a_result_that_reads_more_than_the_message_is_decoded_every_time() -> None:
    memo: _Decoded[str] = _Decoded()
    fn = Counting()
    for seq in (1, 2):
        assert memo.decode(None, [(0, message(seq, b"multi")), (0, message(seq, b"one"))], fn,
                           keep=lambda got: "multi" not in got) == ["0:multi", "0:one"]
    assert fn.calls == [b"multi", b"one", b"multi"]


def test_a_dump_too_big_to_keep_is_decoded_every_time(monkeypatch: pytest.MonkeyPatch) -> None:
    from ipvland import kernel

    monkeypatch.setattr(kernel, "_MEMO_LIMIT", 2)
    memo: _Decoded[str] = _Decoded()
    fn = Counting()
    big = [(0, message(1, bytes([65 + i]))) for i in range(3)]
    memo.decode(None, big, fn)
    assert memo.memo == {}
    memo.decode(None, big, fn)
    assert len(fn.calls) == 6
