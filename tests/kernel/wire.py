"""The lab of the issue-15 kernel tests (host access, route attributes, rules): lab0, a veth standing
in for this host's NIC, its other end up in namespace `wire` (so lab0 has a carrier), fixed MACs."""

from __future__ import annotations

import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from ipvland import spec as spec_mod
from ipvland.model import Spec

# The start of every config of these tests: lab0 in l3s, its devices follow (indented 6).
LAB_HEAD = "version: 1\nparents:\n  lab0:\n    mode: l3s\n    devices:\n"


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=check)


def wired_lab(factory: pytest.TempPathFactory, name: str, host_address: str | None = None) -> Iterator[Path]:
    """Set up lab0 (with `host_address`, the host's own address on its NIC), yield a temp dir, clean up."""
    sh("ip", "netns", "add", "wire")
    # Fixed MACs: udev rewrites a random one later, and a MAC change flushes neighbor entries.
    sh("ip", "link", "add", "lab0", "address", "02:00:00:00:0a:01", "type", "veth", "peer", "name", "lab0p",
       "address", "02:00:00:00:0a:02", "netns", "wire")
    if host_address:
        sh("ip", "addr", "add", host_address, "dev", "lab0")
    sh("ip", "link", "set", "lab0", "up")
    sh("ip", "-n", "wire", "link", "set", "lab0p", "up")
    try:
        yield factory.mktemp(name)
    finally:  # also when the test's own setup failed: a lab0 left behind breaks every later test
        sh("ip", "link", "del", "lab0", check=False)
        for ns in Path("/run/netns").glob("*"):
            sh("ip", "netns", "del", ns.name, check=False)


def lab_spec(tmp: Path, text: str) -> Spec:
    """The config `text` written to tmp/config.yaml and loaded."""
    path = tmp / "config.yaml"
    path.write_text(textwrap.dedent(text))
    return spec_mod.load(path)
