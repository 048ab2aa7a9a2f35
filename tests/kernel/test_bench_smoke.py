"""The benchmark still works (issue 6): `bench/run --sizes 10`, every workload, few repetitions.

Benchmarks are not tests: nothing here looks at a time. It checks that the JSON has every key and
that the counts that are not timings hold: a no-op reconcile sends no netlink write, one drifted
field costs exactly one. This already runs on an IPVLAN kernel, so bench/run takes its direct path
(in the VM: the driver itself; on an IPVLAN host: throwaway namespaces), not another VM.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_bench_runs_at_size_10(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    r = subprocess.run(
        [str(REPO / "bench" / "run"), "--sizes", "10", "--json", str(out),
         "--events", "4", "--idle-seconds", "2", "--noop-runs", "2", "--startup-timeout", "240",
         "--steady-seconds", "3"],
        capture_output=True, text=True, cwd=REPO, timeout=900, check=False)
    assert r.returncode == 0, f"stdout:\n{r.stdout[-3000:]}\nstderr:\n{r.stderr[-5000:]}"
    data = json.loads(out.read_text())
    for key in ("cold_apply_ratio", "noop_ratio", "repair_p50_ms", "repair_p99_ms", "noop_writes",
                "one_drift_writes", "rss_mb", "idle_cpu_percent", "idle_window_s"):
        assert key in data, (key, data)
    assert "noop_growth_100_to_1000" not in data  # only when both sizes ran
    assert data["noop_writes"] == 0
    assert data["one_drift_writes"] == 1
    size = data["sizes"]["10"]
    assert size["cold_ipvland"]["ok"] and size["cold_ipvland"]["census_ok"]
    assert size["repair_timeouts"] == 0 and len(size["repair_ms"]) == 4
    assert size["idle_reconciles"] >= 0 and size["settle_s"] >= 3.0
    assert data["cold_apply_ratio"] > 0 and data["noop_ratio"] > 0
    assert 0 < data["repair_p50_ms"] <= data["repair_p99_ms"]
    assert 0 < data["rss_mb"] < 1024
    assert 0 <= data["idle_cpu_percent"] <= 200
    assert 0 <= data["steady_cpu_percent_default"] <= 200 and data["steady_window_s"] >= 3.0  # issue 13
    assert size["default_interval_s"] == 300 and size["steady_reconciles"] >= 0
    assert "| N |" in r.stdout  # the table
    # issue 13: the per-ns layout (one ipvlan per namespace) ran too, at the largest size
    for key in ("repair_p50_ms_per_ns", "repair_p99_ms_per_ns", "noop_ratio_per_ns", "cold_apply_ratio_per_ns",
                "rss_mb_per_ns", "fds_per_ns"):
        assert key in data, (key, data)
    per_ns = data["sizes_per_ns"]["10"]
    assert per_ns["namespaces"] == 10 and per_ns["cold_ipvland"]["census_ok"]
    assert per_ns["noop_writes"] == 0 and per_ns["one_drift_writes"] == 1
    assert per_ns["repair_timeouts"] == 0 and len(per_ns["repair_ms"]) == 4
    assert data["fds_per_ns"] > 10  # a socket per namespace at least


def test_the_resync_profile_runs_at_size_10(tmp_path: Path) -> None:
    """`bench/run --profile-resync N` (issue 13): the daemon's resync in process, then workload 6."""
    out = tmp_path / "resync.json"
    r = subprocess.run(
        [str(REPO / "bench" / "run"), "--profile-resync", "10", "--layout", "tens", "--noop-runs", "2",
         "--steady-seconds", "2", "--json", str(out)],
        capture_output=True, text=True, cwd=REPO, timeout=600, check=False)
    assert r.returncode == 0, f"stdout:\n{r.stdout[-3000:]}\nstderr:\n{r.stderr[-5000:]}"
    data = json.loads(out.read_text())
    assert data["n"] == 10 and len(data["resync_cpu_s"]) == 2 and all(c > 0 for c in data["resync_cpu_s"])
    assert 0 <= data["steady_cpu_percent_default"] <= 200 and data["steady_window_s"] >= 2.0
    assert "daemon resync N=10" in out.with_suffix(".profile.txt").read_text()
