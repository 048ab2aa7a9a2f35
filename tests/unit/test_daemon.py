"""The daemon's own logic: triggers, debounce, no overlap, last good config, stop, retries, notify.

The reconcile is a recording function here (injected), so these tests say nothing about the kernel;
tests/kernel/test_daemon_kernel.py runs the real daemon against a real kernel in the VM.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ipvland import status
from ipvland.apply import Outcome
from ipvland.daemon import Daemon, JournalFormatter
from ipvland.model import AddressAdd, Conflict, Device, Flag, LinkCreate, Mode, Parent, Plan, Probe, Spec
from ipvland.probe import ProbeResult
from ipvland.reconcile import Report
from ipvland.spec import ConfigError, SpecError


def fake_load(path: Path) -> Spec:
    """A stand-in loader: a file starting with 'bad' is invalid; otherwise its text is the spec's identity."""
    text = path.read_text()
    if not text.strip() or text.startswith("bad"):
        raise SpecError([ConfigError(str(path), 2, 3, "parents", "broken on purpose")])
    return Spec(version=1, sources=(str(path), text.strip()), files_sha256=hashlib.sha256(text.encode()).hexdigest())


def empty_report(spec: Spec, kernel: Any) -> Report:
    return Report(Plan(), (), Plan(), time.time(), 0.0)


class Recorder:
    """A reconcile function that records calls, checks overlap and can be slowed or failed."""

    def __init__(self, delay: float = 0.0, result: Callable[[Spec, Any], Report] = empty_report) -> None:
        self.calls: list[tuple[Spec, float]] = []
        self.scopes: list[frozenset[str | None] | None] = []  # per call: None is a full reconcile
        self.delay = delay
        self.result = result
        self.running = 0
        self.max_running = 0
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)

    def __call__(self, spec: Spec, kernel: Any, scope: frozenset[str | None] | None = None) -> Report:
        with self.lock:
            self.scopes.append(scope)
            self.running += 1
            self.max_running = max(self.max_running, self.running)
        try:
            if self.delay:
                time.sleep(self.delay)
            return self.result(spec, kernel)
        finally:
            with self.cond:
                self.running -= 1
                self.calls.append((spec, time.monotonic()))
                self.cond.notify_all()

    def wait_calls(self, n: int, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.calls) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"expected {n} reconciles, got {len(self.calls)}")
                self.cond.wait(left)

    @property
    def count(self) -> int:
        with self.lock:
            return len(self.calls)


class Notes:
    def __init__(self) -> None:
        self.sent: list[tuple[str, ...]] = []
        self.cond = threading.Condition()

    def __call__(self, *fields: str) -> bool:
        with self.cond:
            self.sent.append(fields)
            self.cond.notify_all()
        return True

    def flat(self) -> list[str]:
        with self.cond:
            return [f for msg in self.sent for f in msg]

    def wait_for(self, prefix: str, n: int = 1, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while sum(f.startswith(prefix) for m in self.sent for f in m) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {prefix} x{n}: {self.sent}")
                self.cond.wait(left)


class Running:
    def __init__(self, d: Daemon) -> None:
        self.daemon = d
        self.rc: int | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.rc = self.daemon.serve()

    def stop(self) -> int | None:
        self.daemon.request_stop()
        self.thread.join(5)
        assert not self.thread.is_alive()
        return self.rc


@pytest.fixture
def config(tmp_path: Path) -> Path:
    p = tmp_path / "etc" / "config.yaml"
    p.parent.mkdir()
    p.write_text("good-1\n")
    return p


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Callable[..., tuple[Daemon, Recorder, Notes, Running]]]:
    started: list[Running] = []

    def factory(config: Path, rec: Recorder | None = None, **kw: Any) -> tuple[Daemon, Recorder, Notes, Running]:
        rec = rec or Recorder()
        notes = Notes()
        kw.setdefault("interval", 60.0)
        kw.setdefault("watch_files", False)
        kw.setdefault("debounce", 0.05)
        kw.setdefault("max_delay", 0.3)
        kw.setdefault("kernel_factory", object)
        kw.setdefault("load_fn", fake_load)
        kw.setdefault("reconcile_fn", rec)
        d = Daemon(config, state_dir=tmp_path / "state",
                   namespaces_fn=lambda s, k: frozenset({None}), watch_netlink=False,
                   notify=notes, **kw)
        r = Running(d)
        started.append(r)
        return d, rec, notes, r

    yield factory
    for r in started:
        if r.thread.is_alive():
            r.stop()


def test_first_reconcile_then_ready_and_status(config: Path, make: Any, tmp_path: Path) -> None:
    _d, rec, notes, r = make(config)
    notes.wait_for("READY=1")
    assert rec.count == 1 and rec.calls[0][0].sources[1] == "good-1"
    s = status.read(tmp_path / "state")
    assert s["config"]["generation"] == 1
    assert s["last_reconcile"]["result"] == "ok"
    assert s["last_reconcile"]["trigger"] == ["start"]
    assert any(f.startswith("STATUS=config generation 1; ok") for f in notes.flat())
    assert r.stop() == 0
    assert "STOPPING=1" in notes.flat()


def test_a_burst_becomes_one_reconcile(config: Path, make: Any) -> None:
    d, rec, _notes, _r = make(config, debounce=0.1, max_delay=1.0)
    rec.wait_calls(1)
    for _ in range(50):
        d.request("netlink host")
    rec.wait_calls(2)
    time.sleep(0.3)  # longer than the debounce: a second reconcile would have started by now
    assert rec.count == 2


def test_a_flood_is_paced_by_max_delay_and_not_starved(config: Path, make: Any) -> None:
    d, rec, _notes, _r = make(config, debounce=0.1, max_delay=0.2)
    rec.wait_calls(1)
    end = time.monotonic() + 1.0
    while time.monotonic() < end:  # a request every 2 ms: 500 of them
        d.request("netlink host")
        time.sleep(0.002)
    time.sleep(0.15)
    n = rec.count - 1
    assert 3 <= n <= 7, n  # ~1.0 / 0.2 (+ the tail), never one per event, never none during the flood


def test_reconciles_never_overlap(config: Path, make: Any) -> None:
    rec = Recorder(delay=0.05)
    d, rec, _notes, _r = make(config, rec, debounce=0.0, max_delay=0.0)
    rec.wait_calls(1)

    def hammer() -> None:
        for _ in range(40):
            d.request("x")
            time.sleep(0.005)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rec.wait_calls(3)
    assert rec.max_running == 1


def test_bad_config_keeps_the_last_good_one(config: Path, make: Any, tmp_path: Path,
                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ipvland")
    d, rec, notes, _r = make(config)
    rec.wait_calls(1)
    config.write_text("bad: [\n")
    d.on_file_event("modified")
    rec.wait_calls(2)
    notes.wait_for("STATUS=", 2)  # the status is written after the reconcile
    assert rec.calls[1][0].sources[1] == "good-1"  # still enforcing generation 1
    s = status.read(tmp_path / "state")
    assert s["config"]["generation"] == 1
    assert s["config"]["error"]["errors"] == [f"{config}:2:3: parents: broken on purpose"]
    assert f"{config}:2:3: parents: broken on purpose" in caplog.text
    assert "enforcing generation 1: the config on disk has errors" in caplog.text
    d.on_file_event("modified")  # the same error again is not logged again
    rec.wait_calls(3)
    assert caplog.text.count("broken on purpose") == 1
    config.write_text("good-2\n")
    d.on_file_event("modified")
    rec.wait_calls(4)
    notes.wait_for("STATUS=", 4)
    assert rec.calls[3][0].sources[1] == "good-2"
    s = status.read(tmp_path / "state")
    assert s["config"]["generation"] == 2 and s["config"]["error"] is None


def test_missing_or_empty_file_is_a_config_error_too(config: Path, make: Any, tmp_path: Path) -> None:
    d, rec, notes, _r = make(config)
    rec.wait_calls(1)
    config.unlink()
    d.on_file_event("modified")
    notes.wait_for("STATUS=", 2)
    assert status.read(tmp_path / "state")["config"]["error"]["errors"][0].startswith(str(config))
    config.write_text("")
    d.on_file_event("modified")
    rec.wait_calls(3)
    assert rec.calls[2][0].sources[1] == "good-1"


def test_unchanged_config_does_not_bump_the_generation(config: Path, make: Any) -> None:
    d, rec, _notes, _r = make(config)
    rec.wait_calls(1)
    d.request_reload()
    rec.wait_calls(2)
    assert d.generation == 1


def test_start_without_a_good_config_touches_nothing_then_picks_it_up(config: Path, make: Any,
                                                                       tmp_path: Path) -> None:
    config.write_text("bad\n")
    _d, rec, notes, _r = make(config, watch_files=True)  # the real watcher brings the fix in
    notes.wait_for("READY=1")  # up and reporting, although there is nothing to enforce
    assert rec.count == 0
    s = status.read(tmp_path / "state")
    assert s["last_reconcile"]["result"] == "no-config"
    assert s["config"]["error"] is not None and s["config"]["generation"] == 0
    tmp = config.with_name(".config.yaml.tmp")
    tmp.write_text("good-fixed\n")
    t0 = time.monotonic()
    tmp.rename(config)
    rec.wait_calls(1, timeout=3)
    assert time.monotonic() - t0 < 1.0
    assert rec.calls[0][0].sources[1] == "good-fixed"


def test_file_watch_triggers_a_debounced_reload(config: Path, make: Any) -> None:
    _d, rec, _notes, _r = make(config, watch_files=True, debounce=0.1)
    rec.wait_calls(1)
    for i in range(5):  # a sync tool writing several files in a row
        (config.parent / "config.d").mkdir(exist_ok=True)
        (config.parent / "config.d" / f"{i}.yaml").write_text("x")
    config.write_text("good-2\n")
    rec.wait_calls(2)
    time.sleep(0.3)
    assert rec.count == 2
    assert rec.calls[1][0].sources[1] == "good-2"


def test_sighup_reload_protocol(config: Path, make: Any) -> None:
    d, rec, notes, _r = make(config)
    notes.wait_for("READY=1")
    config.write_text("good-2\n")
    d.request_reload()
    notes.wait_for("READY=1", n=2)
    flat = notes.flat()
    i = flat.index("RELOADING=1")
    assert flat[i + 1].startswith("MONOTONIC_USEC=")
    usec = int(flat[i + 1].split("=")[1])
    assert abs(usec - time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000) < 5_000_000
    assert "READY=1" in flat[i + 2:]
    assert rec.calls[-1][0].sources[1] == "good-2"


def test_stop_lets_the_running_reconcile_finish(config: Path, make: Any) -> None:
    gate = threading.Event()
    entered = threading.Event()

    def slow(spec: Spec, kernel: Any) -> Report:
        entered.set()
        assert gate.wait(5)
        return empty_report(spec, kernel)

    rec = Recorder(result=slow)
    d, rec, _notes, r = make(config, rec)
    assert entered.wait(5)
    d.request_stop()
    time.sleep(0.1)
    assert r.thread.is_alive()  # still in the reconcile
    gate.set()
    r.thread.join(5)
    assert r.rc == 0
    assert rec.count == 1


def test_periodic_resync_rereads_the_config(config: Path, make: Any) -> None:
    d, rec, notes, _r = make(config, interval=0.15)
    rec.wait_calls(3, timeout=2)
    config.write_text("good-2\n")
    n = rec.count
    rec.wait_calls(n + 1, timeout=2)
    notes.wait_for("STATUS=", n + 1)
    assert rec.calls[-1][0].sources[1] == "good-2"
    assert status.read(d.state_dir)["last_reconcile"]["trigger"] == ["resync"]


def test_a_failing_reconcile_is_retried_with_a_new_kernel(config: Path, make: Any) -> None:
    kernels: list[object] = []

    def factory() -> object:
        k = object()
        kernels.append(k)
        return k

    def failing(spec: Spec, kernel: Any) -> Report:
        if len(kernels) < 2:
            raise OSError(105, "No buffer space available")
        return empty_report(spec, kernel)

    rec = Recorder(result=failing)
    d, rec, notes, _r = make(config, rec, kernel_factory=factory)
    notes.wait_for("STATUS=", 1)
    s = status.read(d.state_dir)
    assert s["last_reconcile"]["result"] == "failed"
    assert "No buffer space" in s["last_reconcile"]["errors"][0]["error"]
    notes.wait_for("STATUS=", 2, timeout=3)  # retried after ~1 s although nothing asked (interval 60 s)
    assert len(kernels) == 2
    assert status.read(d.state_dir)["last_reconcile"]["result"] == "ok"


def test_outcomes_become_log_lines_and_status(config: Path, make: Any, caplog: pytest.LogCaptureFixture) -> None:
    import ipaddress

    dev = Device("web0", "eth0", addresses=(ipaddress.ip_interface("10.0.0.2/24"),))
    create = LinkCreate(dev, Mode.L2, Flag.BRIDGE, "ipvtmp-00000000")
    add = AddressAdd(None, "web0", ipaddress.ip_interface("10.0.0.2/24"))
    pending = Conflict("link db0", "parent eth9 is missing")
    probe = Probe(ipaddress.ip_address("192.0.2.1"), netns="web")

    def result(spec: Spec, kernel: Any) -> Report:
        plan = Plan((create, add), (), (pending,))
        return Report(plan, (Outcome(create), Outcome(add, error="EADDRINUSE")), Plan(pending=(pending,)),
                      time.time(), 0.01, probes=(ProbeResult(probe, ok=False, tries=3, error="timeout"),))

    caplog.set_level(logging.INFO, logger="ipvland")
    d, _rec, notes, _r = make(config, Recorder(result=result))
    notes.wait_for("READY=1")
    s = status.read(d.state_dir)
    last = s["last_reconcile"]
    assert last["changes"] == [create.describe()]
    assert last["errors"] == [{"object": add.describe(), "error": "EADDRINUSE"},
                              {"object": "probe web -> 192.0.2.1", "error": "timeout"}]
    assert last["probes"] == ["probe netns web -> 192.0.2.1: FAILED after 3 tries: timeout"]
    assert last["result"] == "errors"
    assert s["pending"] == ["! link db0: parent eth9 is missing"]
    assert s["changes_total"] == 1
    lines = [rec_.getMessage() for rec_ in caplog.records]
    assert "pending: ! link db0: parent eth9 is missing" in lines
    # apply logs each change and failure itself; the daemon must not print them a second time.
    assert not any(create.describe() in line or "EADDRINUSE" in line for line in lines), lines


def test_idle_daemon_does_not_poll(config: Path, make: Any) -> None:
    d, rec, notes, _r = make(config, interval=60.0)
    notes.wait_for("READY=1")
    waits = []
    original = d._cond.wait

    def counting(timeout: float | None = None) -> bool:
        waits.append(timeout)
        return original(timeout)

    d._cond.wait = counting  # type: ignore[method-assign]
    d.request("nudge")  # so the loop re-enters wait() through the counting wrapper
    rec.wait_calls(2)
    time.sleep(0.5)
    assert len(waits) <= 3, waits  # one long sleep until the next resync, not a polling loop
    assert max(w for w in waits if w is not None) > 50


def test_watchdog_pings_at_half_the_interval(config: Path, make: Any) -> None:
    _d, _rec, notes, _r = make(config, watchdog_usec=100_000)
    notes.wait_for("WATCHDOG=1", n=4, timeout=1.0)  # every 50 ms while idle


def test_netlink_events_are_counted_as_drift(config: Path, make: Any) -> None:
    d, rec, notes, _r = make(config)
    rec.wait_calls(1)
    d.on_netlink_event("web", 3)
    notes.wait_for("STATUS=", 2)
    s = status.read(d.state_dir)
    assert s["drift"]["events"] == 3 and s["drift"]["last"] is not None
    assert s["last_reconcile"]["trigger"] == ["netlink web"]


def test_journal_formatter_uses_syslog_prefixes_and_no_timestamp() -> None:
    f = JournalFormatter("%(message)s")
    rec = logging.LogRecord("ipvland", logging.ERROR, __file__, 1, "config: %s", ("c.yaml:1:1: x",), None)
    assert f.format(rec) == "<3>config: c.yaml:1:1: x"
    rec = logging.LogRecord("ipvland", logging.INFO, __file__, 1, "+ link a", (), None)
    assert f.format(rec) == "<6>+ link a"


def test_rolled_back_config_is_not_retried_and_the_previous_state_is_enforced(
        config: Path, make: Any, tmp_path: Path) -> None:
    from ipvland.reconcile import Rollback

    previous = Spec(version=1, sources=("<state before apply>",))
    broken = ProbeResult(Probe(ipaddress.ip_address("192.0.2.1"), "web"), False, 3, error="no reply")

    def breaks_probe(spec: Spec, kernel: Any) -> Report:
        if spec is previous:
            return empty_report(spec, kernel)
        restore = empty_report(previous, kernel)
        return Report(Plan(), (), Plan(), time.time(), 0.0, (broken,), Rollback((broken,), restore, previous=previous))

    d, rec, _notes, _r = make(config, rec=Recorder(result=breaks_probe))
    rec.wait_calls(1)
    d.on_file_event("modified")
    rec.wait_calls(2)
    assert rec.calls[1][0] is previous, "after a rollback the restored state is what is enforced"
    s = status.read(tmp_path / "state")
    assert s["rolled_back"]["generation"] == 1 and "no reply" in s["rolled_back"]["broken"][0]
    assert "rolled back: config generation 1" in status.render(s, as_json=False)


def test_netlink_events_after_an_ok_reconcile_repair_only_their_namespaces(config: Path, make: Any) -> None:
    d, rec, _notes, _r = make(config)
    rec.wait_calls(1)
    assert rec.scopes == [None]  # the start reads everything
    d.on_netlink_event("web", 1)
    d.on_netlink_event(None, 2)
    rec.wait_calls(2)
    assert rec.scopes[1] == frozenset({"web", None})
    deadline = time.monotonic() + 5
    while (status.read(d.state_dir) or {}).get("reconciles") != 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert status.read(d.state_dir)["last_reconcile"]["scope"] == [None, "web"]
    # Anything else in the same burst (here a file event) makes it a full one.
    d.on_netlink_event("web", 1)
    d.on_file_event("modified")
    rec.wait_calls(3)
    assert rec.scopes[2] is None


def test_after_a_reconcile_that_did_not_converge_events_read_everything(config: Path, make: Any) -> None:
    def conflicted(spec: Spec, kernel: Any) -> Report:
        p = Plan(conflicts=(Conflict("link web0 netns web", "foreign"),))
        return Report(p, (), p, time.time(), 0.0)

    d, rec, _notes, _r = make(config, Recorder(result=conflicted))
    rec.wait_calls(1)
    d.on_netlink_event("web", 1)
    rec.wait_calls(2)
    assert rec.scopes == [None, None]


def test_resync_runs_an_interval_after_the_last_full_reconcile_whatever_the_drift(config: Path, make: Any) -> None:
    d, rec, _notes, _r = make(config, interval=0.6, debounce=0.01, max_delay=0.02)
    rec.wait_calls(1)
    end = time.monotonic() + 1.5
    while time.monotonic() < end:  # drift every 50 ms would restart a timer that counted from any reconcile
        d.on_netlink_event("web", 1)
        time.sleep(0.05)
    assert None in rec.scopes[1:], rec.scopes  # at least one periodic full resync happened meanwhile
    assert frozenset({"web"}) in rec.scopes


def test_resync_is_not_starved_by_reconciles_slower_than_the_drift(config: Path, make: Any) -> None:
    # Each reconcile takes longer than max_delay and drift never stops: a burst is always due when
    # the loop looks, and the resync must still come first once its time has passed.
    d, rec, _notes, _r = make(config, Recorder(delay=0.3), interval=1.0, debounce=0.05, max_delay=0.1)
    rec.wait_calls(1)
    end = time.monotonic() + 3.0
    while time.monotonic() < end:
        d.on_netlink_event("web", 1)
        time.sleep(0.03)
    assert None in rec.scopes[1:], rec.scopes


# ---------------------------------------------------------------------- issue 11: the daemon never loops


def not_converging(spec: Spec, kernel: Any) -> Report:
    """A reconcile whose verify always finds the same change again (the kernel rewrites it)."""
    add = AddressAdd(None, "app0", ipaddress.ip_interface("10.0.0.2/24"))
    return Report(Plan((add,)), (Outcome(add),), Plan((add,)), time.time(), 0.0)


def test_events_after_a_reconcile_that_did_not_converge_wait_for_the_backoff(config: Path, make: Any) -> None:
    d, rec, _notes, _r = make(config, Recorder(result=not_converging))
    rec.wait_calls(1)
    end = time.monotonic() + 2.5
    while time.monotonic() < end:  # its own echoes, every 20 ms
        d.on_netlink_event(None, 1)
        time.sleep(0.02)
    # held: 1 s, then 2 s; at event speed it would have been ~8
    assert rec.count <= 3, rec.count
    s = status.read(d.state_dir)
    assert s["backoff"] is not None and s["backoff"]["why"] == "the last reconcile did not converge"


def test_an_object_rewritten_again_and_again_is_reported_by_name_and_backed_off(
        config: Path, make: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ipvland")
    add = AddressAdd(None, "app0", ipaddress.ip_interface("192.0.2.11/24"))

    def repairs(spec: Spec, kernel: Any) -> Report:  # converges every time: another agent undoes it
        return Report(Plan((add,)), (Outcome(add),), Plan(), time.time(), 0.0)

    d, rec, _notes, _r = make(config, Recorder(result=repairs))
    rec.wait_calls(1)
    end = time.monotonic() + 3.0
    while time.monotonic() < end:  # the agent deletes it every 50 ms
        d.on_netlink_event(None, 1)
        time.sleep(0.05)
    # 3 at event speed until it flaps, then held 1 s, 2 s: ~5 instead of ~10
    assert rec.count <= 6, rec.count
    s = status.read(d.state_dir)
    assert [f["object"] for f in s["flapping"]] == ["address 192.0.2.11/24 dev app0"]
    assert s["flapping"][0]["rewrites"] >= 3
    assert "flapping: address 192.0.2.11/24 dev app0 rewritten 3 times" in caplog.text


def _probe_breaker(calls: list[tuple[str, bool]], good: Callable[[Spec], bool]) -> Callable[..., Report]:
    """A reconcile_fn under which every spec but the good ones (and the restored state) breaks a probe
    and is rolled back; it records (the spec's last source, whether rollback was armed)."""
    from ipvland.reconcile import Rollback

    previous = Spec(version=1, sources=("<state before apply>",))
    broken = ProbeResult(Probe(ipaddress.ip_address("192.0.2.1"), "web"), False, 3, error="no reply")

    def breaks_probe(spec: Spec, kernel: Any, rollback_on_probe_failure: bool = False, **kw: Any) -> Report:
        calls.append((spec.sources[-1], rollback_on_probe_failure))
        if spec is previous or good(spec):
            return empty_report(spec, kernel)
        return Report(Plan(), (), Plan(), time.time(), 0.0, (broken,),
                      Rollback((broken,), empty_report(previous, kernel), previous=previous,
                               previous_config="version: 1\nparents: {}\n"))

    return breaks_probe


def test_a_rolled_back_generation_is_not_applied_again_and_repairs_never_roll_back(
        config: Path, make: Any, tmp_path: Path) -> None:
    calls: list[tuple[str, bool]] = []
    breaks_probe = _probe_breaker(calls, lambda spec: "good-1" in spec.sources[-1])

    d, _rec, notes, _r = make(config, rollback_on_probe_failure=True, reconcile_fn=breaks_probe)
    notes.wait_for("STATUS=", 1)
    assert calls == [("good-1", True)]  # generation 1's first reconcile: rollback armed
    d.on_netlink_event("web", 1)
    notes.wait_for("STATUS=", 2)
    assert calls[-1] == ("good-1", False)  # a repair: no baseline probes, no rollback
    config.write_text("broken-2\n")
    d.on_file_event("modified")
    notes.wait_for("STATUS=", 3)
    assert calls[-1] == ("broken-2", True)
    for n in range(3):  # resyncs and file events read the same files again
        d.on_file_event("modified")
        notes.wait_for("STATUS=", 4 + n)
    assert [c for c in calls[3:]] == [("<state before apply>", False)] * 3
    s = status.read(tmp_path / "state")
    assert s["config"]["generation"] == 2 and s["config"]["enforced"]["rolled_back"] is True
    assert s["rolled_back"]["generation"] == 2 and s["rolled_back"]["retried"] is False
    config.write_text("broken-2\n# edited\n")  # the files changed: a new generation, tried again
    d.on_file_event("modified")
    notes.wait_for("STATUS=", 7)
    assert calls[-1] == ("broken-2\n# edited", True)
    assert status.read(tmp_path / "state")["config"]["generation"] == 3


def test_a_restarted_daemon_still_refuses_the_rolled_back_generation(
        config: Path, make: Any, tmp_path: Path) -> None:
    """Before: a restart forgot the rollback and applied the config that broke the probes again."""
    from ipvland.enforce import RECORD_FILE

    calls: list[tuple[str, bool]] = []
    breaks_probe = _probe_breaker(calls, lambda spec: "broken" not in spec.sources[-1])

    config.write_text("broken-1\n")
    d, _rec, notes, run = make(config, rollback_on_probe_failure=True, reconcile_fn=breaks_probe)
    notes.wait_for("STATUS=", 1)
    assert calls == [("broken-1", True)]
    record = tmp_path / "state" / RECORD_FILE
    assert record.stat().st_mode & 0o777 == 0o640
    assert run.stop() == 0

    calls.clear()
    d, _rec, notes, run = make(config, rollback_on_probe_failure=True, reconcile_fn=breaks_probe)
    notes.wait_for("STATUS=", 1)
    d.on_file_event("modified")  # the same files read again
    notes.wait_for("STATUS=", 2)
    assert calls == [("<state before generation 1>", False)] * 2, "the restored state, never generation 1"
    s = status.read(tmp_path / "state")
    assert s["config"]["enforced"]["rolled_back"] is True and s["rolled_back"]["generation"] == 1
    assert "before the daemon restarted" in s["config"]["enforced"]["reason"]
    config.write_text("good-2\n")  # the files changed: a new generation, and the record goes
    d.on_file_event("modified")
    notes.wait_for("STATUS=", 3)
    assert calls[-1] == ("good-2", True) and d.generation == 2
    assert not record.exists()
    assert run.stop() == 0


def test_a_file_replaced_while_it_is_read_never_pairs_the_old_config_with_the_new_digest(
        config: Path, make: Any) -> None:
    """Before: the rolled-back files were parsed, then hashed by reading them again; a sync tool that
    replaced them in between made the old (refused) config look like new files, and it was applied
    again (seen on the kernel: test_a_rolled_back_generation_is_not_applied_again_at_resyncs...)."""
    calls: list[tuple[str, bool]] = []
    breaks_probe = _probe_breaker(calls, lambda spec: "broken" not in spec.sources[-1])
    config.write_text("broken-1\n")
    replace_after_read: list[str] = []

    def load_racing_a_sync_tool(path: Path) -> Spec:
        spec = fake_load(path)
        if replace_after_read:
            path.write_text(replace_after_read.pop())  # the new files land right after the parse
        return spec

    d, _rec, notes, _r = make(config, rollback_on_probe_failure=True, reconcile_fn=breaks_probe,
                              load_fn=load_racing_a_sync_tool)
    notes.wait_for("STATUS=", 1)
    assert d.choice.is_rolled_back and calls == [("broken-1", True)]
    replace_after_read.append("good-2\n")
    d.on_file_event("modified")  # reads broken-1 while good-2 replaces it
    notes.wait_for("STATUS=", 2)
    assert calls[-1] == ("<state before apply>", False), "the refused config was applied again"
    d.on_file_event("modified")  # the event of the rename: good-2 read and hashed together
    notes.wait_for("STATUS=", 3)
    assert calls[-1] == ("good-2", True) and d.generation == 2


def test_a_rollback_recorded_before_an_upgrade_is_still_refused(config: Path, make: Any, tmp_path: Path) -> None:
    """Review of issue 13: the digest moved to the bytes parsed (Spec.files_sha256), and a record of
    schema 1 (the files read again) never matched again: a restart after an upgrade applied the
    rolled-back files once more. Its digest is recognised and migrated."""
    import json

    from ipvland.enforce import RECORD_FILE, legacy_files_digest

    calls: list[tuple[str, bool]] = []
    breaks_probe = _probe_breaker(calls, lambda spec: "broken" not in spec.sources[-1])
    config.write_text("broken-1\n")
    record = tmp_path / "state" / RECORD_FILE
    record.parent.mkdir(mode=0o750)
    record.write_text(json.dumps({  # as the version before wrote it
        "schema": 1, "generation": 1, "digest": legacy_files_digest(fake_load(config).sources), "at": 0.0,
        "broken": ["probe web -> 192.0.2.1: FAILED"], "restored": True, "error": None,
        "restored_config": "version: 1\nparents: {}\n"}))
    _d, _rec, notes, run = make(config, rollback_on_probe_failure=True, reconcile_fn=breaks_probe)
    notes.wait_for("STATUS=", 1)
    assert calls == [("<state before generation 1>", False)], "the rolled-back files were applied again"
    kept = json.loads(record.read_text())
    assert kept["schema"] == 2 and kept["digest"] == fake_load(config).files_sha256
    assert run.stop() == 0


def test_events_of_ipvlands_own_writes_are_not_drift(config: Path, make: Any) -> None:
    holder: list[Daemon] = []

    def writes(spec: Spec, kernel: Any) -> Report:
        if holder:
            holder[0].on_netlink_event("web", 4)  # the echo of our writes, read during the reconcile
        return empty_report(spec, kernel)

    d, _rec, notes, _r = make(config, Recorder(result=writes))
    holder.append(d)
    notes.wait_for("STATUS=", 1)
    d.on_netlink_event("web", 2)  # somebody else
    notes.wait_for("STATUS=", 3)
    s = status.read(d.state_dir)
    assert s["drift"]["events"] == 2 and s["drift"]["own"] >= 4


def test_sighup_reloads_are_counted(config: Path, make: Any) -> None:
    d, _rec, notes, _r = make(config)
    notes.wait_for("READY=1")
    assert status.read(d.state_dir)["reloads"] == 0
    d.request_reload()
    notes.wait_for("READY=1", n=2)
    assert status.read(d.state_dir)["reloads"] == 1


def test_a_parent_event_widens_the_repair_to_its_devices_everywhere(config: Path, make: Any) -> None:
    from ipvland.model import Parent

    spec = Spec(version=1, parents=(Parent("eth0", Mode.L2, Flag.BRIDGE, devices=(
        Device("web0", "eth0", netns="web"), Device("db0", "eth0", netns="db"))),), sources=("x",))
    d, rec, _notes, _r = make(config, load_fn=lambda path: spec)
    rec.wait_calls(1)
    d.on_netlink_event(None, 1, frozenset({"eth0"}))
    rec.wait_calls(2)
    assert rec.scopes[1] == frozenset({None, "web", "db"})
    d.on_netlink_event(None, 1, frozenset({"app0"}))  # not a parent
    rec.wait_calls(3)
    assert rec.scopes[2] == frozenset({None})


def test_a_config_written_in_place_with_a_stall_is_never_read_half_written(config: Path, make: Any) -> None:
    loaded: list[str] = []

    def load(path: Path) -> Spec:
        spec = fake_load(path)
        loaded.append(spec.sources[1])
        return spec

    # resyncs every 0.3 s, the real watcher: every chance to read the half
    d, rec, _notes, _r = make(config, watch_files=True, interval=0.3, load_fn=load)
    rec.wait_calls(2)
    with open(config, "w") as f:
        f.write("good-2\n")  # a complete line: valid on its own for this loader
        f.flush()
        time.sleep(3)
        f.write("tail\n")
    deadline = time.monotonic() + 3
    while "good-2\ntail" not in loaded and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "good-2" not in loaded, loaded
    assert "good-2\ntail" in loaded
    assert d.spec is not None and d.spec.sources[1] == "good-2\ntail"


def test_probes_beyond_the_watchdog_are_clamped_with_a_message(config: Path, make: Any,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ipvland")
    probes = (Probe(ipaddress.ip_address("192.0.2.1"), "web", tries=20, timeout=30.0),)
    seen: list[Spec] = []

    def record(spec: Spec, kernel: Any) -> Report:
        seen.append(spec)
        return empty_report(spec, kernel)

    _d, rec, _notes, _r = make(config, Recorder(result=record), watchdog_usec=30_000_000,
                               load_fn=lambda path: Spec(version=1, probes=probes, sources=("x",)))
    rec.wait_calls(1)
    assert seen[0].probes[0].tries * seen[0].probes[0].timeout <= 30.0
    assert "more than the systemd watchdog's 30s; clamped" in caplog.text


def test_watchdog_pings_stop_while_the_loop_is_stuck(config: Path, make: Any) -> None:
    gate = threading.Event()
    entered = threading.Event()

    def stuck(spec: Spec, kernel: Any) -> Report:
        entered.set()
        assert gate.wait(5)
        return empty_report(spec, kernel)

    _d, _rec, notes, _r = make(config, Recorder(result=stuck), watchdog_usec=200_000)
    assert entered.wait(5)
    time.sleep(0.3)  # past the stall limit (0.2 s): no progress since the reconcile started
    n = notes.flat().count("WATCHDOG=1")
    time.sleep(0.5)
    assert notes.flat().count("WATCHDOG=1") == n, "a stuck loop must be left to systemd"
    gate.set()
    notes.wait_for("WATCHDOG=1", n + 1)


def test_watchdog_is_fed_by_a_long_reconcile_that_makes_progress(config: Path, make: Any,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import ipvland.reconcile as reconcile_mod

    class SlowKernel:
        def links(self, netns: str | None) -> list[object]:
            time.sleep(0.05)  # one netlink dump
            return []

    done = threading.Event()
    pings_during: list[int] = []

    def long_reconcile(spec: Spec, kernel: Any, **kw: Any) -> Report:
        n0 = notes.flat().count("WATCHDOG=1")
        for _ in range(20):  # 1 s, five times the watchdog timeout
            kernel.links(None)
        pings_during.append(notes.flat().count("WATCHDOG=1") - n0)
        done.set()
        return empty_report(spec, kernel)

    monkeypatch.setattr(reconcile_mod, "reconcile", long_reconcile)
    _d, _rec, notes, _r = make(config, reconcile_fn=None, kernel_factory=SlowKernel, watchdog_usec=200_000)
    assert done.wait(5)
    assert pings_during[0] >= 5, pings_during  # every 0.1 s while each call reports progress


def test_a_conflict_without_a_write_is_not_held(config: Path, make: Any) -> None:
    # Nothing was written, so there is no echo to loop on: drift elsewhere is repaired at event speed.
    def conflicted(spec: Spec, kernel: Any) -> Report:
        p = Plan(conflicts=(Conflict("link web0 netns web", "a veth that ipvland does not own"),))
        return Report(p, (), p, time.time(), 0.0)

    d, rec, notes, _r = make(config, Recorder(result=conflicted))
    notes.wait_for("STATUS=", 1)
    for n in range(2, 5):
        d.on_netlink_event("db", 1)
        rec.wait_calls(n, timeout=0.8)  # well under the 1 s hold
    assert status.read(d.state_dir)["backoff"] is None


def test_a_host_identity_change_is_logged_and_named_at_the_next_load(
        config: Path, make: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    # A hostname set late (DHCP, hostnamectl) selects other drop-ins: say so, and which identity a
    # generation was selected for, instead of applying another host's files without a word.
    monkeypatch.setenv("IPVLAND_HOST", "localhost")
    caplog.set_level(logging.INFO, logger="ipvland")
    d, rec, _notes, _r = make(config)
    rec.wait_calls(1)
    assert "config generation 1 loaded for host localhost" in caplog.text
    monkeypatch.setenv("IPVLAND_HOST", "web-1")
    config.write_text("good-2\n")
    assert d.load()
    assert "host identity changed from localhost to web-1" in caplog.text
    assert "config generation 2 loaded for host web-1" in caplog.text


class PortRecorder(Recorder):
    """Also records each call's `ports` (a port check)."""

    def __init__(self) -> None:
        super().__init__()
        self.ports: list[bool] = []

    def __call__(self, spec: Spec, kernel: Any, scope: frozenset[str | None] | None = None,
                 ports: bool = False) -> Report:
        self.ports.append(ports)
        return super().__call__(spec, kernel, scope)


def test_a_parents_unchanged_message_sets_off_a_port_check(config: Path, make: Any) -> None:
    """Review of issue 13: an ipvlan created on a parent into a namespace ipvland does not watch, or
    gone with it, shows only as the parent's unchanged RTM_NEWLINK (events.scan's echoes): it must
    lead to a look at the port (here: a scoped turn that reads no namespace for itself, with ports),
    and only for a parent of the spec in ipvland's own namespace."""
    from dataclasses import replace

    def load(path: Path) -> Spec:
        return replace(fake_load(path), parents=(
            Parent("eth0", Mode.L3S, Flag.BRIDGE, (), (), (Device("web0", "eth0", "web"),)),
            Parent("eth1", None, Flag.BRIDGE, (), (), ())))  # routes or neighbors only: no port

    rec = PortRecorder()
    d, rec, _notes, _r = make(config, rec, load_fn=load)
    rec.wait_calls(1)
    d.on_port_echo("web", frozenset({"eth0"}))  # another namespace's link of that name: not the parent
    d.on_port_echo(None, frozenset({"docker0"}))  # not a parent of the spec
    d.on_port_echo(None, frozenset({"eth1"}))  # a parent without devices: a NIC others put uppers on
    time.sleep(0.3)
    assert rec.count == 1
    d.on_port_echo(None, frozenset({"eth0", "docker0"}))
    rec.wait_calls(2)
    assert rec.scopes[-1] == frozenset() and rec.ports[-1] is True
    assert rec.ports[0] is False  # the start: a full turn, no port check asked
