"""Prometheus metrics (issue 14): the daemon's loop with stub reconciles, its output parsed with
prometheus_client's own parser, the textfile and the HTTP endpoint; `ipvland run` as a real process."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ipvland import daemon as daemon_mod
from ipvland.apply import Outcome
from ipvland.metrics import Metrics, parse_listen
from ipvland.model import AddressAdd, Device, LinkMtuSet, Parent, Plan, Probe, Route, Spec
from ipvland.probe import ProbeResult
from ipvland.reconcile import Report, Rollback

ROOT = Path(__file__).resolve().parents[2]


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            assert s.timestamp is None  # node_exporter's textfile collector refuses timestamps
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(text: str, name: str, **labels: str) -> float:
    return samples(text)[(name, tuple(sorted(labels.items())))]


def wait(pred: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


SPEC = Spec(version=1, sources=("c",), probes=(Probe(ipaddress.ip_address("192.0.2.1"), "web"),), parents=(
    Parent("eth0", routes=(Route(ipaddress.ip_network("198.51.100.7/32")),), devices=(
        Device("web0", "eth0", netns="web", addresses=(ipaddress.ip_interface("192.0.2.10/24"),
                                                       ipaddress.ip_interface("2001:db8::10/64"))),)),),
    files_sha256="5e" * 32)


def mtu_change() -> LinkMtuSet:
    return LinkMtuSet("web", "web0", 1500, 1400)


def addr_change() -> AddressAdd:
    return AddressAdd("web", "web0", ipaddress.ip_interface("192.0.2.10/24"))


class Stub:
    """A reconcile that returns the next of a list of reports."""

    def __init__(self) -> None:
        self.reports: list[Report] = []

    def __call__(self, spec: Spec, kernel: Any, **_: Any) -> Report:
        if self.reports:
            return self.reports.pop(0)
        return Report(Plan(), (), Plan(), time.time(), 0.0)


@pytest.fixture
def run_daemon(tmp_path: Path) -> Any:
    threads: list[tuple[daemon_mod.Daemon, threading.Thread]] = []

    def start(metrics: Metrics, stub: Stub, load: Callable[[Path], Spec] = lambda p: SPEC) -> daemon_mod.Daemon:
        config = tmp_path / "config.yaml"
        config.write_text("x")
        d = daemon_mod.Daemon(config, state_dir=tmp_path / "state", load_fn=load, reconcile_fn=stub,
                              kernel_factory=object, namespaces_fn=lambda s, k: frozenset(), watch_files=False,
                              watch_netlink=False, debounce=0.01, max_delay=0.05, quiet=0.01)
        d.observer = metrics.observe
        t = threading.Thread(target=d.serve, daemon=True)
        t.start()
        threads.append((d, t))
        return d

    yield start
    for d, t in threads:
        d.request_stop()
        t.join(10)


def test_the_textfile_after_each_reconcile_parses_and_says_what_happened(tmp_path: Path, run_daemon: Any) -> None:
    out = tmp_path / "ipvland.prom"
    metrics = Metrics(out)
    stub = Stub()
    probe = ProbeResult(SPEC.probes[0], ok=True, tries=1, rtt_ms=0.5)
    stub.reports = [Report(Plan(), (Outcome(addr_change()),), Plan(), time.time(), 0.1, probes=(probe,))]
    d = run_daemon(metrics, stub)
    wait(lambda: out.exists() and value(out.read_text(), "ipvland_reconciles_total", trigger="start", result="ok") == 1)
    text = out.read_text()
    assert value(text, "ipvland_config_valid") == 1 and value(text, "ipvland_config_generation") == 1
    assert value(text, "ipvland_managed_objects", kind="device") == 1
    assert value(text, "ipvland_managed_objects", kind="address") == 2
    assert value(text, "ipvland_managed_objects", kind="route") == 1
    assert value(text, "ipvland_managed_objects", kind="netns") == 1
    assert value(text, "ipvland_reconcile_duration_seconds_count") == 1
    assert value(text, "ipvland_last_converged_timestamp_seconds") == pytest.approx(time.time(), abs=60)
    assert value(text, "ipvland_probe_success", netns="web", target="192.0.2.1") == 1
    assert value(text, "ipvland_probe_runs_total", result="ok") == 1
    # the first reconcile of a config is no drift repair
    assert ("ipvland_drift_repairs_total", (("kind", "address"),)) not in samples(text)
    info = samples(text)
    assert any(name == "ipvland_info" and dict(labels)["config_sha256"] for (name, labels) in info)
    assert not any(name.endswith("_created") for (name, _) in info)

    # drift: the same config, a netlink event, a failing change and a rollback
    rollback = Rollback(broken=(probe,), restore=None, error="the previous state could not be planned")
    failed = Outcome(mtu_change(), error="EPERM")
    stub.reports = [Report(Plan(), (Outcome(addr_change()), Outcome(mtu_change()), failed), Plan(), time.time(),
                           2.0, rollback=rollback)]
    d.on_netlink_event("web", 1)
    wait(lambda: value(out.read_text(), "ipvland_reconciles_total", trigger="netlink", result="errors") == 1)
    text = out.read_text()
    assert value(text, "ipvland_drift_repairs_total", kind="address") == 1
    assert value(text, "ipvland_drift_repairs_total", kind="mtu") == 1
    assert value(text, "ipvland_objects_not_converged", reason="failed") == 1
    assert value(text, "ipvland_reconcile_duration_seconds_count") == 2
    assert value(text, "ipvland_rollbacks_total", restored="false") == 1
    assert sorted(os.listdir(tmp_path)) == ["config.yaml", "ipvland.prom", "state"]  # no temp file left


def test_an_invalid_config_shows_as_config_valid_0_and_keeps_the_generation(tmp_path: Path, run_daemon: Any) -> None:
    from ipvland.spec import ConfigError, SpecError

    out = tmp_path / "m.prom"
    state = {"bad": False}

    def load(path: Path) -> Spec:
        if state["bad"]:
            raise SpecError([ConfigError(str(path), 1, 1, "", "broken")])
        return SPEC

    d = run_daemon(Metrics(out), Stub(), load)
    wait(lambda: out.exists() and value(out.read_text(), "ipvland_config_valid") == 1)
    state["bad"] = True
    d.request_reload()
    wait(lambda: value(out.read_text(), "ipvland_config_valid") == 0)
    assert value(out.read_text(), "ipvland_config_generation") == 1


def test_the_endpoint_serves_the_same_metrics(tmp_path: Path, run_daemon: Any) -> None:
    metrics = Metrics(None)
    metrics.listen("127.0.0.1", 0)
    try:
        port = metrics.server[0].server_port
        run_daemon(metrics, Stub())

        def scrape() -> str:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                assert r.headers["Content-Type"].startswith("text/plain")
                return str(r.read().decode())
        wait(lambda: value(scrape(), "ipvland_reconciles_total", trigger="start", result="ok") == 1)
        assert value(scrape(), "ipvland_managed_objects", kind="parent") == 1
    finally:
        metrics.stop()


@pytest.mark.parametrize(("text", "want"), [("127.0.0.1:9821", ("127.0.0.1", 9821)), ("[::1]:80", ("::1", 80)),
                                            ("0.0.0.0:1", ("0.0.0.0", 1))])
def test_listen_addresses(text: str, want: tuple[str, int]) -> None:
    assert parse_listen(text) == want


@pytest.mark.parametrize("text", ["9821", ":9821", "localhost:", "a:0", "a:65536", "a:x"])
def test_bad_listen_addresses_are_usage_errors(text: str) -> None:
    with pytest.raises(ValueError):
        parse_listen(text)
    r = subprocess.run([sys.executable, "-m", "ipvland", "run", "--metrics-listen", text], cwd=ROOT,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "--metrics-listen" in r.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for a network namespace")
def test_ipvland_run_writes_the_file_and_serves_the_endpoint(tmp_path: Path) -> None:
    # The real command in a throwaway network namespace, with nothing to manage (no ipvlan needed).
    # --host selects the drop-in meant for node-a (a parent without devices: nothing to change).
    config = tmp_path / "config.yaml"
    config.write_text("version: 1\nparents: {}\n")
    (tmp_path / "config.d").mkdir()
    (tmp_path / "config.d" / "a.yaml").write_text("version: 1\nhosts: [node-a]\nparents: {lo: {}}\n")
    out = tmp_path / "m.prom"
    script = (f"ip link set lo up && exec {sys.executable} -m ipvland run -c {config} --state-dir {tmp_path / 's'} "
              f"--metrics-file {out} --metrics-listen 127.0.0.1:9821 --host node-a")
    p = subprocess.Popen(["unshare", "--net", "sh", "-c", script], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        wait(lambda: out.exists() and value(out.read_text(), "ipvland_reconciles_total",
                                            trigger="start", result="ok") == 1, timeout=30)
        scrape = subprocess.run(["nsenter", f"--net=/proc/{p.pid}/ns/net", sys.executable, "-c",
                                 "import urllib.request;print(urllib.request.urlopen("
                                 "'http://127.0.0.1:9821/metrics', timeout=5).read().decode())"],
                                capture_output=True, text=True, timeout=30)
        assert scrape.returncode == 0, scrape.stderr
        assert value(scrape.stdout, "ipvland_config_valid") == 1
        assert value(scrape.stdout, "ipvland_managed_objects", kind="device") == 0
        assert value(scrape.stdout, "ipvland_managed_objects", kind="parent") == 1  # node-a's drop-in
    finally:
        p.terminate()
        _, err = p.communicate(timeout=30)
    assert p.returncode == 0, err


# ---------------------------------------------------------------- deploy/prometheus/alerts.yaml

ALERTS = ROOT / "deploy" / "prometheus"


def exported_names() -> set[str]:
    from prometheus_client import generate_latest

    text = generate_latest(Metrics(None).registry).decode()
    families = {f.name for f in text_string_to_metric_families(text)}  # declared even before a first sample
    return families | {name for name, _ in samples(text)}


def test_the_alert_rules_use_only_metrics_ipvland_exports() -> None:
    import re

    import yaml

    doc = yaml.safe_load((ALERTS / "alerts.yaml").read_text())
    rules = [r for g in doc["groups"] for r in g["rules"]]
    assert {r["alert"] for r in rules} >= {"IpvlandNotConverged", "IpvlandConfigInvalid", "IpvlandFlapping"}
    names = exported_names()
    for rule in rules:
        used = set(re.findall(r"ipvland_[a-z_]+", rule["expr"]))
        assert used and used <= names, (rule["alert"], used - names)


def promtool() -> str:
    """promtool: on PATH, or taken out of Debian's prometheus package (apt-get download, not installed)."""
    import shutil

    found = shutil.which("promtool")
    if found:
        return found
    cache = ROOT / ".cache" / "promtool"
    binary = cache / "usr" / "bin" / "promtool"
    if not binary.exists():
        cache.mkdir(parents=True, exist_ok=True)
        got = subprocess.run(["apt-get", "download", "prometheus"], cwd=cache, capture_output=True, text=True,
                             timeout=300) if shutil.which("apt-get") else None
        debs = sorted(cache.glob("prometheus_*.deb"))
        if got is None or not debs:
            pytest.skip("no promtool: not on PATH, and Debian's prometheus package cannot be downloaded here")
        subprocess.run(["dpkg-deb", "-x", str(debs[-1]), str(cache)], check=True, timeout=120)
        for deb in debs:
            deb.unlink()
    return str(binary)


def test_promtool_checks_the_rules_and_their_unit_tests_pass() -> None:
    tool = promtool()
    r = subprocess.run([tool, "check", "rules", "alerts.yaml"], cwd=ALERTS, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "SUCCESS: 5 rules found" in r.stdout, r.stdout + r.stderr
    r = subprocess.run([tool, "test", "rules", "alerts.test.yaml"], cwd=ALERTS, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and "SUCCESS" in r.stdout, r.stdout + r.stderr


def test_promtool_finds_nothing_to_say_about_the_metric_names(tmp_path: Path, run_daemon: Any) -> None:
    out = tmp_path / "m.prom"
    run_daemon(Metrics(out), Stub())
    wait(lambda: out.exists())
    r = subprocess.run([promtool(), "check", "metrics"], input=out.read_text(), capture_output=True, text=True,
                       timeout=60)
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
