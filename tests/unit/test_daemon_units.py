"""The daemon's other units as state machines: the enforced-config choice, the flap detector, the
watchdog feeder (fake clocks, no threads)."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

import pytest

from ipvland.enforce import ConfigChoice, RolledBack
from ipvland.flaps import FlapDetector, object_key
from ipvland.heartbeat import Feeder, clamp_probes, probe_budget
from ipvland.model import (
    AddressAdd,
    AddressDelete,
    LinkMtuSet,
    Probe,
    Route,
    RouteDelete,
    RouteSet,
    Spec,
)

A = Spec(version=1, sources=("a",))
B = Spec(version=1, sources=("b",))
RESTORED = Spec(version=1, sources=("<state before apply>",))


def rolled(generation: int, files: str) -> RolledBack:
    return RolledBack(generation, files, 0.0, ("probe web -> 192.0.2.1: FAILED",), True, None)


def test_choice_from_nothing_to_a_generation() -> None:
    c = ConfigChoice()
    assert c.enforced is None and c.reason == "nothing: no valid config yet"
    assert c.failed(["x:1:1: bad"], 1.0) and not c.failed(["x:1:1: bad"], 2.0)  # new errors once
    assert c.error_since == 1.0
    assert c.loaded(A, "h1", 3.0) == "new"
    assert c.enforced is A and c.generation == 1 and c.errors is None
    assert c.rollback_allowed  # a new generation's first reconcile may roll back
    c.reconciled(None, None)
    assert not c.rollback_allowed  # every later one is a repair
    assert c.loaded(A, "h1b", 4.0) == "same" and c.generation == 1  # same config, other bytes
    c.failed(["x:2:1: bad"], 5.0)
    assert c.enforced is A and "the last good one is kept" in c.reason


def test_a_rolled_back_generation_is_refused_until_its_files_change() -> None:
    c = ConfigChoice()
    c.loaded(A, "h1", 0.0)
    c.reconciled(None, None)
    c.loaded(B, "h2", 1.0)
    assert c.generation == 2 and c.rollback_allowed
    c.reconciled(rolled(2, "h2"), RESTORED)
    assert c.enforced is RESTORED and c.is_rolled_back and not c.rollback_allowed
    assert "generation 2 broke a probe" in c.reason and "until its files change" in c.reason
    for _ in range(3):  # every resync reads the same files again
        assert c.loaded(B, "h2", 2.0) == "refused"
    assert c.generation == 2 and c.enforced is RESTORED
    assert c.loaded(B, "h3", 3.0) == "new"  # the files changed (a comment, even): tried again
    assert c.generation == 3 and c.enforced is B and c.rollback_allowed and not c.is_rolled_back


def test_a_rollback_whose_previous_state_could_not_be_planned_enforces_nothing() -> None:
    c = ConfigChoice()
    c.loaded(A, "h1", 0.0)
    c.reconciled(rolled(1, "h1"), None)
    assert c.enforced is None and "could not be restored" in c.reason


def test_object_keys_name_objects_not_changes() -> None:
    a = ipaddress.ip_interface("192.0.2.11/24")
    assert object_key(AddressAdd(None, "app0", a)) == object_key(AddressDelete(None, "app0", a)) \
        == "address 192.0.2.11/24 dev app0"
    assert object_key(LinkMtuSet("web", "web0", 1450, 1400)) == object_key(LinkMtuSet("web", "web0", 1, 2)) \
        == "link web0 netns web mtu"
    r = Route(ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_address("192.0.2.1"), 5)
    r2 = Route(ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_address("192.0.2.2"), 5)
    assert object_key(RouteSet(None, "eth0", r)) == object_key(RouteDelete(None, "eth0", r2)) \
        == "route 10.0.0.0/8 metric 5 dev eth0"


def test_an_object_rewritten_three_times_in_a_window_flaps_until_left_alone() -> None:
    f = FlapDetector(count=3, window=60.0, forget=600.0)
    assert f.record(["x"], 0.0) == ([], [])
    assert f.record(["x", "y"], 10.0) == ([], [])
    assert f.record(["x"], 20.0) == (["x"], [])
    assert f.record(["x"], 30.0) == ([], ["x"])
    assert [(k, n) for k, n, _s, _l in f.flapping(31.0)] == [("x", 4)]
    assert f.record(["y"], 200.0) == ([], [])  # y's first rewrite left the window long ago
    assert f.flapping(700.0) == []  # x left alone for FORGET
    f.record(["z"], 0.0)
    f.record(["z"], 1.0)
    f.reset()  # a new generation
    assert f.record(["z"], 2.0) == ([], [])


def test_feeder_pings_while_progress_comes_and_stops_when_stuck() -> None:
    f = Feeder(timeout=10.0, now=0.0)  # ping every 5 s, a step may take up to 10 s
    assert f.due(0.0)
    assert not f.due(4.0)
    f.alive(4.0)
    assert f.due(5.0)
    assert f.due(10.0)  # last progress 6 s ago: a step may take that long
    assert not f.due(15.0)  # stuck for 11 s: no more pings, systemd kills it 10 s after the last
    assert not f.due(30.0)
    f.alive(31.0)
    assert f.due(31.0)


def test_probe_budget_is_clamped_to_the_watchdog_with_a_message() -> None:
    probes = (Probe(ipaddress.ip_address("192.0.2.1"), "web", tries=20, timeout=30.0),
              Probe(ipaddress.ip_address("192.0.2.2"), None, tries=3, timeout=1.0))
    spec = Spec(version=1, probes=probes)
    same, message = clamp_probes(spec, 1000.0)
    assert same is spec and message is None
    clamped, message = clamp_probes(spec, 30.0)
    assert probe_budget(clamped.probes) <= 30.0
    assert all(p.tries >= 1 for p in clamped.probes)
    assert message is not None and "603s" in message and "30s" in message


def test_settling_of_namespaces_a_repair_did_not_read_is_carried_over() -> None:
    from ipvland.daemon import carry_settling
    from ipvland.model import Settling

    a = Settling("a", "address 2001:db8::1/64 dev a0 netns a", "IPv6 duplicate address detection in progress")
    b = Settling("b", "address 2001:db8::2/64 dev b0 netns b", "IPv6 duplicate address detection in progress")
    full = carry_settling({}, None, [a, b])
    assert full == {"a": (a.describe(),), "b": (b.describe(),)}
    # A repair in b alone, where DAD ended: a is still settling, b is not.
    assert carry_settling(full, frozenset({"b"}), []) == {"a": (a.describe(),)}
    # A full reconcile says everything afresh.
    assert carry_settling(full, None, []) == {}


def test_a_rollback_is_remembered_across_a_restart_until_the_files_change() -> None:
    from ipvland.enforce import from_record

    before = ConfigChoice()
    assert before.record() is None
    before.loaded(A, "a" * 64, 0.0)
    before.reconciled(None, None)
    before.loaded(B, "b" * 64, 1.0)
    before.reconciled(replace(rolled(2, "b" * 64), restored_config="version: 1\n"), RESTORED)
    record = before.record()
    assert record is not None and record["generation"] == 2 and record["restored_config"] == "version: 1\n"
    import json
    remembered = from_record(json.loads(json.dumps(record)))  # as the file holds it
    assert remembered == replace(rolled(2, "b" * 64), restored_config="version: 1\n")

    after = ConfigChoice()  # the restarted daemon
    after.remember(remembered, RESTORED)
    assert after.enforced is RESTORED and after.is_rolled_back and not after.rollback_allowed
    assert "rolled back before the daemon restarted" in after.reason
    assert after.loaded(B, "b" * 64, 2.0) == "refused"  # the same files: not applied again
    assert after.enforced is RESTORED and after.record() == record
    assert after.loaded(B, "c" * 64, 3.0) == "new"  # they changed: a new generation, rollback armed
    assert after.generation == 3 and after.enforced is B and after.rollback_allowed
    assert after.record() is None  # the daemon removes the file


def test_a_record_that_is_not_one_is_refused() -> None:
    from ipvland.enforce import from_record, to_record

    good = to_record(rolled(2, "b" * 64))
    for bad in (None, [], {}, {**good, "schema": 3}, {**good, "generation": "x"}, {**good, "digest": "short"},
                {k: v for k, v in good.items() if k != "broken"}):
        with pytest.raises(ValueError):
            from_record(bad)
    assert from_record(good) == rolled(2, "b" * 64)
    assert good["schema"] == 2 and from_record({**good, "schema": 1}).legacy_digest  # from before an upgrade
    assert to_record(from_record({**good, "schema": 1}))["schema"] == 1  # kept as such until migrated
