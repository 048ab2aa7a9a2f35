"""The daemon's log and status get the same bounded, excerpted config errors as the CLI."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from ipvland import status
from ipvland.daemon import Daemon
from ipvland.spec import MAX_ERRORS_PER_FILE


def loaded_with_dropin(tmp_path: Path, dropin: Path) -> str:
    """A daemon whose config.d holds `dropin` (linked as config.d/zz.yaml) loads once and writes its
    status; returns the status file's text."""
    config = tmp_path / "config.yaml"
    config.write_text("version: 1\nparents: {}\n")
    (tmp_path / "config.d").mkdir()
    (tmp_path / "config.d" / "zz.yaml").symlink_to(dropin)
    d = Daemon(config, state_dir=tmp_path / "state", watch_files=False, watch_netlink=False,
               kernel_factory=object, notify=lambda *f: True)
    assert d.load() is False
    d.write_status()
    return (tmp_path / "state" / "status.json").read_text()


def test_a_drop_in_of_20000_unknown_keys_gives_50_errors_and_a_count_in_log_and_status(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ipvland")
    big = tmp_path / "big.yaml"
    big.write_text("version: 1\n" + "".join(f"unknown{i}: x\n" for i in range(20_000)))
    assert len(loaded_with_dropin(tmp_path, big)) < 20_000
    errors = status.read(tmp_path / "state")["config"]["error"]["errors"]
    assert len(errors) == MAX_ERRORS_PER_FILE + 1
    assert errors[-1] == (f"{tmp_path / 'config.d' / 'zz.yaml'}: … and {20_000 - MAX_ERRORS_PER_FILE} more error(s) "
                          "(only the first 50 are shown)")
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("config: ")]
    assert len(logged) == MAX_ERRORS_PER_FILE + 2  # the errors, the "and N more" line, the summary
    assert logged[-2] == f"config: {errors[-1]}"


def test_a_secret_file_linked_as_a_drop_in_leaks_nothing_into_log_or_status(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ipvland")
    shadow = tmp_path / "shadow"
    shadow.write_text("root:$6$Zx9KpQ2wLm$Gk3JfJ1hU3k9N0eWmPz9c7r8aQwY6sV0bN1mL2kJ3hG4fD5sA6:19662:0:99999:7:::\n"
                      "daemon:*:19662:0:99999:7:::\n")
    text = loaded_with_dropin(tmp_path, shadow) + caplog.text
    assert "not an ipvland config" in text
    for secret in ("Zx9KpQ2wLm", "Gk3JfJ1h", "$6$", "19662", "daemon:"):
        assert secret not in text
