"""A parent given by its MAC on a real kernel (issue 15 item 6): resolved at every reconcile, so a NIC
renamed under ipvland keeps its devices (same ifindex) and the plan says which NIC the parent is."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from iproute import converge, ip, link
from wire import lab_spec, wired_lab

from ipvland import spec as spec_mod
from ipvland.kernel import Kernel
from ipvland.observe import observe
from ipvland.plan import iter_lines, plan

CONFIG = """\
version: 1
parents:
  nic1:
    match: {mac: "02:00:00:00:0a:01"}
    mode: l3s
    devices:
      m0: {netns: mt, addresses: [192.0.2.10/24]}
"""


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> Iterator[spec_mod.Spec]:
    for tmp in wired_lab(tmp_path_factory, "parent-match"):
        yield lab_spec(tmp, CONFIG)
        ip("link", "del", "lab9", check=False)


def test_the_parent_is_the_nic_with_that_mac_and_follows_a_rename(spec: spec_mod.Spec) -> None:
    report = converge(spec)
    assert report.plan.resolved == (("nic1", "lab0"),)
    m0 = link("m0", "mt")
    assert m0 is not None
    ip("link", "set", "lab0", "down")
    ip("link", "set", "lab0", "name", "lab9")
    ip("link", "set", "lab9", "up")
    with Kernel() as kernel:
        p = plan(spec, observe(kernel, spec))
    assert next(iter_lines(p)) == "= parent nic1 is lab9"
    assert not [c for c in p.changes if "link m0" in c.describe()], list(iter_lines(p))
    converge(spec)
    after = link("m0", "mt")
    assert after is not None and after["ifindex"] == m0["ifindex"]
