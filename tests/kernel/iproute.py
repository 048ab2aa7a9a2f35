"""Helpers for the kernel tests that drive the engine: iproute2 as the independent observer, a lab
(a veth pair standing in for a NIC and its wire), and the convergence check. Imported by the test
modules of this directory (pytest puts it on sys.path: it has no __init__.py)."""

from __future__ import annotations

import json
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ipvland import spec as spec_mod
from ipvland.kernel import Kernel
from ipvland.model import Spec
from ipvland.reconcile import Report, reconcile


def ip(*args: str, netns: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = ["ip", *(["-n", netns] if netns else []), *args]
    return subprocess.run(cmd, capture_output=True, text=True, check=check)


def ipj(*args: str, netns: str | None = None) -> list[dict[str, Any]]:
    out = ip("-j", *args, netns=netns).stdout
    return json.loads(out) if out.strip() else []


def link(name: str, netns: str | None = None) -> dict[str, Any] | None:
    found = [x for x in ipj("-d", "link", "show", netns=netns) if x["ifname"] == name]
    return found[0] if found else None


def ipvlan_info(name: str, netns: str | None = None) -> dict[str, Any]:
    found = link(name, netns)
    assert found is not None, f"{name} missing in {netns or 'root'}"
    data: dict[str, Any] = found["linkinfo"]["info_data"]
    return data


def addrs(name: str, netns: str | None = None) -> set[str]:
    out = set()
    for entry in ipj("addr", "show", "dev", name, netns=netns):
        for a in entry.get("addr_info", []):
            if a.get("scope") != "link":
                out.add(f"{a['local']}/{a['prefixlen']}")
    return out


# Every device a lab test may leave in the test's namespace (the named namespaces all go).
LAB_DEVICES = ("lab0", "lab1", "lab9", "foreign0", "theirs0", "cnipeer0", "webpeer0", "pipe0")


def lab_setup(tmp_path: Path) -> Iterator[Path]:
    """A veth pair standing in for a NIC (lab0) and its wire (lab0p), plus a config dir."""
    # Fixed MACs: a random one is rewritten by udev at some later moment, and a MAC change flushes
    # every neighbor entry on the device, permanent ones included (seen on 6.1): the neighbor tests
    # once lost their entries that way, when udev was slow after the daemon tests.
    ip("link", "add", "lab0", "address", "02:00:00:00:0a:01", "type", "veth", "peer", "name", "lab0p",
       "address", "02:00:00:00:0a:02")
    ip("link", "set", "lab0", "up")
    ip("link", "set", "lab0p", "up")
    yield tmp_path
    for name in LAB_DEVICES:
        ip("link", "del", name, check=False)
    for ns in Path("/run/netns").glob("*") if Path("/run/netns").is_dir() else []:
        ip("netns", "del", ns.name, check=False)


def load(dirpath: Path, text: str) -> Spec:
    path = dirpath / "config.yaml"
    path.write_text(textwrap.dedent(text))
    return spec_mod.load(path)


def converge(spec: Spec) -> Report:
    """Apply, require convergence, then prove idempotence: a second run sends zero writes."""
    with Kernel() as kernel:
        report = reconcile(spec, kernel)
        assert report.ok, json.dumps(report.to_json(), indent=1)
        before = kernel.writes
        again = reconcile(spec, kernel)
        assert again.plan.empty, [c.describe() for c in again.plan.changes]
        assert kernel.writes == before, "a converged reconcile must send no write"
    return report


def reconcile_once(spec: Spec) -> Report:
    with Kernel() as kernel:
        return reconcile(spec, kernel)
