"""Address options on a real kernel (issue 15 item 5), on an l2 ipvlan (DAD runs there): set, read
back by iproute2, changed in place where the kernel allows (IPv6 flags and peer, the preferred
lifetime), re-added where it does not (an IPv4 peer), converged to zero writes."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from iproute import converge, ipj
from wire import wired_lab

from ipvland import spec as spec_mod
from ipvland.model import AddressAdd, AddressDelete

CONFIG = """\
version: 1
parents:
  lab0:
    mode: l2
    devices:
      d0:
        netns: ad
        addresses:
          - {{address: "2001:db8::10/64", nodad: true, noprefixroute: {npr}}}
          - {{address: 192.0.2.10/24, preferred_lft: {lft}}}
          - {{address: 10.0.0.1/32, peer: {peer}}}
          - {{address: "2001:db8:1::1/128", nodad: true, peer: "{peer6}"}}
"""
FIRST = {"npr": "true", "lft": 0, "peer": "10.0.0.2", "peer6": "2001:db8:1::2"}
SECOND = {"npr": "false", "lft": "forever", "peer": "10.0.0.3", "peer6": "2001:db8:1::3"}


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield from wired_lab(tmp_path_factory, "address-options")


def apply(tmp: Path, values: dict[str, Any]) -> Any:
    path = tmp / "config.yaml"
    path.write_text(textwrap.dedent(CONFIG.format(**values)))
    return converge(spec_mod.load(path))


def addresses() -> dict[str, dict[str, Any]]:
    entry = ipj("addr", "show", "dev", "d0", netns="ad")[0]
    return {a["local"]: a for a in entry["addr_info"] if a.get("scope") != "link"}


def routes6() -> set[str]:
    return {r["dst"] for r in ipj("-6", "route", "show", "dev", "d0", netns="ad")}


def test_options_are_set_and_read_back(lab: Path) -> None:
    apply(lab, FIRST)
    got = addresses()
    v6 = got["2001:db8::10"]
    assert v6.get("nodad") and v6.get("noprefixroute") and not v6.get("tentative"), v6
    assert "2001:db8::/64" not in routes6()
    assert got["192.0.2.10"].get("deprecated"), got["192.0.2.10"]
    assert got["10.0.0.1"]["address"] == "10.0.0.2", got["10.0.0.1"]
    assert got["2001:db8:1::1"]["address"] == "2001:db8:1::2", got["2001:db8:1::1"]


def test_changes_in_place_where_the_kernel_allows(lab: Path) -> None:
    report = apply(lab, SECOND)
    lines = [c.describe() for c in report.plan.changes]
    replaced = {str(c.address) for c in report.plan.changes if isinstance(c, AddressAdd) and c.replace}
    deleted = {str(c.address) for c in report.plan.changes if isinstance(c, AddressDelete)}
    assert replaced == {"2001:db8::10/64", "192.0.2.10/24", "2001:db8:1::1/128"}, lines
    assert deleted == {"10.0.0.1/32"}, lines  # an IPv4 peer is part of what finds the address
    got = addresses()
    assert not got["2001:db8::10"].get("noprefixroute") and "2001:db8::/64" in routes6()
    assert not got["192.0.2.10"].get("deprecated")
    assert got["10.0.0.1"]["address"] == "10.0.0.3"
    assert got["2001:db8:1::1"]["address"] == "2001:db8:1::3"
