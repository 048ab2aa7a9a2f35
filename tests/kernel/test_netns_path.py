"""A namespace by path on a real kernel (issue 15 item 7): a namespace that exists only as a bind mount
outside /run/netns (as a container runtime keeps one) gets its ipvlan; when the mount goes (the
container stopped), the device is pending, and nothing is created in its place."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from iproute import converge
from wire import LAB_HEAD, sh, wired_lab

from ipvland import spec as spec_mod
from ipvland.kernel import Kernel
from ipvland.model import LinkCreate, NamespaceCreate
from ipvland.observe import observe
from ipvland.plan import plan


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[spec_mod.Spec, Path]]:
    for tmp in wired_lab(tmp_path_factory, "netns-path"):
        holder = tmp / "ctr-ns"
        holder.touch()
        sh("ip", "netns", "add", "ctrtmp")
        sh("mount", "--bind", "/run/netns/ctrtmp", str(holder))
        sh("ip", "netns", "del", "ctrtmp")  # from now on the namespace is only at `holder`
        path = tmp / "config.yaml"
        path.write_text(LAB_HEAD + f"      c0: {{netns: {{path: {holder}}}, addresses: [192.0.2.10/24]}}\n")
        yield spec_mod.load(path), holder
        sh("umount", str(holder), check=False)


def test_the_device_goes_into_the_namespace_at_that_path(lab: tuple[spec_mod.Spec, Path]) -> None:
    spec, holder = lab
    converge(spec)
    link = json.loads(sh("nsenter", f"--net={holder}", "ip", "-j", "link", "show", "c0").stdout)[0]
    addrs = json.loads(sh("nsenter", f"--net={holder}", "ip", "-j", "addr", "show", "c0").stdout)[0]
    assert link.get("ifalias") == "ipvland", link
    assert [a["local"] for a in addrs["addr_info"] if a["family"] == "inet"] == ["192.0.2.10"], addrs
    assert not Path("/run/netns/ctrtmp").exists()


def test_when_the_path_goes_the_device_is_pending(lab: tuple[spec_mod.Spec, Path]) -> None:
    spec, holder = lab
    sh("umount", str(holder))
    with Kernel() as kernel:
        p = plan(spec, observe(kernel, spec))
    assert not [c for c in p.changes if isinstance(c, NamespaceCreate | LinkCreate)], [c.describe() for c in p.changes]
    assert not p.conflicts
    assert [c.subject for c in p.pending] == [f"link c0 netns {holder}"]
