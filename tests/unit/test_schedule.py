"""The scheduler and the scope choice as state machines: a fake clock, one step at a time."""

from __future__ import annotations

import math

from ipvland.schedule import Job, Scheduler, Trigger, choose_scope


def sched(interval: float = 30.0) -> Scheduler:
    return Scheduler(interval, 0.0, debounce=0.1, max_delay=0.5, quiet=0.3, config_max_delay=2.0,
                     backoff_min=1.0, backoff_max=8.0)


def test_a_netlink_burst_runs_after_the_debounce_or_the_max_delay() -> None:
    s = sched()
    s.request(Trigger.NETLINK, 1.0, netns="web")
    assert s.take(1.05) is None
    assert s.next_deadline() == 1.1
    job = s.take(1.1)
    assert job is not None and job.triggers == {Trigger.NETLINK} and job.namespaces == {"web"}
    assert not job.reload and not job.full
    for t in (2.0, 2.08, 2.16, 2.24, 2.32, 2.40, 2.48):  # never quiet for 0.1 s
        s.request(Trigger.NETLINK, t)
        assert s.take(t) is None
    assert s.take(2.5) is not None  # the max delay


def test_config_events_wait_for_a_quiet_period_and_reload() -> None:
    s = sched()
    s.request(Trigger.CONFIG, 1.0)
    assert s.take(1.2) is None
    s.request(Trigger.CONFIG, 1.2)
    assert s.take(1.45) is None
    job = s.take(1.5)
    assert job is not None and job.reload and job.full


def test_start_and_sighup_run_at_once() -> None:
    s = sched()
    s.request(Trigger.HUP, 5.0)
    job = s.take(5.0)
    assert job is not None and job.hup and job.reload


def test_the_resync_comes_an_interval_after_the_last_full_reconcile() -> None:
    s = sched(interval=10.0)
    assert s.next_deadline() == 10.0
    s.finished(3.0, 3.5, full=True, settled=True, flapping=False)
    assert s.take(12.9) is None and s.next_deadline() == 13.0
    s.finished(12.0, 12.2, full=False, settled=True, flapping=False)  # a scoped repair: no effect
    job = s.take(13.0)
    assert job is not None and Trigger.RESYNC in job.triggers and job.reload and job.full


def test_after_a_reconcile_that_did_not_converge_netlink_events_wait_for_the_backoff() -> None:
    s = sched()
    s.finished(0.0, 1.0, full=True, settled=False, flapping=False)
    assert s.hold_until == 2.0
    s.request(Trigger.NETLINK, 1.1, reason="netlink host")  # our own echo
    assert s.take(1.5) is None
    assert s.next_deadline() == 2.0
    job = s.take(2.0)
    assert job is not None and {Trigger.NETLINK, Trigger.RETRY} <= job.triggers and job.full
    # it did not converge again: the hold doubles, up to the cap
    holds = []
    now = 2.0
    for _ in range(6):
        s.finished(now, now, full=True, settled=False, flapping=False)
        assert s.hold_until is not None
        holds.append(s.hold_until - now)
        now = s.hold_until
        assert s.take(now) is not None  # the retry, although nothing asked
    assert holds == [2.0, 4.0, 8.0, 8.0, 8.0, 8.0]
    s.finished(now, now, full=True, settled=True, flapping=False)
    assert s.hold_until is None and s.delay == 1.0
    s.request(Trigger.NETLINK, now + 1)
    assert s.take(now + 1.1) is not None  # event speed again


def test_a_flapping_object_holds_even_a_converged_reconcile() -> None:
    s = sched()
    s.finished(0.0, 0.5, full=False, settled=True, flapping=True)
    assert s.hold_until == 1.5 and s.hold_why == "an object flaps"
    s.request(Trigger.NETLINK, 0.6)
    assert s.take(1.0) is None


def test_the_resync_waits_for_the_hold_too() -> None:
    s = sched(interval=2.0)
    s.finished(0.0, 1.9, full=True, settled=False, flapping=False)
    s.delay = 8.0
    s.finished(0.0, 1.9, full=True, settled=False, flapping=False)  # hold until 9.9
    assert s.take(2.5) is None  # resync due at 2.0 but held
    job = s.take(9.9)
    assert job is not None and Trigger.RETRY in job.triggers


def test_an_operators_request_is_never_held() -> None:
    s = sched()
    s.finished(0.0, 0.0, full=True, settled=False, flapping=False)
    s.delay = 8.0
    s.finished(0.0, 0.0, full=True, settled=False, flapping=False)
    s.request(Trigger.CONFIG, 0.1)
    assert s.take(0.4) is not None
    s.request(Trigger.HUP, 0.5)
    assert s.take(0.5) is not None


def test_a_deferred_reload_comes_back_at_its_time_or_with_the_next_config_event() -> None:
    s = sched()
    s.defer_reload(10.0, hup=True)
    assert s.next_deadline() == 10.0
    assert s.take(9.0) is None
    job = s.take(10.0)
    assert job is not None and job.hup and job.reload
    s.defer_reload(100.0)
    s.request(Trigger.CONFIG, 1.0)  # the file was closed
    assert s.take(1.3) is not None


def test_an_idle_scheduler_sleeps_until_the_resync() -> None:
    s = sched(interval=30.0)
    assert s.next_deadline() == 30.0
    assert not math.isinf(s.next_deadline())


def test_scope() -> None:
    parents = {"eth0": {None, "web", "db"}}

    def of(parent: str) -> set[str | None]:
        return parents.get(parent, set())

    job = Job()
    job.add(Trigger.NETLINK, "netlink web", "web")
    assert choose_scope(job, last_converged=True, parent_namespaces=of) == {"web"}
    assert choose_scope(job, last_converged=False, parent_namespaces=of) is None
    # a host event naming a parent reaches its devices in every namespace
    job.add(Trigger.NETLINK, "netlink host", None, parents={"eth0", "app0"})
    assert choose_scope(job, last_converged=True, parent_namespaces=of) == {None, "web", "db"}
    # names from another namespace's events are not parents
    other = Job()
    other.add(Trigger.NETLINK, "netlink web", "web", parents={"eth0"})
    assert choose_scope(other, last_converged=True, parent_namespaces=of) == {"web"}
    job.add(Trigger.CONFIG, "config file")
    assert choose_scope(job, last_converged=True, parent_namespaces=of) is None


def test_a_port_check_is_a_netlink_job_that_reads_no_namespace_for_itself() -> None:
    s = Scheduler(interval=60.0, now=0.0, debounce=0.1, max_delay=0.5)
    s.request_port_check(1.0, "netlink host: an ipvlan joined or left the port of eth0")
    assert s.take(1.05) is None  # debounced as netlink events are
    job = s.take(1.2)
    assert job is not None and job.ports and job.triggers == {Trigger.NETLINK} and not job.namespaces
    assert choose_scope(job, last_converged=True, parent_namespaces=lambda p: {None}) == frozenset()
    assert choose_scope(job, last_converged=False, parent_namespaces=lambda p: {None}) is None
    s.request(Trigger.NETLINK, 2.0, reason="netlink web", netns="web")
    assert not s.take(2.2).ports  # type: ignore[union-attr]  # the next job starts afresh
