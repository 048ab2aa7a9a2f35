"""Issue 15 item 5: address options (nodad, noprefixroute, home, preferred_lft 0, peer) in the loader,
the planner (in place where the kernel allows) and `show`, on plain data. The kernel side is
tests/kernel/test_address_options.py."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
import yaml

from ipvland import spec as spec_mod
from ipvland.model import PLAIN, AddressAdd, AddressDelete, AddressOptions, Observed, ObservedAddress
from ipvland.plan import plan
from ipvland.show import to_document
from tests.unit.test_plan import ipvlan, parent_link
from tests.unit.test_spec import errors_of, write

IF = ipaddress.ip_interface
IP = ipaddress.ip_address
HEAD = "version: 1\nparents:\n  eth0:\n    mode: l3s\n    devices:\n      web0:\n        netns: web\n"


def load(tmp_path: Path, *addresses: str) -> spec_mod.Spec:
    body = "".join(f"          - {a}\n" for a in addresses)
    return spec_mod.load(write(tmp_path, HEAD + "        addresses:\n" + body))


def test_the_long_form_is_read_beside_the_short_one(tmp_path: Path) -> None:
    spec = load(tmp_path, "192.0.2.10/24",
                "{address: '2001:db8::10/64', nodad: true, noprefixroute: true, home: true}",
                "{address: 192.0.2.11/24, preferred_lft: 0}",
                "{address: 10.0.0.1/32, peer: 10.0.0.2}",
                "{address: 192.0.2.12/24, preferred_lft: forever}")
    device = spec.devices[0]
    assert device.addresses == (IF("192.0.2.10/24"), IF("2001:db8::10/64"), IF("192.0.2.11/24"), IF("10.0.0.1/32"),
                                IF("192.0.2.12/24"))
    assert device.options(IF("192.0.2.10/24")) == PLAIN == device.options(IF("192.0.2.12/24"))
    assert device.options(IF("2001:db8::10/64")) == AddressOptions(nodad=True, noprefixroute=True, home=True)
    assert device.options(IF("192.0.2.11/24")) == AddressOptions(deprecated=True)
    assert device.options(IF("10.0.0.1/32")) == AddressOptions(peer=IP("10.0.0.2"))


@pytest.mark.parametrize(("address", "epath", "fragment"), [
    ("{address: 192.0.2.10/24, nodad: true}", "addresses[0].nodad", "nodad is for IPv6 addresses only"),
    ("{address: 192.0.2.10/24, home: true}", "addresses[0].home", "home is for IPv6 addresses only"),
    ("{address: 192.0.2.10/24, peer: '2001:db8::1'}", "addresses[0].peer", "not a peer address of the same family"),
    ("{address: 192.0.2.10/24, preferred_lft: 60}", "addresses[0].preferred_lft", "must be one of 0, forever"),
    ("{address: 192.0.2.10}", "addresses[0].address", "needs a prefix length"),
    ("{adress: 192.0.2.10/24}", "addresses[0].adress", "did you mean 'address'"),
])
def test_bad_options(tmp_path: Path, address: str, epath: str, fragment: str) -> None:
    errors = errors_of(write(tmp_path, HEAD + f"        addresses:\n          - {address}\n"))
    full = f"parents.eth0.devices.web0.{epath}"
    assert any(e.path == full and fragment in e.message for e in errors), [str(e) for e in errors]


def test_noprefixroute_lets_the_spec_own_the_prefix_route(tmp_path: Path) -> None:
    route = "        routes: [{to: 192.0.2.0/24}]\n"
    assert errors_of(write(tmp_path, HEAD + "        addresses: [192.0.2.10/24]\n" + route))
    spec = spec_mod.load(write(tmp_path, HEAD + "        addresses: [{address: 192.0.2.10/24, noprefixroute: true}]\n"
                               + route))
    assert spec.devices[0].routes


def _observed(address: str, options: AddressOptions) -> Observed:
    return Observed(namespaces=frozenset({"web"}), links=(parent_link(), ipvlan("web0", 7, "web")),
                    addresses=(ObservedAddress("web", 7, IF(address), options=options),),
                    scanned=frozenset({None, "web"}))


def _address_changes(p):  # type: ignore[no-untyped-def]
    return [c for c in p.changes if isinstance(c, AddressAdd | AddressDelete)]


def test_ipv6_options_change_in_place(tmp_path: Path) -> None:
    spec = load(tmp_path, "{address: '2001:db8::10/64', nodad: true}")
    changes = _address_changes(plan(spec, _observed("2001:db8::10/64", AddressOptions(nodad=True, home=True))))
    assert changes == [AddressAdd("web", "web0", IF("2001:db8::10/64"), AddressOptions(nodad=True), replace=True)]
    assert changes[0].describe() == "~ address 2001:db8::10/64 nodad dev web0 netns web"
    assert _address_changes(plan(spec, _observed("2001:db8::10/64", AddressOptions(nodad=True)))) == []


def test_ipv4_lifetime_changes_in_place_but_flags_and_peer_re_add(tmp_path: Path) -> None:
    spec = load(tmp_path, "{address: 10.0.0.1/32, peer: 10.0.0.3, preferred_lft: 0}")
    wanted = AddressOptions(deprecated=True, peer=IP("10.0.0.3"))
    in_place = _address_changes(plan(spec, _observed("10.0.0.1/32", AddressOptions(peer=IP("10.0.0.3")))))
    assert in_place == [AddressAdd("web", "web0", IF("10.0.0.1/32"), wanted, replace=True)]
    re_added = _address_changes(plan(spec, _observed("10.0.0.1/32", AddressOptions(peer=IP("10.0.0.2")))))
    assert [c.describe() for c in re_added] == [
        "- address 10.0.0.1/32 dev web0 netns web (deprecated, peer changed: re-added)",
        "+ address 10.0.0.1/32 deprecated peer 10.0.0.3 dev web0 netns web"]
    assert re_added[0] == AddressDelete("web", "web0", IF("10.0.0.1/32"), re_added[0].reason, IP("10.0.0.2"))


def test_an_address_leaving_the_spec_is_deleted_by_its_peer(tmp_path: Path) -> None:
    spec = load(tmp_path, "192.0.2.10/24")
    observed = _observed("10.0.0.1/32", AddressOptions(peer=IP("10.0.0.2")))
    deletes = [c for c in plan(spec, observed).changes if isinstance(c, AddressDelete)]
    assert deletes == [AddressDelete("web", "web0", IF("10.0.0.1/32"), peer=IP("10.0.0.2"))]


def test_show_round_trips_options(tmp_path: Path) -> None:
    options = AddressOptions(nodad=True, noprefixroute=True, deprecated=True, peer=IP("2001:db8::2"))
    observed = _observed("2001:db8::1/128", options)
    doc = to_document(observed)
    assert doc["parents"]["eth0"]["devices"]["web0"]["addresses"] == [
        {"address": "2001:db8::1/128", "nodad": True, "noprefixroute": True, "preferred_lft": 0,
         "peer": "2001:db8::2"}]
    path = tmp_path / "shown.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert _address_changes(plan(spec_mod.load(path), observed)) == []
