"""The record that stands in for a neighbor mark the kernel drops: its file, and how it decides
ownership. The kernel's side (detection, the same plans with the record forced on) is in
tests/kernel/test_marks.py; here the wrapped kernel is plain data."""

from __future__ import annotations

import ipaddress
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ipvland import marks, status
from ipvland.model import RT_PROTO, Neighbor, ObservedNeighbor

N1 = Neighbor(ipaddress.ip_address("192.0.2.50"), "02:00:00:00:00:50")
N2 = Neighbor(ipaddress.ip_address("192.0.2.60"), "02:00:00:00:00:60")


class Table:
    """A kernel's neighbor table as plain data (index 7 is `eth0`), with a configurable protocol."""

    def __init__(self, keeps_protocol: bool) -> None:
        self.keeps = keeps_protocol
        self.entries: dict[tuple[str | None, int, str], ObservedNeighbor] = {}
        self.closed = False

    def ifindex(self, netns: str | None, name: str) -> int:
        return {"eth0": 7, "web0": 9}[name]

    def neighbors(self, netns: str | None) -> list[ObservedNeighbor]:
        return [n for k, n in self.entries.items() if k[0] == netns]

    def set_neighbor(self, netns: str | None, dev: str, neighbor: Neighbor, replace: bool = False) -> None:
        index = self.ifindex(netns, dev)
        self.entries[(netns, index, str(neighbor.address))] = ObservedNeighbor(
            netns, index, neighbor, True, RT_PROTO if self.keeps else None)

    def delete_neighbor(self, netns: str | None, dev: str, neighbor: Neighbor) -> None:
        del self.entries[(netns, self.ifindex(netns, dev), str(neighbor.address))]

    def delete_link(self, netns: str | None, name: str) -> None:
        index = self.ifindex(netns, name)
        self.entries = {k: v for k, v in self.entries.items() if k[:2] != (netns, index)}

    def add_foreign(self, netns: str | None, index: int, neighbor: Neighbor) -> None:
        self.entries[(netns, index, str(neighbor.address))] = ObservedNeighbor(netns, index, neighbor, True, None)

    def close(self) -> None:
        self.closed = True


def owned(kernel: Any, netns: str | None = None) -> set[str]:
    return {str(n.neighbor.address) for n in kernel.neighbors(netns) if n.owned}


def test_a_kernel_that_drops_the_protocol_still_gets_its_entries_recognised(tmp_path: Path) -> None:
    table = Table(keeps_protocol=False)
    kernel = marks.RecordingKernel(table, marks.Record(tmp_path))
    kernel.set_neighbor(None, "eth0", N1)
    table.add_foreign(None, 7, N2)
    assert owned(table) == set()  # what ipvland saw before: its own entry looked foreign
    assert owned(kernel) == {"192.0.2.50"}
    kernel.delete_neighbor(None, "eth0", N1)
    assert owned(kernel) == set() and marks.Record(tmp_path).read() == set()


def test_strip_ignores_the_kernels_protocol(tmp_path: Path) -> None:
    table = Table(keeps_protocol=True)
    table.set_neighbor(None, "eth0", N1)  # marked by the kernel, but not in the record
    assert owned(marks.RecordingKernel(table, marks.Record(tmp_path))) == {"192.0.2.50"}
    assert owned(marks.RecordingKernel(table, marks.Record(tmp_path), strip=True)) == set()


def test_an_entry_gone_from_the_kernel_leaves_the_record_and_a_newcomer_there_is_foreign(tmp_path: Path) -> None:
    table = Table(keeps_protocol=False)
    kernel = marks.RecordingKernel(table, marks.Record(tmp_path))
    kernel.set_neighbor("web", "web0", N1)
    kernel.set_neighbor(None, "eth0", N2)
    del table.entries[("web", 9, "192.0.2.50")]  # flushed by the kernel (the device went down)
    assert owned(kernel, "web") == set()
    assert marks.Record(tmp_path).read() == {(None, 7, "192.0.2.60")}  # other namespaces untouched
    table.add_foreign("web", 9, N1)  # another tool's entry at the same place
    assert owned(kernel, "web") == set()


def test_deleting_a_device_forgets_its_entries(tmp_path: Path) -> None:
    table = Table(keeps_protocol=False)
    kernel = marks.RecordingKernel(table, marks.Record(tmp_path))
    kernel.set_neighbor("web", "web0", N1)
    kernel.set_neighbor(None, "eth0", N2)
    kernel.delete_link("web", "web0")
    assert marks.Record(tmp_path).read() == {(None, 7, "192.0.2.60")}


def test_the_record_file_is_written_atomically_0640_and_survives_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "state"
    table = Table(keeps_protocol=False)
    with marks.RecordingKernel(table, marks.Record(state)) as kernel:
        kernel.set_neighbor(None, "eth0", N1)
    assert table.closed
    path = state / marks.RECORD_FILE
    assert path.stat().st_mode & 0o777 == 0o640 and state.stat().st_mode & 0o777 == 0o750
    assert sorted(p.name for p in state.iterdir()) == [marks.RECORD_FILE, marks.RECORD_FILE + ".lock"]
    assert owned(marks.RecordingKernel(table, marks.Record(state))) == {"192.0.2.50"}  # a new process
    path.write_text("{not json")
    assert marks.Record(state).read() == set()  # a damaged record is ignored, not fatal


def test_missing_and_forced(monkeypatch: pytest.MonkeyPatch) -> None:
    found = {marks.ALIAS: True, marks.ROUTE: True, marks.NEIGHBOR: False, marks.FLAGS: None}
    monkeypatch.delenv(marks.FORCE_ENV, raising=False)
    assert marks.missing(found) == [marks.NEIGHBOR]
    assert marks.missing({**found, marks.NEIGHBOR: True}) == []
    monkeypatch.setenv(marks.FORCE_ENV, "1")
    assert marks.missing({**found, marks.NEIGHBOR: True}) == [marks.NEIGHBOR]


def test_open_kernel_wraps_only_when_the_neighbor_mark_is_missing(monkeypatch: pytest.MonkeyPatch,
                                                                 tmp_path: Path) -> None:
    monkeypatch.setattr(marks, "_detected", {marks.ALIAS: True, marks.ROUTE: True, marks.NEIGHBOR: True,
                                             marks.FLAGS: True})
    monkeypatch.delenv(marks.FORCE_ENV, raising=False)
    with marks.open_kernel(tmp_path) as k:
        assert not isinstance(k, marks.RecordingKernel)
    monkeypatch.setenv(marks.FORCE_ENV, "1")
    with marks.open_kernel(tmp_path) as k:
        assert isinstance(k, marks.RecordingKernel) and k.strip
    assert marks.report() == {"checked": marks._detected, "missing": [marks.NEIGHBOR], "record": True}


def test_status_names_the_missing_marks() -> None:
    base = {"schema": status.SCHEMA, "pid": os.getpid(), "last_reconcile": None}
    text = status.render({**base, "marks": {"checked": {}, "missing": [marks.NEIGHBOR], "record": True}}, False)
    assert "kernel marks missing: neighbor protocol; ipvland records its neighbor entries" in text
    assert "kernel marks missing" not in status.render({**base, "marks": None}, False)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (unshare)")
def test_detection_on_this_host_leaves_the_hosts_namespace_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(marks, "_detected", None)
    before = subprocess.run(["ip", "-d", "-o", "link", "show", "lo"], capture_output=True, text=True).stdout
    found = marks.detect()
    assert found[marks.ALIAS] is True and found[marks.ROUTE] is True and found[marks.NEIGHBOR] is True
    if found[marks.FLAGS] is None:  # only because this kernel cannot create an ipvlan to check
        assert "lacks IPVLAN" in marks.unchecked[marks.FLAGS], marks.unchecked
    else:
        assert found[marks.FLAGS] is True
    assert subprocess.run(["ip", "-d", "-o", "link", "show", "lo"], capture_output=True, text=True).stdout == before
    assert "198.18.255" not in subprocess.run(["ip", "route", "show", "table", "all"], capture_output=True,
                                              text=True).stdout


def test_the_daemons_status_carries_the_marks_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ipvland.daemon import Daemon

    monkeypatch.setattr(marks, "_detected", {marks.ALIAS: True, marks.ROUTE: True, marks.NEIGHBOR: False,
                                             marks.FLAGS: True})
    d = Daemon(tmp_path / "config.yaml", state_dir=tmp_path / "state", watch_files=False, watch_netlink=False,
               kernel_factory=object, notify=lambda *f: True)
    assert d.status()["marks"] == {"checked": marks._detected, "missing": [marks.NEIGHBOR], "record": True}
