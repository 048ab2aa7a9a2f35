"""`ipvland peers --format route` on a real kernel (issue 15 item 8): an upstream router (namespace
`wire`) that runs the printed lines reaches an l3s container whose address is not on the wire's
subnet, by routing it to this host's own address on the parent; without them it does not."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from iproute import converge
from wire import LAB_HEAD, sh, wired_lab

from ipvland import spec as spec_mod

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    for tmp in wired_lab(tmp_path_factory, "peers-upstream", "192.0.2.1/24"):
        sh("ip", "-n", "wire", "addr", "add", "192.0.2.254/24", "dev", "lab0p")
        path = tmp / "config.yaml"
        path.write_text(LAB_HEAD + "      web0: {netns: web, addresses: [198.51.100.10/32], routes: [{to: default}]}\n")
        yield path


def ping_from_wire(target: str) -> bool:
    return sh("ip", "netns", "exec", "wire", "ping", "-c", "1", "-W", "2", target, check=False).returncode == 0


def test_the_printed_routes_make_the_container_reachable(config: Path) -> None:
    converge(spec_mod.load(config))
    assert not ping_from_wire("198.51.100.10")  # the router has no route to it yet
    done = subprocess.run([sys.executable, "-m", "ipvland", "peers", "--format", "route", "-c", str(config)],
                          capture_output=True, text=True, check=True, cwd=ROOT)
    assert done.stdout == "ip route replace 198.51.100.10/32 via 192.0.2.1\n"
    for line in done.stdout.splitlines():
        sh("ip", "-n", "wire", *line.split()[1:])
    assert ping_from_wire("198.51.100.10")
