"""spec.Loader: the daemon's reads of unchanged files are not parsed and checked again (issue 13:
the schema check of a 1000-device file was ~45 s of CPU per resync under emulation, found by
sampling a real `ipvland run` at the default interval), and any change to what is read is seen."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from ipvland import spec as spec_mod
from ipvland.spec import Loader, SpecError

MAIN = """version: 1
parents:
  eth9:
    mode: l2
    devices:
      d0: {addresses: [192.0.2.5/24]}
"""
DROPIN = """version: 1
parents:
  eth9:
    devices:
      d1: {addresses: [192.0.2.6/24]}
"""


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The files whose schema was checked, in order."""
    seen: list[str] = []
    real = spec_mod._schema_errors

    def counting(doc: Any, errors: Any) -> None:
        seen.append(doc.file if hasattr(doc, "file") else "?")
        real(doc, errors)

    monkeypatch.setattr(spec_mod, "_schema_errors", counting)
    return seen


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "config.d").mkdir()
    (tmp_path / "config.yaml").write_text(MAIN)
    (tmp_path / "config.d" / "10-more.yaml").write_text(DROPIN)
    return tmp_path / "config.yaml"


def test_unchanged_files_are_not_checked_again(tree: Path, checks: list[str]) -> None:
    load = Loader()
    first = load(tree, "h")
    assert len(checks) == 2
    again = load(tree, "h")
    assert len(checks) == 2 and again == first and again.files_sha256 == first.files_sha256
    # rewritten with the same bytes (a sync tool's rename): still the same
    (tree.parent / "config.d" / ".tmp").write_text(DROPIN)
    os.rename(tree.parent / "config.d" / ".tmp", tree.parent / "config.d" / "10-more.yaml")
    load(tree, "h")
    assert len(checks) == 2


def test_a_changed_added_or_removed_file_is_read_anew(tree: Path, checks: list[str]) -> None:
    load = Loader()
    load(tree, "h")
    (tree.parent / "config.d" / "10-more.yaml").write_text(DROPIN.replace(".6/", ".7/"))
    assert {str(d.addresses[0]) for d in load(tree, "h").devices} == {"192.0.2.5/24", "192.0.2.7/24"}
    (tree.parent / "config.d" / "20-other.yaml").write_text(DROPIN.replace("d1", "d2"))
    assert len(load(tree, "h").devices) == 3
    (tree.parent / "config.d" / "20-other.yaml").unlink()
    assert len(load(tree, "h").devices) == 2
    assert len(checks) == 2 + 2 + 3 + 2


def test_a_file_that_cannot_be_read_any_more_is_an_error_and_then_read_again(tree: Path, checks: list[str]) -> None:
    load = Loader()
    load(tree, "h")
    dropin = tree.parent / "config.d" / "10-more.yaml"
    dropin.unlink()
    os.mkfifo(dropin)  # same name, no bytes to compare: an error, never the last good tree
    with pytest.raises(SpecError) as e:
        load(tree, "h")
    assert "not a regular file" in str(e.value)
    dropin.unlink()
    dropin.write_text(DROPIN)
    assert len(load(tree, "h").devices) == 2


def test_a_bad_load_is_never_reused(tree: Path, checks: list[str]) -> None:
    load = Loader()
    (tree.parent / "config.d" / "10-more.yaml").write_text("parents: [oops\n")
    for _ in range(2):
        with pytest.raises(SpecError):
            load(tree, "h")
    assert load.last is None
    (tree.parent / "config.d" / "10-more.yaml").write_text(DROPIN)
    assert len(load(tree, "h").devices) == 2


def test_another_host_is_selected_from_the_same_files(tree: Path, checks: list[str]) -> None:
    web_only = DROPIN.replace("version: 1\n", 'version: 1\nhosts: ["web-*"]\n')
    (tree.parent / "config.d" / "10-more.yaml").write_text(web_only)
    load = Loader()
    assert len(load(tree, "web-1").devices) == 2
    assert len(load(tree, "db-1").devices) == 1
    assert len(checks) == 2


def test_the_daemon_does_not_check_unchanged_files_at_each_resync(tree: Path, checks: list[str],
                                                                   tmp_path: Path) -> None:
    """Regression: every resync re-validated the whole config (45 s of a 53 s resync at N=1000)."""
    from ipvland.daemon import Daemon

    d = Daemon(tree, state_dir=tmp_path / "state", watch_files=False, watch_netlink=False, kernel_factory=object)
    assert d.load() is True
    for _ in range(3):
        assert d.load() is False  # the same config
    assert len(checks) == 2 and d.generation == 1
    (tree.parent / "config.d" / "10-more.yaml").write_text(DROPIN.replace("d1", "d9"))
    assert d.load() is True and d.generation == 2 and len(checks) == 4
