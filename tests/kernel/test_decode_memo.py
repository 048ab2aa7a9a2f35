"""Issue 13, on the kernel: a message decoded once is not decoded again (kernel._Decoded), and the
memo never hides a change.

The same object comes back for a message the kernel sends again unchanged (only the netlink header's
sequence number differs between dumps); a change made by hand shows at the next dump; and a multipath
route, whose message stays the same when its nexthop's device is renamed (it names the ifindex), is
never kept, so it shows the new name.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from ipvland.kernel import Kernel


def ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    assert done.returncode == 0, (args, done.stderr)


@pytest.fixture
def veths() -> Iterator[None]:
    for dev in ("dmv0", "dmv1", "dmvx"):
        subprocess.run(["ip", "link", "del", dev], capture_output=True, check=False)
    ip("link", "add", "dmv0", "type", "veth", "peer", "name", "dmv0p")
    ip("link", "add", "dmv1", "type", "veth", "peer", "name", "dmv1p")
    for dev in ("dmv0", "dmv0p", "dmv1", "dmv1p"):
        ip("link", "set", dev, "up")
    ip("addr", "add", "198.18.90.1/24", "dev", "dmv0")
    ip("addr", "add", "198.18.91.1/24", "dev", "dmv1")
    ip("route", "add", "198.18.92.0/24", "nexthop", "via", "198.18.90.2", "dev", "dmv0",
       "nexthop", "via", "198.18.91.2", "dev", "dmv1")
    try:
        yield
    finally:
        for dev in ("dmv0", "dmv1", "dmvx"):
            subprocess.run(["ip", "link", "del", dev], capture_output=True, check=False)


def _address(k: Kernel, text: str):  # type: ignore[no-untyped-def]
    return next(a for a in k.addresses(None) if str(a.address) == text)


def _route(k: Kernel, to: str):  # type: ignore[no-untyped-def]
    return next(r for r in k.routes(None) if str(r.route.to) == to)


def test_an_unchanged_message_is_not_decoded_again(veths: None) -> None:
    with Kernel() as k:
        k.links(None)
        first, again = _address(k, "198.18.90.1/24"), _address(k, "198.18.90.1/24")
        assert again is first  # the memo's object: decoded once
        r1, r2 = _route(k, "198.18.90.0/24"), _route(k, "198.18.90.0/24")  # the prefix route
        assert r2 is r1


def test_a_change_by_hand_shows_at_the_next_dump(veths: None) -> None:
    with Kernel() as k:
        k.links(None)
        before = _address(k, "198.18.90.1/24")
        assert not before.dynamic
        ip("addr", "change", "198.18.90.1/24", "dev", "dmv0", "valid_lft", "600", "preferred_lft", "600")
        after = _address(k, "198.18.90.1/24")
        assert after.dynamic and after is not before
        ip("route", "replace", "198.18.92.0/24", "via", "198.18.90.3", "dev", "dmv0")
        route = _route(k, "198.18.92.0/24")
        assert str(route.route.via) == "198.18.90.3" and not route.route.nexthops


def test_a_renamed_nexthop_device_shows_its_new_name(veths: None) -> None:
    with Kernel() as k:
        k.links(None)
        hops = {h.dev for h in _route(k, "198.18.92.0/24").route.nexthops}
        assert hops == {"dmv0", "dmv1"}
        # a multipath route reads the names: never kept, decoded at every dump; the others are kept
        assert not _kept(k, "198.18.92.0/24") and _kept(k, "198.18.90.0/24")
        # the route's message stays byte for byte the same (it names the ifindex), the name changes
        ip("link", "set", "dmv1", "down")
        ip("link", "set", "dmv1", "name", "dmvx")
        ip("link", "set", "dmvx", "up")
        k.links(None)  # the namespace's names, as observe reads them before the routes
        route = _route(k, "198.18.92.0/24")
        assert {h.dev for h in route.route.nexthops} == {"dmv0", "dmvx"}


def _kept(k: Kernel, to: str) -> bool:
    memo = k._channels[None][1].decoded["routes"].memo
    return any(r is not None and str(r.route.to) == to for r in memo.values())
