"""What a remote peer must configure to reach l3/l3s ipvlans (pure).

In L3 and L3S modes an ipvlan answers no ARP/NDP: a peer on the wire needs a permanent neighbor
entry per ipvlan address, pointing at the parent's MAC (every ipvlan shares it). This replaces the
manual, error-prone step of the IPVLAN procedure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ipvland.model import Mode, Neighbor, Spec


def peer_neighbors(spec: Spec, parent_macs: Mapping[str, str]) -> tuple[list[Neighbor], list[str]]:
    """The neighbor entries a peer needs, and a message per parent whose MAC is unknown."""
    entries: list[Neighbor] = []
    problems: list[str] = []
    for parent in spec.parents:
        if parent.mode not in (Mode.L3, Mode.L3S) or not parent.devices:
            continue
        mac = parent_macs.get(parent.name)
        if mac is None and parent.match is not None:
            mac = parent.match.mac  # matched by its MAC: an ipvlan's is its parent's
        if mac is None:
            problems.append(f"parent {parent.name}: not found, its MAC address is unknown")
            continue
        for device in parent.devices:
            entries.extend(Neighbor(a.ip, mac) for a in device.addresses)
    return entries, problems


def as_ip_commands(entries: list[Neighbor], peer_dev: str) -> str:
    return "".join(f"ip neigh replace {n.address} lladdr {n.lladdr} dev {peer_dev} nud permanent\n"
                   for n in entries)


def as_document(entries: list[Neighbor], peer_dev: str) -> dict[str, Any]:
    """A config a peer's own ipvland consumes: its NIC `peer_dev` with these neighbors."""
    neighbors = [{"address": str(n.address), "lladdr": n.lladdr} for n in entries]
    return {"version": 1, "parents": {peer_dev: {"neighbors": neighbors}}}
