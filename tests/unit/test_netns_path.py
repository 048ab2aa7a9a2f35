"""Issue 15 item 7: namespaces by path (netns: {path: ...}) in the loader, observe's view, the planner
and `show`. The kernel side is tests/kernel/test_netns_path.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from ipvland import observe as observe_mod
from ipvland import spec as spec_mod
from ipvland.model import LinkCreate, NamespaceCreate, Observed
from ipvland.plan import plan
from ipvland.show import to_document
from tests.unit.issue15 import assert_error
from tests.unit.test_plan import ipvlan, parent_link
from tests.unit.test_spec import write

DOCKER = "/var/run/docker/netns/3f2a"
HEAD = "version: 1\nparents:\n  eth0:\n    mode: l3s\n    devices:\n"


def spec(tmp_path: Path, path: str = DOCKER) -> spec_mod.Spec:
    return spec_mod.load(write(tmp_path, HEAD + f"      c0: {{netns: {{path: {path}}}, addresses: [192.0.2.10/24]}}\n"))


def test_a_path_is_the_namespaces_key(tmp_path: Path) -> None:
    assert spec(tmp_path, "/var/run/docker/netns//3f2a/").devices[0].netns == DOCKER


@pytest.mark.parametrize(("netns", "epath", "fragment"), [
    ("{path: var/run/x}", "netns.path", "is not an absolute path"),
    ("{path: /var/../x}", "netns.path", "is not an absolute path without '.' or '..'"),
    ("{pth: /x}", "netns.pth", "did you mean 'path'"),
])
def test_bad_paths(tmp_path: Path, netns: str, epath: str, fragment: str) -> None:
    path = write(tmp_path, HEAD + f"      c0: {{netns: {netns}}}\n")
    assert_error(path, f"parents.eth0.devices.c0.{epath}", fragment)


def test_a_path_that_is_no_namespace_makes_the_device_pending_and_is_never_created(tmp_path: Path) -> None:
    p = plan(spec(tmp_path), Observed(links=(parent_link(),)))
    assert not [c for c in p.changes if isinstance(c, NamespaceCreate | LinkCreate)]
    assert p.pending[0].describe() == (f"! link c0 netns {DOCKER}: the namespace path is no network namespace now "
                                       "(its container stopped?); the device waits for it")
    assert not p.conflicts


def test_an_existing_one_gets_its_device(tmp_path: Path) -> None:
    p = plan(spec(tmp_path), Observed(namespaces=frozenset({DOCKER}), links=(parent_link(),),
                                      scanned=frozenset({None, DOCKER})))
    assert [c.describe() for c in p.changes if isinstance(c, LinkCreate)] == [
        f"+ link c0 ipvlan l3s on eth0 netns {DOCKER}"]


def test_show_prints_the_path_form(tmp_path: Path) -> None:
    observed = Observed(namespaces=frozenset({DOCKER}), links=(parent_link(), ipvlan("c0", 5, DOCKER)),
                        scanned=frozenset({None, DOCKER}))
    doc = to_document(observed)
    assert doc["parents"]["eth0"]["devices"]["c0"]["netns"] == {"path": DOCKER}
    path = tmp_path / "shown.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert spec_mod.load(path).devices[0].netns == DOCKER


def test_a_namespace_under_a_name_and_a_path_is_read_once_by_its_path(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    mine = f"/proc/{os.getpid()}/ns/net"
    (tmp_path / "alias").symlink_to(mine)  # `ln -s /proc/PID/ns/net /run/netns/alias`
    monkeypatch.setattr(observe_mod, "NETNS_DIR", str(tmp_path))
    s = spec_mod.loads(HEAD + f"      c0: {{netns: {{path: {mine}}}}}\n")
    assert observe_mod._with_paths(frozenset({"alias", "other"}), s) == frozenset({mine, "other"})
    gone = spec_mod.loads(HEAD + "      c0: {netns: {path: /nonexistent/ns}}\n")
    assert observe_mod._with_paths(frozenset({"alias"}), gone) == frozenset({"alias"})
