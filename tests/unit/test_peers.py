import ipaddress

import yaml

from ipvland.model import Device, Mode, Parent, Spec
from ipvland.peers import as_document, as_ip_commands, peer_neighbors

IF = ipaddress.ip_interface
MAC = "02:11:22:33:44:55"


def spec() -> Spec:
    return Spec(1, (
        Parent("eth0", Mode.L3S,
               devices=(Device("web0", "eth0", "web", (IF("192.0.2.10/24"), IF("2001:db8::10/64"))),)),
        Parent("eth1", Mode.L2, devices=(Device("l2dev", "eth1", addresses=(IF("198.51.100.5/24"),)),)),
        Parent("eth2", Mode.L3, devices=(Device("x0", "eth2", addresses=(IF("203.0.113.9/24"),)),)),
    ))


def test_only_l3_and_l3s_addresses_with_the_live_parent_mac() -> None:
    entries, problems = peer_neighbors(spec(), {"eth0": MAC, "eth1": "02:00:00:00:00:01"})
    assert [str(n.address) for n in entries] == ["192.0.2.10", "2001:db8::10"]
    assert {n.lladdr for n in entries} == {MAC}
    assert problems == ["parent eth2: not found, its MAC address is unknown"]


def test_ip_lines_and_yaml_fragment() -> None:
    entries, _ = peer_neighbors(spec(), {"eth0": MAC, "eth2": MAC})
    lines = as_ip_commands(entries, "ens3").splitlines()
    assert lines[0] == f"ip neigh replace 192.0.2.10 lladdr {MAC} dev ens3 nud permanent"
    assert len(lines) == 3
    doc = yaml.safe_load(yaml.safe_dump(as_document(entries, "ens3")))
    assert doc["version"] == 1
    assert doc["parents"]["ens3"]["neighbors"][2] == {"address": "203.0.113.9", "lladdr": MAC}
