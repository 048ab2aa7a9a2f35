"""Kernel.one_listing: /run/netns listed once per reconcile or daemon turn (issue 13: at 1000
namespaces, four listings were most of a repair's time). What is counted here is our own calls to
the listing function, not kernel behaviour."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from ipvland import kernel as kmod


@pytest.fixture
def listings(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    names = {"a", "b"}

    def fake_scan() -> tuple[frozenset[str], bool]:
        calls.append(1)
        bare = os.path.exists(os.path.join(kmod.NETNS_DIR, "bare"))  # a name with nothing mounted on it
        return frozenset(names), not bare

    monkeypatch.setattr(kmod, "_scan_namespaces", fake_scan)
    monkeypatch.setattr(kmod, "create_namespace", lambda name: names.add(name))
    return calls


def test_one_listing_lists_once_and_adds_what_it_creates(listings: list[int], netns_dir: Path) -> None:
    with kmod.Kernel() as k:
        with k.one_listing():
            assert k.list_namespaces() == {"a", "b"}
            with k.one_listing():  # reconcile() inside the daemon's turn
                k.create_namespace("c")
                assert k.list_namespaces() == {"a", "b", "c"}
            assert k.list_namespaces() == {"a", "b", "c"}
        assert len(listings) == 1


def test_outside_one_listing_every_call_lists(listings: list[int], netns_dir: Path) -> None:
    (netns_dir / "web").touch()  # changed just now: no listing is reused (see below)
    with kmod.Kernel() as k:
        k.list_namespaces()
        with k.one_listing():
            k.list_namespaces()
        k.list_namespaces()  # after the turn: listed again, never the turn's old list
        assert len(listings) == 3


@pytest.fixture
def netns_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(kmod, "NETNS_DIR", str(tmp_path))
    return tmp_path


def _age(path: Path, seconds: float) -> None:
    then = time.time_ns() - int(seconds * 1e9)
    os.utime(path, ns=(then, then))


def test_a_repair_reuses_a_listing_while_the_directory_is_unchanged_and_settled(
        listings: list[int], netns_dir: Path) -> None:
    _age(netns_dir, 60)
    with kmod.Kernel() as k:
        for _ in range(3):
            with k.one_listing(reuse=True):  # the daemon's scoped turns
                k.list_namespaces()
        assert len(listings) == 1  # a stat of the directory, not a scan
        (netns_dir / "web").touch()  # ip netns add web: the directory changes
        with k.one_listing(reuse=True):
            k.list_namespaces()
        assert len(listings) == 2


def test_a_full_turn_always_lists_afresh(listings: list[int], netns_dir: Path) -> None:
    """Review of issue 13: what a reused listing cannot see must not outlive the next resync."""
    _age(netns_dir, 60)
    with kmod.Kernel() as k:
        for _ in range(3):
            with k.one_listing():
                k.list_namespaces()
        assert len(listings) == 3


def test_a_listing_taken_just_after_a_change_is_not_reused(listings: list[int], netns_dir: Path) -> None:
    """`ip netns add` creates the name, then mounts on it without touching the directory: a listing
    taken in between would miss the namespace for as long as it was reused."""
    (netns_dir / "web").touch()  # the directory changed just now
    with kmod.Kernel() as k:
        for _ in range(2):
            with k.one_listing(reuse=True):
                k.list_namespaces()
        assert len(listings) == 2
        _age(netns_dir, 60)  # quiet since: now a listing is kept
        for _ in range(2):
            with k.one_listing(reuse=True):
                k.list_namespaces()
        assert len(listings) == 3


def test_a_listing_with_a_bare_name_is_not_reused_nor_one_before_ipvland_creates(
        listings: list[int], netns_dir: Path) -> None:
    """Review of issue 13 (reproduced): a leftover empty file that ipvland (or anyone) mounts a
    namespace on later leaves the directory unchanged; a listing without it, reused, hid that
    namespace from every repair (EEXIST at each try to create it again)."""
    (netns_dir / "bare").touch()
    _age(netns_dir, 60)
    with kmod.Kernel() as k:
        for _ in range(2):
            with k.one_listing(reuse=True):
                k.list_namespaces()
        assert len(listings) == 2
    (netns_dir / "bare").unlink()
    _age(netns_dir, 60)
    with kmod.Kernel() as k:
        with k.one_listing(reuse=True):
            k.list_namespaces()
        k.create_namespace("new")  # the fake adds it to the names
        with k.one_listing(reuse=True):
            assert "new" in k.list_namespaces()
        assert len(listings) == 4  # listed again after the create, though the directory looks the same
