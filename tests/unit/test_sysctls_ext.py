"""Issue 15 item 4: the per-device sysctls beyond accept_ra/autoconf (ipv6: disable_ipv6,
addr_gen_mode; ipv4: rp_filter, arp_ignore, arp_announce, forwarding) in the loader, planner and
`show`. The kernel side is tests/kernel/test_sysctls.py."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
import yaml

from ipvland import spec as spec_mod
from ipvland.model import LinkSysctlSet, Observed
from ipvland.normalize import PROMOTE_SECONDARIES
from ipvland.plan import plan
from ipvland.show import to_document
from tests.unit.test_plan import ipvlan, parent_link
from tests.unit.test_spec import errors_of, write

IF = ipaddress.ip_interface
HEAD = "version: 1\nparents:\n  eth0:\n    mode: l3s\n    devices:\n      web0:\n        netns: web\n"


def test_every_setting_is_read(tmp_path: Path) -> None:
    spec = spec_mod.load(write(tmp_path, HEAD + "        ipv6: {accept_ra: false, disable_ipv6: false, "
                                                "addr_gen_mode: none}\n"
                                                "        ipv4: {rp_filter: 2, arp_ignore: 1, arp_announce: 2, "
                                                "forwarding: true}\n"))
    assert dict(spec.devices[0].sysctls) == {
        "ipv6.accept_ra": 0, "ipv6.disable_ipv6": 0, "ipv6.addr_gen_mode": 1, "ipv4.rp_filter": 2,
        "ipv4.arp_ignore": 1, "ipv4.arp_announce": 2, "ipv4.forwarding": 1}


@pytest.mark.parametrize(("body", "epath", "fragment"), [
    ("        ipv4: {rp_filter: 3}\n", "parents.eth0.devices.web0.ipv4.rp_filter", "must be one of 0, 1, 2"),
    ("        ipv4: {arp_ignore: 4}\n", "parents.eth0.devices.web0.ipv4.arp_ignore", "must be one of 0, 1, 2, 3, 8"),
    ("        ipv4: {promote_secondaries: 0}\n", "parents.eth0.devices.web0.ipv4.promote_secondaries",
     "unknown key"),
    ("        ipv6: {addr_gen_mode: eui48}\n", "parents.eth0.devices.web0.ipv6.addr_gen_mode", "must be one of"),
    ("        ipv6: {disable_ipv6: true}\n        addresses: ['2001:db8::1/64']\n",
     "parents.eth0.devices.web0.addresses[0]", "the kernel keeps no IPv6 address there"),
])
def test_bad_settings(tmp_path: Path, body: str, epath: str, fragment: str) -> None:
    errors = errors_of(write(tmp_path, HEAD + body))
    assert any(e.path == epath and fragment in e.message for e in errors), [str(e) for e in errors]


def test_a_small_mtu_refuses_ipv6_settings_but_not_ipv4_ones(tmp_path: Path) -> None:
    spec = spec_mod.load(write(tmp_path, HEAD + "        mtu: 1000\n        ipv4: {rp_filter: 1}\n"))
    assert spec.devices[0].sysctls == (("ipv4.rp_filter", 1),)
    errors = errors_of(write(tmp_path, HEAD + "        mtu: 1000\n        ipv6: {disable_ipv6: false}\n"))
    assert any("below 1280" in e.message for e in errors)


def _observed(**sysctls: int) -> Observed:
    values = ((PROMOTE_SECONDARIES, 1), *((k.replace("_", ".", 1), v) for k, v in sysctls.items()))
    return Observed(namespaces=frozenset({"web"}), links=(parent_link(), ipvlan("web0", 7, "web", sysctls=values)),
                    scanned=frozenset({None, "web"}))


def _sysctl_changes(p):  # type: ignore[no-untyped-def]
    return [c for c in p.changes if isinstance(c, LinkSysctlSet)]


def test_values_with_several_meanings_compare_exactly_and_flags_by_on_off(tmp_path: Path) -> None:
    spec = spec_mod.load(write(tmp_path, HEAD + "        ipv4: {rp_filter: 1, forwarding: true}\n"))
    drifted = _sysctl_changes(plan(spec, _observed(ipv4_rp_filter=2, ipv4_forwarding=1)))
    assert [c.describe() for c in drifted] == ["~ link web0 netns web ipv4.rp_filter 2 -> 1"]
    assert _sysctl_changes(plan(spec, _observed(ipv4_rp_filter=1, ipv4_forwarding=1))) == []


def test_show_prints_what_differs_from_a_new_namespace_and_round_trips(tmp_path: Path) -> None:
    observed = _observed(ipv6_accept_ra=1, ipv6_autoconf=0, ipv6_disable_ipv6=0, ipv6_addr_gen_mode=3,
                         ipv4_rp_filter=2, ipv4_arp_ignore=0, ipv4_arp_announce=1, ipv4_forwarding=1)
    device = to_document(observed)["parents"]["eth0"]["devices"]["web0"]
    assert device["ipv6"] == {"autoconf": False, "addr_gen_mode": "random"}
    assert device["ipv4"] == {"rp_filter": 2, "arp_announce": 1, "forwarding": True}
    path = tmp_path / "shown.yaml"
    path.write_text(yaml.safe_dump(to_document(observed)))
    assert _sysctl_changes(plan(spec_mod.load(path), observed)) == []


def test_ip_forward_is_the_namespaces_and_said_once(tmp_path: Path) -> None:
    two = HEAD + "        ipv4: {ip_forward: true}\n      web1:\n        netns: web\n"
    spec = spec_mod.load(write(tmp_path, two + "        ipv4: {ip_forward: true}\n"))
    assert [d.ip_forward for d in spec.devices] == [True, True]
    errors = errors_of(write(tmp_path, two + "        ipv4: {ip_forward: false}\n"))
    assert any(e.path == "parents.eth0.devices.web1.ipv4.ip_forward" and "conflicts with ip_forward true at"
               in e.message for e in errors), [str(e) for e in errors]
    errors = errors_of(write(tmp_path, two + "        ipv4: {forwarding: false}\n"))
    assert any("writing ip_forward sets every device's forwarding" in e.message for e in errors)


def test_ip_forward_is_planned_once_per_namespace_and_shown(tmp_path: Path) -> None:
    spec = spec_mod.load(write(tmp_path, HEAD + "        ipv4: {ip_forward: true}\n"))
    observed = _observed(ipv4_forwarding=0)
    p = plan(spec, type(observed)(**{**observed.__dict__, "ip_forward": (("web", 0),)}))
    assert [c.describe() for c in p.changes] == ["~ netns web ipv4.ip_forward 0 -> 1"]
    converged = type(observed)(**{**_observed(ipv4_forwarding=1).__dict__, "ip_forward": (("web", 1),)})
    assert plan(spec, converged).empty
    doc = to_document(converged)
    assert doc["parents"]["eth0"]["devices"]["web0"]["ipv4"] == {"ip_forward": True}  # not also forwarding
    path = tmp_path / "shown.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert plan(spec_mod.load(path), converged).empty
