"""`ipvland run` as a real process against a real kernel (the VM; see tests/run).

Each test starts the daemon on a veth "NIC" (lab0), changes things behind its back or edits its
config, and checks the live state with iproute2. Repair times are printed (pytest -s shows them);
the resync interval is 600 s, so every repair seen here came from an event, not from the timer.
Python is 5-10x slower in the VM: waits are generous, and the tests are few and coarse.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ipvland import control

REPO = Path(__file__).resolve().parents[2]
SLOW = 60.0  # seconds: an upper bound for anything under emulation, far below the resync (600 s)
# Starting the daemon means importing pyroute2 & co. from 9p under emulation: 20 s on a quiet host,
# over 60 s while other VMs compete for the CPU.
STARTUP = 240.0


def ip(*args: str, netns: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = ["ip", *(["-n", netns] if netns else []), *args]
    return subprocess.run(cmd, capture_output=True, text=True, check=check)


def ipj(*args: str, netns: str | None = None) -> list[dict[str, Any]]:
    r = ip("-j", *args, netns=netns, check=False)
    return json.loads(r.stdout) if r.returncode == 0 and r.stdout.strip() else []


def link(name: str, netns: str | None = None) -> dict[str, Any] | None:
    found = [x for x in ipj("-d", "link", "show", netns=netns) if x["ifname"] == name]
    return found[0] if found else None


def links(netns: str | None = None) -> list[dict[str, Any]]:
    return ipj("-d", "link", "show", netns=netns)


def mode(name: str, netns: str | None = None) -> str | None:
    found = link(name, netns)
    return found["linkinfo"]["info_data"]["mode"] if found else None


def addrs(name: str, netns: str | None = None) -> set[str]:
    return {f"{a['local']}/{a['prefixlen']}" for e in ipj("addr", "show", "dev", name, netns=netns)
            for a in e.get("addr_info", []) if a.get("scope") != "link"}


def wait_until(what: str, pred: Callable[[], object], timeout: float = SLOW) -> float:
    """Poll pred until true; the seconds it took. (Polling is the test's business, not the daemon's.)"""
    t0 = time.monotonic()
    while True:
        if pred():
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for: {what}")
        time.sleep(0.05)


class Daemon:
    def __init__(self, config: Path, state: Path, log: Path) -> None:
        self.config, self.state, self.log = config, state, log
        self.p: subprocess.Popen[bytes] | None = None

    def start(self, *extra: str) -> None:
        with open(self.log, "ab") as log:
            self.p = subprocess.Popen(
                [sys.executable, "-m", "ipvland", "run", "-c", str(self.config), "--state-dir", str(self.state),
                 "--interval", "600", "--log-level", "debug", *extra],
                stdout=log, stderr=log, cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def status(self) -> dict[str, Any]:
        try:
            return json.loads((self.state / "status.json").read_text())  # type: ignore[no-any-return]
        except (OSError, ValueError):
            return {}

    def reconciles(self) -> int:
        return int(self.status().get("reconciles", 0))

    def converged(self, after: int = 0) -> bool:
        s = self.status()
        last = s.get("last_reconcile") or {}
        return s.get("reconciles", 0) > after and last.get("result") == "ok"

    def send(self, sig: int) -> None:
        assert self.p is not None
        self.p.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = SLOW) -> int:
        assert self.p is not None
        if self.p.poll() is None:
            self.p.send_signal(sig)
        rc = self.p.wait(timeout)
        self.p = None
        return rc

    def logs(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


# Fixed MACs: a random one is rewritten by udev at some later moment, and a MAC change flushes every
# neighbor entry on the device, permanent ones included (seen on 6.1).
VETH = ("link", "add", "lab0", "address", "02:00:00:00:0a:01", "type", "veth", "peer", "name", "lab0p",
        "address", "02:00:00:00:0a:02")

BASE = """
    version: 1
    parents:
      lab0:
        mode: l2
        devices:
          web0: {netns: web, addresses: [192.0.2.10/24], routes: [{to: default}]}
          app0: {addresses: [192.0.2.11/24]}
    """


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Daemon]:
    ip(*VETH)
    ip("link", "set", "lab0", "up")
    ip("link", "set", "lab0p", "up")
    etc = tmp_path / "etc"
    (etc / "config.d").mkdir(parents=True)
    d = Daemon(etc / "config.yaml", tmp_path / "state", tmp_path / "daemon.log")
    yield d
    if d.p is not None:
        d.stop(signal.SIGKILL)
    print(d.logs()[-20000:])
    ip("link", "del", "lab0", check=False)
    for ns in Path("/run/netns").glob("*") if Path("/run/netns").is_dir() else []:
        ip("netns", "del", ns.name, check=False)


def write(path: Path, text: str) -> None:
    """Like a sync tool: a temp file beside it, then rename."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(textwrap.dedent(text))
    tmp.rename(path)


def start_converged(d: Daemon, text: str = BASE) -> None:
    write(d.config, text)
    d.start()
    try:
        took = wait_until("first convergence",
                          lambda: d.converged() and addrs("web0", "web") == {"192.0.2.10/24"}, STARTUP)
    except AssertionError as e:
        if d.p is not None and d.p.poll() is None:
            d.send(signal.SIGUSR2)  # the daemon dumps its threads' stacks into its log
            time.sleep(2)
        raise AssertionError(f"{e}\nstatus: {json.dumps(d.status(), indent=1)}\n"
                             f"links: {ip('-d', 'link', 'show', check=False).stdout}\n"
                             f"log: {d.logs()[-8000:]}") from None
    print(f"first convergence: {took:.2f}s")


def test_drift_is_repaired_from_events(lab: Daemon) -> None:
    start_converged(lab)
    ip("link", "del", "web0", netns="web")
    took = wait_until("web0 re-created", lambda: addrs("web0", "web") == {"192.0.2.10/24"})
    print(f"device deleted by hand: repaired in {took:.2f}s")
    # ... by a reconcile that read only the namespaces the events came from
    lines = lab.logs().splitlines()
    created = max(i for i, line in enumerate(lines) if "+ link web0" in line)
    started = next(line for line in reversed(lines[:created]) if "DEBUG reconcile (" in line)
    assert "reconcile (netlink" in started and " in " in started, started
    assert "web" in started.rsplit(" in ", 1)[1].split(", "), started

    ip("addr", "flush", "dev", "app0")
    took = wait_until("app0 address back", lambda: addrs("app0") == {"192.0.2.11/24"})
    print(f"address flushed: repaired in {took:.2f}s")

    repairs = lab.logs().count("~ parent lab0 mode l3 -> l2")
    ip("link", "set", "dev", "app0", "type", "ipvlan", "mode", "l3")
    # The daemon may repair the flip before a second `ip` could even see it, so the evidence that
    # the flip happened and was undone is the daemon's own change line.
    took = wait_until("mode back to l2", lambda: lab.logs().count("~ parent lab0 mode l3 -> l2") > repairs
                      and mode("app0") == "l2" and mode("web0", "web") == "l2")
    print(f"mode flipped by hand: repaired in {took:.2f}s")
    status = lab.status()
    assert status["drift"]["events"] > 0
    assert status["last_reconcile"]["result"] == "ok"

    # An IPv6 address in DAD is in place but unusable: the status says it is settling, wait-online
    # holds, and the end of DAD (an RTM_NEWADDR, no resync: the interval is 600 s) clears it.
    Path("/proc/sys/net/ipv6/conf/app0/dad_transmits").write_text("10")  # 10 probes, 1 s apart
    write(lab.config, BASE.replace("app0: {addresses: [192.0.2.11/24]}",
                                   'app0: {addresses: [192.0.2.11/24, "2001:db8::11/64"]}'))
    wait_until("the address settling", lambda: lab.status().get("settling"))
    assert lab.status()["settling"] == [
        "address 2001:db8::11/64 dev app0: IPv6 duplicate address detection in progress"]
    assert "tentative" in ip("-6", "addr", "show", "dev", "app0").stdout
    assert not control.online_verdict(lab.status(), pid_alive=True).done
    took = wait_until("DAD over, seen by the daemon", lambda: lab.status().get("settling") == [])
    print(f"DAD over: settling cleared {took:.2f}s after it was seen")
    assert "tentative" not in ip("-6", "addr", "show", "dev", "app0").stdout
    assert control.online_verdict(lab.status(), pid_alive=True).done


def test_dropin_by_rename_broken_file_and_partial_write(lab: Daemon) -> None:
    start_converged(lab)
    write(lab.config.parent / "config.d" / "20-db.yaml", """
        version: 1
        parents:
          lab0:
            devices:
              db0: {netns: db, addresses: [192.0.2.12/24]}
        """)
    took = wait_until("db0 from the drop-in", lambda: addrs("db0", "db") == {"192.0.2.12/24"})
    print(f"drop-in added by rename: applied in {took:.2f}s")
    # the status file is written after the reconcile that the addresses already show
    wait_until("status names the drop-in", lambda: any(
        src.endswith("20-db.yaml") for src in lab.status().get("config", {}).get("sources", ())))
    generation = lab.status()["config"]["generation"]

    broken = lab.config.parent / "config.d" / "30-broken.yaml"
    broken.write_text("version: 1\nparents:\n  lab0: {devices: [\n")
    wait_until("config error in status", lambda: (lab.status()["config"].get("error") or {}).get("errors"))
    errors = lab.status()["config"]["error"]["errors"]
    assert any(e.startswith(f"{broken}:") for e in errors), errors
    assert f"{broken}:" in lab.logs()
    # The last good config is still enforced: drift is still repaired, nothing was torn down.
    ip("link", "del", "db0", netns="db")
    wait_until("db0 repaired under a broken drop-in", lambda: addrs("db0", "db") == {"192.0.2.12/24"})
    assert link("web0", "web") is not None and link("app0") is not None
    assert lab.status()["config"]["generation"] == generation
    broken.unlink()
    wait_until("config error cleared", lambda: lab.status()["config"].get("error") is None)

    # A half-written main file (a writer that truncates, then stalls): nothing changes.
    full = textwrap.dedent(BASE).replace("app0: {addresses: [192.0.2.11/24]}",
                                         "app0: {addresses: [192.0.2.11/24, 192.0.2.21/24]}")
    cut = full.index("192.0.2.21")
    with open(lab.config, "w") as f:  # in place, not by rename: the reader can see the half
        f.write(full[:cut])
    wait_until("partial file reported", lambda: lab.status()["config"].get("error"))
    assert addrs("app0") == {"192.0.2.11/24"} and link("db0", "db") is not None
    with open(lab.config, "w") as f:
        f.write(full)
    took = wait_until("completed file applied", lambda: addrs("app0") == {"192.0.2.11/24", "192.0.2.21/24"})
    print(f"partial write completed: applied in {took:.2f}s")
    # the status file is written after the reconcile whose address the test already saw
    wait_until("config error cleared in status", lambda: lab.status()["config"].get("error") is None)
    assert link("db0", "db") is not None  # the drop-in still counts


ROLLBACK_GOOD = """
    version: 1
    parents:
      lab0:
        mode: l2
        devices:
          c1: {netns: c1, addresses: [192.0.2.10/24]}
    probes:
      # 2 x 1 s was seen to fail once under emulation on a busy host right after a renumbering (the
      # peer resolving the new address), which rolled the good generation back: give it slack.
      - {netns: c1, target: 192.0.2.1, tries: 3, timeout: 2}
    """


def test_daemon_rolls_back_a_config_that_breaks_a_probe_and_keeps_the_restored_state(lab: Daemon) -> None:
    # The peer host: lab0p in namespace peer, 192.0.2.1; in l2 the peer answers c1 without static entries.
    ip("netns", "add", "peer")
    ip("link", "set", "lab0p", "netns", "peer")
    ip("addr", "add", "192.0.2.1/24", "dev", "lab0p", netns="peer")
    ip("link", "set", "lab0p", "up", netns="peer")
    write(lab.config, ROLLBACK_GOOD)
    lab.start("--rollback-on-probe-failure")
    wait_until("first convergence with the probe passing", lambda: lab.converged(), STARTUP)
    index = link("c1", "c1")["ifindex"]  # type: ignore[index]
    # Another mode, and c1 renumbered out of the peer's subnet: the probe from c1 fails.
    write(lab.config, textwrap.dedent(ROLLBACK_GOOD).replace("mode: l2", "mode: l3")
          .replace("192.0.2.10/24", "198.51.100.10/24"))
    wait_until("the rollback in status", lambda: lab.status().get("rolled_back"))
    rolled = lab.status()["rolled_back"]
    assert rolled["generation"] == 2 and rolled["restored"], rolled
    assert "192.0.2.1" in rolled["broken"][0]
    assert mode("c1", "c1") == "l2" and link("c1", "c1")["ifindex"] == index  # type: ignore[index]
    assert addrs("c1", "c1") == {"192.0.2.10/24"}
    assert subprocess.run(["ip", "netns", "exec", "c1", "ping", "-c", "1", "-W", "2", "192.0.2.1"],
                          capture_output=True, check=False).returncode == 0, "connectivity is back"
    # The restored state is what the daemon enforces now, and the broken config is not retried.
    before = lab.reconciles()
    ip("addr", "flush", "dev", "c1", netns="c1")
    wait_until("the restored address back", lambda: addrs("c1", "c1") == {"192.0.2.10/24"})
    wait_until("a converged reconcile after the repair", lambda: lab.converged(before))
    assert lab.logs().count("rolled back") == 1, lab.logs()[-3000:]
    assert mode("c1", "c1") == "l2"
    assert lab.stop(signal.SIGTERM) == 0
    # A restart remembers it (rolled-back.json): the same files are not applied again, the restored
    # state is enforced (before: a restart applied generation 2 again, l3 and 198.51.100.10).
    lab.start("--rollback-on-probe-failure")
    assert lab.p is not None
    pid = lab.p.pid
    wait_until("convergence after the restart",
               lambda: lab.status().get("pid") == pid and lab.converged(), STARTUP)
    enforced = lab.status()["config"]["enforced"]
    assert enforced["rolled_back"] and "before the daemon restarted" in enforced["reason"], enforced
    assert mode("c1", "c1") == "l2" and addrs("c1", "c1") == {"192.0.2.10/24"}
    assert link("c1", "c1")["ifindex"] == index  # type: ignore[index]
    assert lab.stop(signal.SIGTERM) == 0


def test_route_flood_sighup_and_sigterm(lab: Daemon) -> None:
    start_converged(lab)
    # Another tool adds a thousand routes: header filtering drops them, so no reconcile at all.
    time.sleep(3)  # let the events of our own first apply settle
    before = lab.reconciles()
    batch = "".join(f"route add 10.{i // 250}.{i % 250}.0/24 dev lab0 proto static\n" for i in range(1000))
    subprocess.run(["ip", "-batch", "-"], input=batch, text=True, check=True)
    time.sleep(3)
    flood = lab.reconciles() - before
    print(f"1000 foreign routes: {flood} reconcile(s)")
    assert flood <= 1, flood
    before = lab.reconciles()
    lab.send(signal.SIGHUP)
    wait_until("a reconcile triggered by SIGHUP",
               lambda: "SIGHUP" in (lab.status().get("last_reconcile") or {}).get("trigger", []))
    assert lab.reconciles() > before
    assert lab.stop(signal.SIGTERM) == 0
    assert addrs("web0", "web") == {"192.0.2.10/24"}
    assert addrs("app0") == {"192.0.2.11/24"}
    assert "stopped; the network is left as it is" in lab.logs()


def test_parent_deleted_and_recreated(lab: Daemon) -> None:
    start_converged(lab)
    ip("link", "del", "lab0")  # the kernel deletes its ipvlans with it
    wait_until("devices pending in status", lambda: any("lab0" in p for p in lab.status().get("pending", [])))
    assert link("web0", "web") is None
    ip(*VETH)
    ip("link", "set", "lab0", "up")
    took = wait_until("devices back on the new lab0",
                      lambda: addrs("web0", "web") == {"192.0.2.10/24"} and addrs("app0") == {"192.0.2.11/24"})
    print(f"parent re-created: devices back in {took:.2f}s")
    wait_until("nothing pending", lambda: not lab.status().get("pending"))


def test_sigkill_mid_apply_then_restart_converges(lab: Daemon) -> None:
    n_ns, per_ns = 4, 6
    lines = ["version: 1", "parents:", "  lab0:", "    mode: l3", "    devices:"]
    expected: dict[str, set[str]] = {}
    for i in range(n_ns):
        for j in range(per_ns):
            name = f"c{i}d{j}"
            lines.append(f"      {name}: {{netns: big{i}, addresses: [10.{i}.{j}.1/24]}}")
            expected.setdefault(f"big{i}", set()).add(name)
    write(lab.config, "\n".join(lines) + "\n")
    lab.start()

    def some_created() -> bool:
        return any(link(n, ns) for ns, names in expected.items() for n in sorted(names)[:1])

    wait_until("the apply to be under way", some_created, STARTUP)
    rc = lab.stop(signal.SIGKILL)
    assert rc == -signal.SIGKILL
    done = sum(1 for ns, names in expected.items() for n in names if link(n, ns))
    total = n_ns * per_ns
    print(f"killed with {done}/{total} devices created")
    lab.start()
    took = wait_until("convergence after restart", lambda: lab.converged() and all(
        {x["ifname"] for x in links(ns) if x.get("linkinfo", {}).get("info_kind") == "ipvlan"} == names
        for ns, names in expected.items()), timeout=STARTUP)
    print(f"restart converged in {took:.2f}s")
    for ns in [None, *expected]:
        leftovers = [x["ifname"] for x in links(ns) if x["ifname"].startswith("ipvtmp-")]
        assert leftovers == [], (ns, leftovers)
    for ns, names in expected.items():
        for n in names:
            found = link(n, ns)
            assert found is not None and found.get("ifalias") == "ipvland", (ns, n, found)
    assert lab.stop() == 0


PORT_ALONE = "version: 1\nparents: {lab0: {mode: l3s, devices: {web0: {netns: web, addresses: [192.0.2.10/24]}}}}\n"


def conflicts(d: Daemon) -> list[str]:
    """The last reconcile's conflicts, without their "! " mark."""
    return [c.removeprefix("! ") for c in (d.status().get("last_reconcile") or {}).get("conflicts") or []]


def test_an_ipvlan_joining_or_leaving_the_port_from_an_unwatched_namespace_is_seen(lab: Daemon) -> None:
    """Review of issue 13: an ipvlan created on a parent straight into a namespace ipvland does not
    watch (a CNI plugin's), or gone with it, sends ipvland one message only: the parent's unchanged
    RTM_NEWLINK (NETDEV_CHANGEUPPER). Once that message stopped counting as an event, a parent held
    by a foreign ipvlan stayed blocked, and a port re-moded by a foreign create (the kernel sets the
    mode of every member, with no event in their namespaces) showed "ok", each until the resync
    (600 s here). Now it sets off a port check (or a full turn after one not converged)."""
    # A: a foreign l2 ipvlan holds the port, so web0 (l3s) is not created; then its pod goes
    ip("netns", "add", "cni-x")
    ip("link", "add", "link", "lab0", "name", "theirs0", "netns", "cni-x", "type", "ipvlan", "mode", "l2")
    write(lab.config, PORT_ALONE)
    lab.start()
    wait_until("the conflict reported", lambda: any(c.startswith("parent lab0") for c in conflicts(lab)), STARTUP)
    assert link("web0", "web") is None
    ip("netns", "del", "cni-x")
    took = wait_until("web0 created once the port is free", lambda: addrs("web0", "web") == {"192.0.2.10/24"})
    print(f"foreign ipvlan gone with its namespace: web0 created in {took:.2f}s")
    wait_until("converged", lab.converged)
    # B: converged; another tool's l2 ipvlan, created in a namespace of its own, re-modes the port
    ip("netns", "add", "cni-y")
    ip("link", "add", "link", "lab0", "name", "theirs1", "netns", "cni-y", "type", "ipvlan", "mode", "l2")
    assert mode("web0", "web") == "l2"  # the kernel re-moded web0 with its port
    took = wait_until("the re-moded port seen", lambda: any(c.startswith("parent lab0") and "theirs1" in c
                                                            for c in conflicts(lab)))
    print(f"port re-moded by a foreign create: conflict reported in {took:.2f}s")
    assert lab.status()["last_reconcile"]["result"] != "ok"
    assert mode("theirs1", "cni-y") == "l2"  # foreign: left alone
