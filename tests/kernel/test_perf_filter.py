"""Issue 13, on the kernel: route dumps filtered by the kernel (NETLINK_GET_STRICT_CHK).

Kernel.routes(ns, tables) reads the given tables whole (every protocol: a foreign route with the
key of one of ours is a conflict the planner must see) and ipvland's own routes in every table (to
prune them), and nothing else: not the other tools' routes in their own tables.
"""

from __future__ import annotations

import ipaddress
import subprocess
from collections.abc import Iterator

import pytest

from ipvland.kernel import Kernel
from ipvland.model import MAIN_TABLE, RT_PROTO


def ip(*args: str, stdin: str | None = None) -> None:
    done = subprocess.run(["ip", *args], input=stdin, capture_output=True, text=True, check=False)
    assert done.returncode == 0, (args, done.stderr)


@pytest.fixture(scope="module")
def routes() -> Iterator[None]:
    subprocess.run(["ip", "link", "del", "pfv0"], capture_output=True, check=False)
    ip("link", "add", "pfv0", "type", "veth", "peer", "name", "pfv0p")
    ip("link", "set", "pfv0", "up")
    batch = [f"route add 198.19.{i // 250}.{i % 250 + 1}/32 dev pfv0 proto 4 table {100 + i % 3}" for i in range(600)]
    batch += ["route add 198.19.200.1/32 dev pfv0 proto 4",  # foreign, main table: read
              f"route add 198.19.200.2/32 dev pfv0 proto {RT_PROTO}",  # ours, main
              f"route add 198.19.200.3/32 dev pfv0 proto {RT_PROTO} table 5000"]  # ours, a table not asked for
    ip("-batch", "-", stdin="\n".join(batch) + "\n")
    try:
        yield
    finally:
        subprocess.run(["ip", "link", "del", "pfv0"], capture_output=True, check=False)


def dests(rs: list) -> dict[str, tuple[int | None, int]]:  # type: ignore[type-arg]
    return {str(r.route.to): (r.route.table, r.protocol) for r in rs
            if ipaddress.ip_network(r.route.to).subnet_of(ipaddress.ip_network("198.19.0.0/16"))}


def test_filtered_route_dump_reads_the_tables_asked_and_ours_everywhere(routes: None) -> None:
    with Kernel() as k:
        full = dests(k.routes(None))
        assert len(full) == 603  # unfiltered: everything
        got = dests(k.routes(None, frozenset({MAIN_TABLE, 777})))  # 777 does not exist: no error
        assert got == {"198.19.200.1/32": (None, 4), "198.19.200.2/32": (None, RT_PROTO),
                       "198.19.200.3/32": (5000, RT_PROTO)}, got
        got = dests(k.routes(None, frozenset({MAIN_TABLE, 101})))
        assert len(got) == 3 + 200 and got["198.19.0.2/32"] == (101, 4)
        # the socket is lenient again afterwards: a plain dump still sees everything
        assert dests(k.routes(None)) == full
