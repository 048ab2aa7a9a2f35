"""The bench's choices that shape its figures (issue 13), pure: which device each drift event hits,
and which namespaces a sampled iproute2 baseline runs in. No root, no kernel."""

from __future__ import annotations

import importlib.util
import random
import sys
from collections import Counter
from pathlib import Path

import pytest

from ipvland import flaps

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("ipvland_bench", ROOT / "bench" / "bench.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["ipvland_bench"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("n,events", [(10, 50), (100, 50), (1000, 50), (10, 4), (10, 15)])
def test_drift_events_never_make_a_device_flap(bench, n: int, events: int) -> None:  # type: ignore[no-untyped-def]
    """Regression: at N=10, 50 random events rewrote each device about every 10 s, past the flap
    rule (3 rewrites in 60 s), and the repairs measured the backoff (p99 60 s)."""
    chosen = bench.event_devices(n, events, random.Random(n))
    assert len(chosen) == min(events, 2 * n)
    assert max(Counter(chosen).values()) < flaps.COUNT
    assert set(chosen) <= set(range(n))


def test_no_device_is_hit_twice_before_every_other_was(bench) -> None:  # type: ignore[no-untyped-def]
    chosen = bench.event_devices(10, 20, random.Random(7))
    assert sorted(chosen[:10]) == list(range(10)) and sorted(chosen[10:]) == list(range(10))


def test_the_events_are_seeded(bench) -> None:  # type: ignore[no-untyped-def]
    assert bench.event_devices(100, 50, random.Random(3)) == bench.event_devices(100, 50, random.Random(3))


@pytest.mark.parametrize("total,sample,expect", [(100, 25, 25), (1000, 25, 25), (10, 25, 10), (100, None, 100),
                                                  (30, 25, 15)])
def test_a_sample_is_evenly_spread(bench, total: int, sample: int | None, expect: int) -> None:  # type: ignore[no-untyped-def]
    every = [f"bn{i}" for i in range(total)]
    chosen = bench.spread(every, sample)
    assert len(chosen) == expect and len(set(chosen)) == expect and set(chosen) <= set(every)
    assert chosen[0] == "bn0" and int(chosen[-1][2:]) >= total - total // expect  # reaches the end


def test_a_sampled_baseline_expects_only_what_it_built(bench) -> None:  # type: ignore[no-untyped-def]
    bench.GROUP = 10
    assert bench.expected_census(100) == {"devices": 100, "up": 100, "addresses": 200, "routes": 100,
                                          "neighbors": 10}
    assert bench.expected_census(100, {"bn0", "bn5"}, 2) == {"devices": 20, "up": 20, "addresses": 40,
                                                             "routes": 20, "neighbors": 2}
