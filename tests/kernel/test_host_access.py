"""etc/examples/host-access.yaml on a real kernel: the host reaches its own containers through an
ipvlan of its own on the parent (a device without netns, routes with `src`), in l2, l3 and l3s.

The host is the test's namespace; lab0 (a veth whose other end sits in namespace `wire`) stands in
for eth0 and carries the host's own address 192.0.2.1/24, as a real NIC would.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from iproute import converge, ipj
from wire import sh, wired_lab

from ipvland import spec as spec_mod
from ipvland.model import Spec

EXAMPLE = Path(__file__).resolve().parents[2] / "etc" / "examples" / "host-access.yaml"


def ping(target: str, netns: str | None = None, deadline: float = 10.0) -> bool:
    """Polls (an L2 first packet waits for ARP): True as soon as one echo comes back."""
    prefix = ["ip", "netns", "exec", netns] if netns else []
    end = time.monotonic() + deadline
    while True:
        if sh(*prefix, "ping", "-c", "1", "-W", "1", target, check=False).returncode == 0:
            return True
        if time.monotonic() > end:
            return False


def example(tmp: Path, mode: str, without_host: bool = False) -> Spec:
    text = EXAMPLE.read_text().replace("eth0:", "lab0:").replace("mode: l3s", f"mode: {mode}")
    if without_host:
        head, _, rest = text.partition("      host0:")
        text = head + rest[rest.index("      web0:"):]
    path = tmp / f"host-access-{mode}{'-bare' if without_host else ''}.yaml"
    path.write_text(text)
    return spec_mod.load(path)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield from wired_lab(tmp_path_factory, "host-access", "192.0.2.1/24")  # the host's own address on its NIC


def test_without_the_host_side_device_the_host_cannot_reach_its_containers(lab: Path) -> None:
    converge(example(lab, "l3s", without_host=True))
    assert not ping("192.0.2.10", deadline=0)
    assert not ping("192.0.2.1", netns="web", deadline=0)


@pytest.mark.parametrize("mode", ["l3s", "l2", "l3"])
def test_host_and_containers_reach_each_other(lab: Path, mode: str) -> None:
    converge(example(lab, mode))  # in place from the previous mode: one changelink of the port
    # iproute2 as the observer: host0 is in the host's namespace, and the route leaves from its address
    got = ipj("route", "get", "192.0.2.10")[0]
    assert (got["dev"], got["prefsrc"]) == ("host0", "192.0.2.2"), got
    assert ipj("-d", "link", "show", "host0")[0]["linkinfo"]["info_data"]["mode"] == mode
    for target in ("192.0.2.10", "192.0.2.11"):
        assert ping(target), f"{mode}: the host cannot reach {target}"
    for netns in ("web", "db"):
        assert ping("192.0.2.2", netns=netns), f"{mode}: {netns} cannot reach the host"
    assert ping("192.0.2.11", netns="web"), f"{mode}: the containers cannot reach each other"
