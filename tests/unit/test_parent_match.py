"""Issue 15 item 6: parents by a stable key (match: mac, permanent_mac, path), resolved at every plan,
on plain data. The kernel side is tests/kernel/test_parent_match.py."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from ipvland import spec as spec_mod
from ipvland.model import LinkCreate, LinkDelete, Observed, ObservedLink, Spec
from ipvland.observe import udev_path
from ipvland.peers import peer_neighbors
from ipvland.plan import iter_lines, plan
from tests.unit.issue15 import assert_error
from tests.unit.test_plan import ipvlan
from tests.unit.test_spec import errors_of, write

MAC = "02:00:00:00:0a:01"
HEAD = "version: 1\nparents:\n  nic1:\n"


def spec(tmp_path: Path, match: str) -> Spec:
    return spec_mod.load(write(tmp_path, HEAD + f"    match: {match}\n    mode: l3s\n    devices:\n"
                                                "      web0: {netns: web, addresses: [192.0.2.10/24]}\n"))


def nic(name: str, index: int, mac: str = MAC, permanent: str | None = None, path: str | None = None) -> ObservedLink:
    return ObservedLink(None, index, name, None, 1500, True, mac, permanent_mac=permanent, path=path)


def test_match_is_read(tmp_path: Path) -> None:
    s = spec(tmp_path, f'{{mac: "{MAC}", permanent_mac: "02-00-00-00-0B-01", path: pci-0000:3b:00.0}}')
    m = s.parents[0].match
    assert m is not None and (m.mac, m.permanent_mac, m.path) == (MAC, "02:00:00:00:0b:01", "pci-0000:3b:00.0")


@pytest.mark.parametrize(("match", "epath", "fragment"), [
    ("{}", "parents.nic1.match", "needs at least one of mac, path, permanent_mac"),
    ("{mac: '01:00:5e:00:00:01'}", "parents.nic1.match.mac", "multicast"),
    ("{name: eth0}", "parents.nic1.match.name", "unknown key 'name'"),
])
def test_bad_match(tmp_path: Path, match: str, epath: str, fragment: str) -> None:
    assert_error(write(tmp_path, HEAD + f"    match: {match}\n"), epath, fragment)


def test_two_files_that_match_one_parent_differently_name_both(tmp_path: Path) -> None:
    p = write(tmp_path, HEAD + f'    match: {{mac: "{MAC}"}}\n',
              other__yaml='version: 1\nparents:\n  nic1:\n    match: {path: pci-0000:3b:00.0}\n')
    assert any("conflicts with the match at" in e.message and f"{p}:4:12" in e.message for e in errors_of(p))


def test_the_one_nic_that_matches_is_the_parent(tmp_path: Path) -> None:
    s = spec(tmp_path, f'{{permanent_mac: "{MAC}"}}')
    p = plan(s, Observed(links=(nic("eth7", 3, "02:00:00:00:ff:ff", permanent=MAC), nic("eth8", 4))))
    creates = [c for c in p.changes if isinstance(c, LinkCreate)]
    assert [c.spec.parent for c in creates] == ["eth7"]
    assert next(iter_lines(p)) == "= parent nic1 is eth7"
    assert p.resolved == (("nic1", "eth7"),)


def test_no_match_is_pending_and_keeps_the_devices(tmp_path: Path) -> None:
    s = spec(tmp_path, f'{{mac: "{MAC}"}}')
    observed = Observed(namespaces=frozenset({"web"}),
                        links=(nic("eth7", 3, "02:00:00:00:ff:ff"), ipvlan("web0", 9, "web", parent="eth7")),
                        scanned=frozenset({None, "web"}))
    p = plan(s, observed)
    assert not [c for c in p.changes if isinstance(c, LinkDelete)]
    assert p.pending[0].describe().startswith(f"! parent nic1: no NIC matches mac {MAC}; 1 device(s) wait for it")


def test_two_matches_or_a_taken_nic_are_errors_for_that_parent(tmp_path: Path) -> None:
    s = spec(tmp_path, f'{{mac: "{MAC}"}}')
    p = plan(s, Observed(links=(nic("eth7", 3), nic("bond0", 4))))
    assert not p.changes
    assert p.conflicts[0].message.startswith(f"mac {MAC} matches 2 NICs (bond0, eth7); make the match say one")
    both = spec_mod.load(write(tmp_path, HEAD + f'    match: {{mac: "{MAC}"}}\n  eth7: {{}}\n'))
    p = plan(both, Observed(links=(nic("eth7", 3),)))
    assert "matches eth7, which another parent of the spec is already" in p.conflicts[0].message


def test_path_comes_from_the_udev_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "n3").write_text("I:12345\nE:ID_NET_NAME_PATH=enp59s0\nE:ID_PATH=pci-0000:3b:00.0\n")
    monkeypatch.setattr("ipvland.observe.UDEV_DATA", str(tmp_path))
    assert udev_path(3) == "pci-0000:3b:00.0"
    assert udev_path(4) is None


def test_peers_use_the_matched_mac(tmp_path: Path) -> None:
    s = spec(tmp_path, f'{{mac: "{MAC}"}}')
    entries, problems = peer_neighbors(s, {})
    assert [(str(n.address), n.lladdr) for n in entries] == [("192.0.2.10", MAC)] and not problems
    assert ipaddress.ip_address("192.0.2.10") == entries[0].address
