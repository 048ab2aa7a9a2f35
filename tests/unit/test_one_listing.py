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

    def fake_list() -> frozenset[str]:
        calls.append(1)
        return frozenset(names)

    monkeypatch.setattr(kmod, "list_namespaces", fake_list)
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


def test_a_listing_is_reused_while_the_directory_is_unchanged_and_settled(
        listings: list[int], netns_dir: Path) -> None:
    _age(netns_dir, 60)
    with kmod.Kernel() as k:
        k.list_namespaces()
        k.list_namespaces()
        assert len(listings) == 1  # a stat of the directory, not a scan
        (netns_dir / "web").touch()  # ip netns add web: the directory changes
        k.list_namespaces()
        assert len(listings) == 2


def test_a_listing_taken_just_after_a_change_is_not_reused(listings: list[int], netns_dir: Path) -> None:
    """`ip netns add` creates the name, then mounts on it without touching the directory: a listing
    taken in between would miss the namespace for as long as it was reused."""
    (netns_dir / "web").touch()  # the directory changed just now
    with kmod.Kernel() as k:
        k.list_namespaces()
        k.list_namespaces()
        assert len(listings) == 2
        _age(netns_dir, 60)  # quiet since: now a listing is kept
        k.list_namespaces()
        k.list_namespaces()
        assert len(listings) == 3
