"""Config watching on a real filesystem (inotify): every way a config file gets replaced is seen.

Events from one directory arrive in order, so "an irrelevant change, then a relevant one, and only the
relevant one was reported" needs no sleep.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ipvland.watch import ConfigWatcher


class Recorder:
    def __init__(self) -> None:
        self.events: list[str] = []
        self.cond = threading.Condition()

    def __call__(self, what: str) -> None:
        with self.cond:
            self.events.append(what)
            self.cond.notify_all()

    def wait_for(self, needle: str, timeout: float = 5.0) -> list[str]:
        """Wait until an event mentions `needle`; return the events seen until then."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while not any(needle in e for e in self.events):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no event for {needle!r}; got {self.events}")
                self.cond.wait(left)
            return list(self.events)

    def clear(self) -> None:
        with self.cond:
            self.events.clear()


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Path, Recorder, ConfigWatcher]]:
    etc = tmp_path / "etc" / "ipvland"
    (etc / "config.d").mkdir(parents=True)
    config = etc / "config.yaml"
    config.write_text("version: 1\n")
    rec = Recorder()
    watcher = ConfigWatcher(config, rec)
    watcher.start()
    yield config, rec, watcher
    watcher.stop()


def test_watches_directories_not_files(setup: tuple[Path, Recorder, ConfigWatcher]) -> None:
    config, _rec, watcher = setup
    assert watcher.watched() == sorted([config.parent, config.parent / "config.d", config.parent.parent])


def test_in_place_write(setup: tuple[Path, Recorder, ConfigWatcher]) -> None:
    config, rec, _ = setup
    with open(config, "a") as f:
        f.write("parents: {}\n")
    rec.wait_for("config.yaml")


def test_temp_file_then_rename_and_irrelevant_files_ignored(setup: tuple[Path, Recorder, ConfigWatcher]) -> None:
    config, rec, _ = setup
    (config.parent / "notes.txt").write_text("unrelated")
    tmp = config.parent / ".config.yaml.sync-1234"
    tmp.write_text("version: 1\nparents: {}\n")
    os.rename(tmp, config)
    events = rec.wait_for("moved")
    assert not any("notes.txt" in e for e in events), events
    assert not any("sync-1234" in e and "moved" not in e for e in events), events


def test_editor_save_by_rename(setup: tuple[Path, Recorder, ConfigWatcher]) -> None:
    config, rec, _ = setup
    os.rename(config, config.with_name("config.yaml~"))
    rec.wait_for("config.yaml")
    rec.clear()
    config.write_text("version: 1\n# new inode\n")
    rec.wait_for("config.yaml")
    rec.clear()
    with open(config, "a") as f:  # the watch follows the name, not the old inode
        f.write("# again\n")
    rec.wait_for("config.yaml")


def test_reading_the_config_is_not_an_event(setup: tuple[Path, Recorder, ConfigWatcher]) -> None:
    config, rec, _ = setup
    config.read_text()
    (config.parent / "..marker").write_text("x")  # same directory, so its events come after the read's
    events = rec.wait_for("..marker")
    assert not any("config.yaml" in e for e in events), events


def test_kubernetes_configmap_data_swap(tmp_path: Path) -> None:
    etc = tmp_path / "vol"
    etc.mkdir()
    (etc / "..2026_01").mkdir()
    (etc / "..2026_01" / "config.yaml").write_text("version: 1\n")
    os.symlink("..2026_01", etc / "..data")
    os.symlink("..data/config.yaml", etc / "config.yaml")
    rec = Recorder()
    watcher = ConfigWatcher(etc / "config.yaml", rec)
    watcher.start()
    try:
        (etc / "..2026_02").mkdir()
        (etc / "..2026_02" / "config.yaml").write_text("version: 1\nparents: {}\n")
        os.symlink("..2026_02", etc / "..data_tmp")
        os.rename(etc / "..data_tmp", etc / "..data")  # the atomic swap kubelet does
        rec.wait_for("..data")
    finally:
        watcher.stop()


def test_dropin_added_by_rename(setup: tuple[Path, Recorder, ConfigWatcher]) -> None:
    config, rec, _ = setup
    tmp = config.parent / "config.d" / ".20-db.yaml.tmp"
    tmp.write_text("parents: {}\n")
    rec.clear()
    os.rename(tmp, config.parent / "config.d" / "20-db.yaml")
    rec.wait_for("20-db.yaml")


def test_dropin_dir_removed_and_recreated(setup: tuple[Path, Recorder, ConfigWatcher]) -> None:
    config, rec, watcher = setup
    dropins = config.parent / "config.d"
    shutil.rmtree(dropins)
    rec.wait_for("config.d")
    assert watcher.rearm()
    assert dropins not in watcher.watched()
    dropins.mkdir()
    rec.wait_for("created")
    assert watcher.rearm()
    assert dropins in watcher.watched()
    rec.clear()
    (dropins / "10-web.yaml").write_text("parents: {}\n")
    rec.wait_for("10-web.yaml")


def test_dropin_dir_appearing_later(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("version: 1\n")
    rec = Recorder()
    watcher = ConfigWatcher(config, rec)
    watcher.start()
    try:
        (tmp_path / "config.d").mkdir()
        rec.wait_for("config.d")
        watcher.rearm()
        (tmp_path / "config.d" / "a.yaml").write_text("x")
        rec.wait_for("a.yaml")
    finally:
        watcher.stop()


def test_main_dir_removed_and_recreated(setup: tuple[Path, Recorder, ConfigWatcher]) -> None:
    config, rec, watcher = setup
    shutil.rmtree(config.parent)
    rec.wait_for("deleted")
    watcher.rearm()
    assert watcher.watched() == [config.parent.parent]
    rec.clear()
    config.parent.mkdir()
    rec.wait_for(str(config.parent))
    watcher.rearm()
    rec.clear()
    config.write_text("version: 1\n")
    rec.wait_for("config.yaml")


def test_rearm_without_changes_is_a_no_op(setup: tuple[Path, Recorder, ConfigWatcher]) -> None:
    _config, _rec, watcher = setup
    before = watcher.watched()
    assert watcher.rearm() is False
    assert watcher.watched() == before


def test_a_stalled_in_place_write_is_an_event_only_once_closed(setup: tuple[Path, Recorder, ConfigWatcher]) -> None:
    config, rec, watcher = setup
    rec.clear()
    assert watcher.writing() is None
    marker = watcher.marker()
    with open(config, "w") as f:  # truncates: that is a modification already
        f.write("version: 1\n")
        f.flush()
        time.sleep(1.5)  # longer than watchdog's delivery delay
        busy = watcher.writing()
        assert busy is not None and busy[0] == str(config)
        assert watcher.marker() > marker  # a read done meanwhile is known to be overlapped
        assert not any("config.yaml" in e for e in rec.events), rec.events
        f.write("parents: {}\n")
    rec.wait_for("closed")
    assert watcher.writing() is None


def test_a_writer_that_stalls_forever_is_given_up_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ipvland.watch as watch

    config = tmp_path / "config.yaml"
    config.write_text("version: 1\n")
    now = [0.0]
    watcher = ConfigWatcher(config, Recorder(), clock=lambda: now[0])
    watcher.start()
    try:
        f = open(config, "a")  # noqa: SIM115 - kept open on purpose
        f.write("x: 1\n")
        f.flush()
        assert watcher.writing() is not None
        now[0] = watch.WRITE_STALL_MAX + 1
        assert watcher.writing() is None
        f.close()
    finally:
        watcher.stop()


def test_a_dropin_dir_that_is_a_symlink_is_watched_at_its_target(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    target = tmp_path / "srv" / "conf"
    target.mkdir(parents=True)
    os.symlink(target, etc / "config.d")
    (etc / "config.yaml").write_text("version: 1\n")
    rec = Recorder()
    watcher = ConfigWatcher(etc / "config.yaml", rec)
    watcher.start()
    try:
        assert target in watcher.watched()
        (target / "20-db.yaml").write_text("version: 1\n")  # written in the target, not through the link
        rec.wait_for("20-db.yaml")
        # re-pointed: an event in the main directory, and the new target is watched after rearm
        other = tmp_path / "srv" / "conf2"
        other.mkdir()
        os.symlink(other, etc / ".config.d.new")
        os.rename(etc / ".config.d.new", etc / "config.d")
        rec.wait_for("config.d")
        watcher.rearm()
        assert other in watcher.watched() and target not in watcher.watched()
        rec.clear()
        (other / "30-x.yaml").write_text("version: 1\n")
        rec.wait_for("30-x.yaml")
    finally:
        watcher.stop()
