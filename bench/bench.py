"""The ipvland benchmark (issue 6): a scaled lab, five workloads per size, a table and a JSON file.

Run it through `bench/run`, which boots a VM when this kernel cannot create an ipvlan. This driver
itself needs root and a kernel with IPVLAN, and it changes the network namespace it runs in (a veth
pair `bvp0`/`bvp0p`, namespaces `bn<k>`): run it only in a throwaway VM or namespace.

Lab at size N: N ipvlans `iv<i>` (l3s, MTU 1500) on the veth `bvp0`, ten per namespace `bn<i//10>`,
each with an IPv4 and an IPv6 address and one route (198.18.x.y/32), plus one permanent neighbor on
the parent per ten devices. The config is written as YAML to a temp dir and loaded by ipvland.spec.
Layouts (--layout, issue 13): "tens" as above; "per-ns", the container layout, one ipvlan per
namespace `bn<i>` (JSON: "sizes_per_ns", headline keys `<key>_per_ns`). By default the tens layout
runs at every size and the per-ns layout at the largest.

Workloads per size (JSON keys per size under "sizes", headline keys at the top level):
1. cold apply: ipvland's reconcile() from empty (observe, plan, apply, verify) vs the same changes
   as `ip -batch` files (one in the root namespace: netns add, link add, link set netns, neigh add;
   then one `ip -n NS -batch` per namespace: addr add x2, link set up, route add), each timed
   right after a teardown of the other. Over --baseline-sample (25) lab namespaces, the procedure
   runs for 25 of them, evenly spread, with their devices, its time scaled to all (a lower bound).
2. no-op reconcile: observe + plan with nothing to change (median of several runs, warm sockets as
   in the daemon) vs `ip [-n NS] -d link show`, `addr show`, `route show`, `neigh show` for the root
   namespace and every lab namespace, as subprocesses (median of several runs; over 25 lab
   namespaces, 25 of them evenly spread, the time scaled to all).
2b. (tens layout at --foreign-at, default N=100) the same no-op with 100,000 routes of other tools
   (10 tables, other protocols) and 1,000 permanent neighbors in the host namespace, over the
   no-op without them: noop_foreign_ratio.
3. drift repair by a real `ipvland run` (--interval 600, so every repair comes from an event):
   alternately delete a device or flush its addresses (netlink requests from the bench's own
   sockets; devices in shuffled rounds, see event_devices), and poll (20 ms, raw netlink dumps
   of that one namespace) until device, addresses, up state and route are back.
4. netlink writes (Kernel.writes): a no-op reconcile; one hand-made MTU change then reconcile.
5. the daemon's VmRSS and open fds after its first convergence, and its CPU (utime+stime) over an
   idle window.
6. (tens layout, N>=1000) the steady state at the default interval: a second daemon's CPU over five
   minutes that hold one periodic resync; workload 2 runs inside that window (steady_window).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import ipaddress
import json
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import yaml  # noqa: E402

from ipvland import kernel as kmod  # noqa: E402
from ipvland import spec as spec_mod  # noqa: E402
from ipvland.cli import DEFAULT_INTERVAL  # noqa: E402
from ipvland.kernel import Kernel  # noqa: E402
from ipvland.model import Spec  # noqa: E402
from ipvland.observe import observe  # noqa: E402
from ipvland.plan import plan  # noqa: E402
from ipvland.reconcile import reconcile  # noqa: E402

PARENT, PEER = "bvp0", "bvp0p"
MODE = "l3s"
MTU = 1500
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- the lab


# Devices per namespace: 10 in the "tens" layout, 1 in "per-ns" (the container layout: one ipvlan
# per namespace). Set by run_size for the layout it runs.
PER_NS = {"tens": 10, "per-ns": 1}
GROUP = 10


def ns_of(i: int) -> str:
    return f"bn{i // GROUP}"


def v4(i: int) -> ipaddress.IPv4Interface:
    return ipaddress.IPv4Interface((int(ipaddress.IPv4Address("10.64.0.1")) + i, 16))


def v6(i: int) -> ipaddress.IPv6Interface:
    return ipaddress.IPv6Interface((int(ipaddress.IPv6Address("fd00:b::1")) + i, 64))


def route_to(i: int) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network((int(ipaddress.IPv4Address("198.18.0.1")) + i, 32))


def neighbor(k: int) -> tuple[ipaddress.IPv4Address, str]:
    return (ipaddress.IPv4Address(int(ipaddress.IPv4Address("10.65.0.1")) + k),
            "02:00:00:00:{:02x}:{:02x}".format(*divmod(k + 1, 256)))


def document(n: int) -> dict[str, Any]:
    devices = {f"iv{i}": {"netns": ns_of(i), "addresses": [str(v4(i)), str(v6(i))], "mtu": MTU,
                          "routes": [{"to": str(route_to(i))}]} for i in range(n)}
    neighbors = [{"address": str(a), "lladdr": mac} for a, mac in map(neighbor, range(max(1, n // 10)))]
    return {"version": 1, "parents": {PARENT: {"mode": MODE, "neighbors": neighbors, "devices": devices}}}


def namespaces(n: int) -> list[str]:
    return sorted({ns_of(i) for i in range(n)}, key=lambda s: int(s[2:]))


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def teardown() -> None:
    """Deleting the parent removes every ipvlan on it at once (synchronously), in any namespace."""
    ip("link", "del", PARENT, check=False)
    for name in kmod.list_namespaces():
        if name.startswith("bn"):
            kmod.delete_namespace(name)


def fresh_parent() -> None:
    teardown()
    # fixed MACs: udev would rewrite random ones later, and a MAC change flushes the neighbor table
    ip("link", "add", PARENT, "address", "02:00:00:00:0b:01", "type", "veth", "peer", "name", PEER,
       "address", "02:00:00:00:0b:02")
    ip("link", "set", PARENT, "up")
    ip("link", "set", PEER, "up")


def census(n: int) -> dict[str, int]:
    """What the lab holds, counted on raw dumps: to check that ipvland and the baseline agree."""
    with Kernel() as k:
        devs = addrs = routes = up = 0
        for ns in namespaces(n):
            if not os.path.exists(os.path.join("/run/netns", ns)):
                continue
            links = [x for x in k.links(ns) if x.kind == "ipvlan"]
            devs += len(links)
            up += sum(x.up for x in links)
            idx = {x.index for x in links}
            addrs += sum(1 for a in k.addresses(ns) if a.ifindex in idx and not a.address.is_link_local)
            routes += sum(1 for r in k.routes(ns) if r.ifindex in idx and r.route.to.prefixlen == 32)
        neigh = sum(1 for x in k.neighbors(None) if x.permanent and str(x.neighbor.address).startswith("10.65."))
    return {"devices": devs, "up": up, "addresses": addrs, "routes": routes, "neighbors": neigh}


def expected_census(n: int, built: set[str] | None = None, neighbors: int | None = None) -> dict[str, int]:
    """What the whole lab holds; with `built`, only the devices of those namespaces exist, and
    `neighbors` of the parent's (a sampled baseline)."""
    done = n if built is None else sum(1 for i in range(n) if ns_of(i) in built)
    return {"devices": done, "up": done, "addresses": 2 * done, "routes": done,
            "neighbors": max(1, n // 10) if neighbors is None else neighbors}


# ---------------------------------------------------------------- 1. cold apply


def spread(every: list[str], sample: int | None) -> list[str]:
    """At most `sample` of `every`, evenly spread (all of them without a sample)."""
    if sample is None or sample >= len(every):
        return every
    return every[:: -(-len(every) // sample)]


def baseline_cold(n: int, work: Path, sample: int | None = None) -> dict[str, Any]:
    """The same changes through iproute2: one root batch, then one batch per namespace. With `sample`,
    the whole procedure runs for that many namespaces (evenly spread) and their devices, and a share
    of the parent's neighbors as large, and its time is scaled to the whole lab. Every namespace
    costs iproute2 the same requests and one process; what grows with the lab (`netns add` with the
    number of mounts, say) is then cheaper in the sample, so the scaled baseline is a lower bound and
    the ratio against it an upper bound: never flattering to ipvland."""
    every = namespaces(n)
    chosen = spread(every, sample)
    taken = set(chosen)
    devices = [i for i in range(n) if ns_of(i) in taken]
    all_neighbors = max(1, n // 10)
    some_neighbors = max(1, round(all_neighbors * len(chosen) / len(every)))
    root = [f"netns add {ns}" for ns in chosen]
    for i in devices:
        root.append(f"link add link {PARENT} name iv{i} mtu {MTU} type ipvlan mode {MODE}")
        root.append(f"link set iv{i} netns {ns_of(i)}")
    for a, mac in map(neighbor, range(some_neighbors)):
        root.append(f"neigh add {a} lladdr {mac} dev {PARENT} nud permanent proto 212")
    files: list[tuple[str | None, Path]] = [(None, work / "root.batch")]
    files[0][1].write_text("\n".join(root) + "\n")
    per_ns: dict[str, list[str]] = {}
    for i in devices:
        per_ns.setdefault(ns_of(i), []).extend([
            f"addr add {v4(i)} dev iv{i}", f"addr add {v6(i)} dev iv{i}", f"link set iv{i} up",
            f"route add {route_to(i)} dev iv{i} proto 212"])
    for name in chosen:
        path = work / f"{name}.batch"
        path.write_text("\n".join(per_ns[name]) + "\n")
        files.append((name, path))
    took: list[float] = []
    for ns, path in files:
        cmd = ["ip", *(["-n", ns] if ns else []), "-batch", str(path)]
        t0 = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True, check=False)
        took.append(time.perf_counter() - t0)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip()[:500]}")
    scale = len(every) / len(chosen)
    out: dict[str, Any] = {"seconds": sum(took) * scale, "processes": 1 + len(every),
                           "requests": len(every) + 2 * n + all_neighbors + 4 * n}
    if len(chosen) < len(every):
        out.update(sampled_namespaces=len(chosen), sampled_root_seconds=round(took[0], 2),
                   sampled_seconds=round(sum(took), 2), scale=round(scale, 3), processes_run=len(files))
    out["census"] = expected_census(n, taken, some_neighbors)
    return out


def ipvland_cold(spec: Spec) -> dict[str, Any]:
    with Kernel() as k:
        t0 = time.perf_counter()
        report = reconcile(spec, k)
        took = time.perf_counter() - t0
        writes = k.writes
    failures = [o.describe() for o in report.failures][:5]
    return {"seconds": took, "writes": writes, "changes": len(report.plan.changes), "ok": report.ok,
            "failures": failures}


# ---------------------------------------------------------------- 2. no-op


def noop_ipvland(spec: Spec, k: Kernel, runs: int) -> dict[str, Any]:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        p = plan(spec, observe(k, spec))
        times.append(time.perf_counter() - t0)
        if not p.empty or p.conflicts or p.pending:
            raise RuntimeError(f"no-op reconcile is not a no-op: {[c.describe() for c in p.changes[:5]]}")
    return {"seconds": statistics.median(times), "runs": [round(t, 4) for t in times]}


def noop_baseline(n: int, runs: int, sample: int | None = None) -> dict[str, Any]:
    """The iproute2 dumps of the root namespace and every lab namespace. With `sample`, only that
    many lab namespaces (evenly spread) are dumped and their time is scaled to all of them: the
    per-ns layout at N=1000 would take 4004 processes (over 10 minutes under emulation), and every
    lab namespace costs iproute2 the same four processes."""
    kinds = (["-d", "link", "show"], ["addr", "show"], ["route", "show"], ["neigh", "show"])
    every = namespaces(n)
    chosen = spread(every, sample)
    scale = len(every) / len(chosen)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        for c in kinds:
            subprocess.run(["ip", *c], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        t1 = time.perf_counter()
        for ns in chosen:
            for c in kinds:
                subprocess.run(["ip", "-n", ns, *c], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               check=True)
        times.append((t1 - t0) + (time.perf_counter() - t1) * scale)
    out = {"seconds": statistics.median(times), "runs": [round(t, 4) for t in times],
           "processes": len(kinds) * (1 + len(every))}
    if len(chosen) < len(every):
        out["sampled_namespaces"] = len(chosen)
        out["processes_run"] = len(kinds) * (1 + len(chosen))
    return out


# ---------------------------------------------------------------- 2b. no-op under a foreign load

FOREIGN_DEV = "bfv0"  # the other tools' objects sit on this veth: deleting it removes them all
FOREIGN_TABLES = 10  # their routes are spread over tables 1001..1010, protocols 11-17 (zebra, bird...)


def foreign_workload(spec: Spec, k: Kernel, runs: int, work: Path, routes: int, neighbors: int) -> dict[str, Any]:
    """The same no-op with other tools' objects in the host namespace: `routes` routes (other
    protocols, FOREIGN_TABLES tables, not main) and `neighbors` permanent neighbor entries, made
    with one `ip -batch`. ratio = no-op with them / without."""
    before = noop_ipvland(spec, k, runs)
    ip("link", "add", FOREIGN_DEV, "type", "veth", "peer", "name", FOREIGN_DEV + "p")
    ip("link", "set", FOREIGN_DEV, "up")
    lines = [f"route add {ipaddress.IPv4Address(int(ipaddress.IPv4Address('100.64.0.0')) + i)}/32 dev {FOREIGN_DEV} "
             f"proto {11 + i % 7} table {1001 + i % FOREIGN_TABLES}" for i in range(routes)]
    lines += [f"neigh add {ipaddress.IPv4Address(int(ipaddress.IPv4Address('100.127.0.1')) + i)} lladdr "
              f"02:00:00:01:{i // 256:02x}:{i % 256:02x} dev {FOREIGN_DEV} nud permanent" for i in range(neighbors)]
    path = work / "foreign.batch"
    path.write_text("\n".join(lines) + "\n")
    t0 = time.perf_counter()
    r = subprocess.run(["ip", "-batch", str(path)], capture_output=True, text=True, check=False)
    load_s = time.perf_counter() - t0
    try:
        if r.returncode != 0:
            raise RuntimeError(f"ip -batch {path}: {r.stderr.strip()[:500]}")
        noop_ipvland(spec, k, 1)
        after = noop_ipvland(spec, k, runs)
    finally:
        ip("link", "del", FOREIGN_DEV, check=False)
    return {"routes": routes, "neighbors": neighbors, "tables": FOREIGN_TABLES, "load_seconds": round(load_s, 1),
            "noop_without": before, "noop_with": after, "ratio": round(after["seconds"] / before["seconds"], 3)}


# ---------------------------------------------------------------- 4. writes


def writes_workload(spec: Spec, k: Kernel) -> dict[str, Any]:
    before = k.writes
    report = reconcile(spec, k)
    noop_writes = k.writes - before
    assert report.plan.empty, [c.describe() for c in report.plan.changes]
    ip("-n", ns_of(0), "link", "set", "iv0", "mtu", "1400")
    before = k.writes
    t0 = time.perf_counter()
    report = reconcile(spec, k)
    took = time.perf_counter() - t0
    return {"noop_writes": noop_writes, "one_drift_writes": k.writes - before,
            "one_drift_changes": [c.describe() for c in report.plan.changes], "one_drift_ok": report.ok,
            "one_drift_seconds": took}


# ---------------------------------------------------------------- 3 & 5. the daemon


class Daemon:
    """`ipvland run` on the lab; interval None: the default resync (cli.DEFAULT_INTERVAL)."""

    def __init__(self, config: Path, work: Path, interval: float | None = 600.0) -> None:
        self.state = work / "state"
        self.logfile = work / "daemon.log"
        every = ["--interval", f"{interval:g}"] if interval is not None else []
        with open(self.logfile, "wb") as out:
            self.p = subprocess.Popen(
                [sys.executable, "-m", "ipvland", "run", "-c", str(config), "--state-dir", str(self.state),
                 *every, "--log-level", "warning"],
                stdout=out, stderr=out, cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def started(self, timeout: float) -> float:
        """Seconds to its first convergence; RuntimeError if it did not converge or died."""
        t0 = time.monotonic()
        if not wait(lambda: self.converged_after(0) or self.p.poll() is not None, timeout, 0.2) \
                or self.p.poll() is not None:
            raise RuntimeError(f"the daemon did not converge in {timeout:.0f}s:\n{self.tail()}")
        return round(time.monotonic() - t0, 2)

    def quiet(self, seconds: float = 3.0, limit: float = 120.0) -> float:
        """Wait until no reconcile ran for `seconds` (its own repair writes set off one more, scoped,
        no-op reconcile); the seconds that took."""
        t0 = time.monotonic()
        settled, since = self.status().get("reconciles", 0), time.monotonic()
        while time.monotonic() - since < seconds and time.monotonic() - t0 < limit:
            time.sleep(0.2)
            count = self.status().get("reconciles", 0)
            if count != settled:
                settled, since = count, time.monotonic()
        return round(time.monotonic() - t0, 1)

    @contextlib.contextmanager
    def cpu_window(self, seconds: float, until_reconciled: float = 0.0) -> Iterator[dict[str, Any]]:
        """The daemon's CPU over the with block, which is made to last at least `seconds` and is
        then extended (by at most `until_reconciled` s) until a reconcile has completed in it: a
        reconcile still running at the end would be counted in part. The yielded dict gets
        cpu_percent, window_s, reconciles (completed in it) and overrun (the block itself took
        longer than `seconds`)."""
        out: dict[str, Any] = {}
        r0, c0, t0 = self.status().get("reconciles", 0), self.cpu_seconds(), time.monotonic()
        yield out
        rest = seconds - (time.monotonic() - t0)
        if rest > 0:
            time.sleep(rest)
        if until_reconciled:
            wait(lambda: self.status().get("reconciles", 0) > r0, until_reconciled, 0.2)
        c1, t1 = self.cpu_seconds(), time.monotonic()
        out.update(cpu_percent=round(100 * (c1 - c0) / (t1 - t0), 3), window_s=round(t1 - t0, 1),
                   reconciles=self.status().get("reconciles", 0) - r0, overrun=rest < 0)

    def cpu_over(self, seconds: float) -> tuple[float, float, int]:
        """(CPU %, window s, reconciles completed in it) over a window of `seconds`."""
        with self.cpu_window(seconds) as w:
            pass
        return w["cpu_percent"], w["window_s"], w["reconciles"]

    def status(self) -> dict[str, Any]:
        try:
            return json.loads((self.state / "status.json").read_text())  # type: ignore[no-any-return]
        except (OSError, ValueError):
            return {}

    def converged_after(self, reconciles: int) -> bool:
        s = self.status()
        return s.get("reconciles", 0) > reconciles and (s.get("last_reconcile") or {}).get("result") == "ok"

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.p.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.p.pid}/fd"))

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.p.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14, 15)

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(60)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()

    def tail(self) -> str:
        return self.logfile.read_text(errors="replace")[-3000:] if self.logfile.exists() else ""


def wait(pred: Any, timeout: float, step: float = 0.02) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return bool(pred())


def event_devices(n: int, events: int, rng: random.Random) -> list[int]:
    """Which device each drift event hits: rounds of a shuffled order of all n, so that no device
    is hit again before every other was, and at most two rounds: a device rewritten three times in
    a minute flaps by ipvland's rule (flaps.COUNT in flaps.WINDOW) and its repairs are then held
    back on purpose, which would measure the backoff, not the repair."""
    out: list[int] = []
    for _ in range(min(2, -(-events // n))):
        order = list(range(n))
        rng.shuffle(order)
        out += order
    return out[:events]


def drift(k: Kernel, i: int, kind: str) -> float:
    """Make one drift event from the bench's own netlink sockets, as `ip` does it but without an
    `ip` process, whose start (100-200 ms under emulation) was counted as repair time: "delete",
    one RTM_DELLINK of device i; "flush", one RTM_DELADDR per address it has, link-local included,
    as `ip addr flush dev` sends them. Returns the perf_counter right before the first request."""
    ns, name = ns_of(i), f"iv{i}"
    index = next(x.index for x in k.links(ns) if x.name == name)  # untimed, as `ip` resolves first
    held = [a.address for a in k.addresses(ns) if a.ifindex == index]
    t0 = time.perf_counter()
    if kind == "delete":
        k.delete_link(ns, name)
    else:
        for iface in held:
            k.delete_address(ns, name, iface)
    return t0


def repaired(k: Kernel, i: int) -> bool:
    ns, name = ns_of(i), f"iv{i}"
    link = next((x for x in k.links(ns) if x.name == name), None)
    if link is None or not link.up or not link.owned:
        return False
    have = {a.address for a in k.addresses(ns) if a.ifindex == link.index}
    if not {v4(i), v6(i)} <= have:
        return False
    return any(r.ifindex == link.index and r.route.to == route_to(i) for r in k.routes(ns))


def daemon_workload(n: int, config: Path, work: Path, events: int, idle_seconds: float,
                    startup_timeout: float, seed: int, budget: float | None = None) -> dict[str, Any]:
    d = Daemon(config, work)
    out: dict[str, Any] = {}
    try:
        out["startup_to_converged_s"] = d.started(startup_timeout)
        out["rss_mb"] = round(d.rss_mb(), 1)
        out["fds"] = d.fds()
        times: list[float] = []
        timeouts = 0
        events_done = 0
        t_events = time.monotonic()
        with Kernel() as k:
            for e, i in enumerate(event_devices(n, events, random.Random(seed))):
                if budget is not None and e >= 2 and time.monotonic() - t_events > budget:
                    log(f"repair: time budget of {budget:.0f}s spent after {e} events")
                    break
                events_done += 1
                done = d.status().get("reconciles", 0)
                kind = "delete" if e % 2 == 0 else "flush"
                t0 = drift(k, i, kind)
                if wait(lambda i=i: repaired(k, i), 60.0):
                    times.append((time.perf_counter() - t0) * 1000)
                else:
                    timeouts += 1
                    log(f"event {e} ({kind} iv{i}) not repaired in 60 s")
                # Let the daemon finish that reconcile (verify, status) before the next event.
                wait(lambda done=done: d.converged_after(done), 60.0, 0.05)
                time.sleep(0.1)
        times.sort()
        out["repair_events"] = events_done
        out["repair_timeouts"] = timeouts
        out["repair_ms"] = [round(t, 1) for t in times]
        if times:
            out["repair_p50_ms"] = round(statistics.median(times), 1)
            out["repair_p99_ms"] = round(times[max(0, -(-99 * len(times) // 100) - 1)], 1)  # nearest rank
            out["repair_max_ms"] = round(times[-1], 1)
        # 5. idle: nothing happens; the daemon must not poll. The window opens once the daemon has
        # finished reacting to the last event: no reconcile for 3 s in a row.
        out["settle_s"] = d.quiet()
        # idle_reconciles 0: the CPU was not a reconcile
        out["idle_cpu_percent"], out["idle_window_s"], out["idle_reconciles"] = d.cpu_over(idle_seconds)
        out["rss_mb_after_repairs"] = round(d.rss_mb(), 1)
        out["daemon_reconciles"] = d.status().get("reconciles")
    finally:
        d.stop()
    return out


@contextlib.contextmanager
def steady_window(config: Path, work: Path, seconds: float, startup_timeout: float) -> Iterator[dict[str, Any]]:
    """6. The steady state at default settings (issue 13): a daemon started without --interval, its CPU
    over a window as long as the default resync interval once it is quiet, so that one periodic full
    resync falls inside, nothing else changing. The resync is due an interval after the start of the
    startup reconcile, so it may still run when the window ends: a window of a whole interval is
    then extended until it has completed (steady_window_s says how long it was).

    The with block runs inside the window: run_size puts there the bench's read-only workloads (no-op
    observe + plan, iproute2 dumps), which change nothing and send the daemon no netlink event, so
    that the five minutes are not spent waiting. The daemon's CPU is its own (/proc/PID/stat). The
    yielded dict gets the keys on exit; steady_reconciles says that only the resync ran, and
    steady_window_overrun that the block outlasted the window (then the window holds more than one
    interval)."""
    (work / "steady").mkdir(exist_ok=True)
    d = Daemon(config, work / "steady", interval=None)
    out: dict[str, Any] = {}
    try:
        d.started(startup_timeout)
        d.quiet()
        with d.cpu_window(seconds, until_reconciled=startup_timeout if seconds >= DEFAULT_INTERVAL else 0.0) as w:
            yield out
        if w["overrun"]:
            log(f"steady state: the workloads inside the window took longer than {seconds:.0f}s")
    finally:
        d.stop()
    out.update(steady_cpu_percent_default=w["cpu_percent"], steady_window_s=w["window_s"],
               steady_reconciles=w["reconciles"], steady_window_overrun=w["overrun"],
               default_interval_s=DEFAULT_INTERVAL)


# ---------------------------------------------------------------- the resync, profiled


@contextlib.contextmanager
def ipvland_lab(n: int, layout: str) -> Iterator[Path]:
    """The lab of size n built by ipvland from its config (yielded); torn down after."""
    global GROUP
    GROUP = PER_NS[layout]
    work = Path(tempfile.mkdtemp(prefix=f"ipvland-inproc-{n}-"))
    config = work / "config.yaml"
    config.write_text(yaml.safe_dump(document(n), sort_keys=False))
    fresh_parent()
    try:
        cold = ipvland_cold(spec_mod.load(config))
        if not cold["ok"]:
            raise RuntimeError(f"cold apply failed: {cold['failures'][:5]}")
        yield config
    finally:
        teardown()
        shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def inproc_daemon(config: Path) -> Iterator[Any]:
    """A daemon on config in this process, after its start turn, whose further turns the caller
    drives (Daemon.run_job, next_job, cycle), its netlink monitor running as in `ipvland run`."""
    from ipvland import marks
    from ipvland.daemon import Daemon as RealDaemon
    from ipvland.schedule import Trigger

    state = config.parent / "state"
    d = RealDaemon(config, state_dir=state, watch_files=False, kernel_factory=lambda: marks.open_kernel(state))
    with d.sources():
        d.run_job(Trigger.START)
        if d.spec is None:
            raise RuntimeError(f"the config did not load: {(d.choice.errors or [])[:3]}")
        yield d


def resync_profile(n: int, layout: str, repeats: int = 3, steady: float = 0.0) -> dict[str, Any]:
    """What one resync of the daemon costs (issue 13, steady_cpu_percent_default): the daemon's own
    config read, reconcile and status write in this process (inproc_daemon), the CPU of `repeats` resyncs
    (process-wide: the monitor thread counts), then one more under pyinstrument. With `steady`: then
    workload 6 on the same lab (a real `ipvland run` at the default interval), without the rest of the
    bench."""
    from ipvland.schedule import Trigger

    measured: dict[str, Any] = {}
    with ipvland_lab(n, layout) as config:
        with inproc_daemon(config) as d:
            cpu, wall, noop, objects, collections = [], [], [], [], []
            spec = d.spec
            for _ in range(repeats):
                c0, w0 = time.process_time(), time.perf_counter()
                d.run_job(Trigger.RESYNC)  # a resync reads the config files again, reconciles, writes status
                cpu.append(round(time.process_time() - c0, 3))
                wall.append(round(time.perf_counter() - w0, 3))
                if (d.last or {}).get("changes"):
                    raise RuntimeError(f"the resync changed something: {d.last['changes'][:5]}")
                # the same observe + plan on the daemon's kernel, outside the daemon: does a cost grow?
                c0 = time.process_time()
                plan(spec, observe(d.kernel, spec))
                noop.append(round(time.process_time() - c0, 3))
                objects.append(len(gc.get_objects()))
                collections.append([g["collections"] for g in gc.get_stats()])
            text = profiled(f"daemon resync N={n} ({layout})", lambda: d.run_job(Trigger.RESYNC))
        if steady > 0:
            with steady_window(config, config.parent, steady, 600.0) as measured:
                pass
    return {**measured, "n": n, "layout": layout, "resync_cpu_s": cpu, "resync_wall_s": wall,
            "observe_plan_cpu_s": noop,
            "gc_objects": objects, "gc_collections": collections,
            "steady_cpu_percent_estimate": round(100 * statistics.median(cpu) / DEFAULT_INTERVAL, 3),
            "profile_text": text}


def repair_profile(n: int, layout: str, events: int, seed: int = 1) -> dict[str, Any]:
    """Where a repair's time goes (issue 13, repair_p99_ms_per_ns): the daemon's turns driven here
    (inproc_daemon), as serve() drives them. Per event (alternately a device deleted, its addresses
    deleted: drift()): the wait until the scheduler hands out the job (the monitor's read, the
    debounce), then the job's turn (reconcile, status), its CPU and wall time, and whether the device
    is back. Every other turn runs under pyinstrument; the call trees add up."""
    from pyinstrument import Profiler

    prof = Profiler(interval=0.001, use_timing_thread=True)
    rows: list[dict[str, Any]] = []
    with ipvland_lab(n, layout) as config, inproc_daemon(config) as d, Kernel() as k:
        # what a repair reads in the host's namespace besides the lab (kernel-made entries included)
        host = {"links": len(k.links(None)), "addresses": len(k.addresses(None)),
                "routes": len(k.routes(None)), "neighbors": len(k.neighbors(None))}
        log(f"host namespace: {host}")
        for e, i in enumerate(event_devices(n, events, random.Random(seed))):
            kind = "delete" if e % 2 == 0 else "flush"
            t0 = drift(k, i, kind)
            job = d.next_job()
            if job is None:
                raise RuntimeError("the daemon stopped")
            t_job = time.perf_counter()
            c0 = time.process_time()
            if e % 2:
                prof.start()
            d.cycle(job)
            if e % 2:
                prof.stop()
            row = {"kind": kind, "i": i, "to_job_ms": round((t_job - t0) * 1000, 1),
                   "turn_ms": round((time.perf_counter() - t_job) * 1000, 1),
                   "turn_cpu_ms": round((time.process_time() - c0) * 1000, 1),
                   "scope": sorted(str(x) for x in job.namespaces), "parents": sorted(job.parents),
                   "result": (d.last or {}).get("result"), "repaired": repaired(k, i)}
            rows.append(row)
            log(f"repair {e}: {row}")
            time.sleep(0.3)  # the repair's own echoes: let them reach the scheduler, as between events
            while d.has_requests():  # and run them as the daemon would (scoped no-op turns), untimed
                job = d.next_job()
                if job is not None:
                    d.cycle(job)
    totals = sorted(r["to_job_ms"] + r["turn_ms"] for r in rows)
    return {"n": n, "layout": layout, "host_objects": host, "events": rows, "repair_ms": totals,
            "profile_text": f"==== daemon repair turns N={n} ({layout}), every other event\n"
                            + prof.output_text(unicode=False, color=False)}


# ---------------------------------------------------------------- one size


def profiled(title: str, fn: Callable[[], object]) -> str:
    """fn's call tree from pyinstrument, a sampling profiler: unlike cProfile, it does not inflate
    call-heavy code (netlink message encoding, attribute walking), so the proportions hold. With a
    timing thread: pyinstrument reads the clock at every call and return, and in the emulated VM
    a clock read costs about 55 us (its own warning), which made the earlier profiles of this bench
    about ten times slower than the code they profiled, inflated where calls are many."""
    from pyinstrument import Profiler

    prof = Profiler(interval=0.001, use_timing_thread=True)
    prof.start()
    try:
        fn()
    finally:
        prof.stop()
    return f"==== {title}\n" + prof.output_text(unicode=False, color=False)


def run_size(n: int, args: argparse.Namespace, checkpoint: Any = lambda res: None,
             layout: str = "tens") -> dict[str, Any]:
    global GROUP
    GROUP = PER_NS[layout]
    work = Path(tempfile.mkdtemp(prefix=f"ipvland-bench-{n}-"))
    config = work / "config.yaml"
    config.write_text(yaml.safe_dump(document(n), sort_keys=False))
    spec = spec_mod.load(config)
    assert len(spec.devices) == n
    res: dict[str, Any] = {"n": n, "layout": layout, "namespaces": len(namespaces(n)),
                           "neighbors": max(1, n // 10)}
    want = expected_census(n)

    if not args.no_baselines:
        log(f"N={n}: baseline cold apply (ip -batch)")
        fresh_parent()
        res["cold_baseline"] = baseline_cold(n, work, args.baseline_sample)
        got, done = census(n), res["cold_baseline"].pop("census")
        res["cold_baseline"]["census_ok"] = got == done
        if got != done:  # recorded, not fatal: the baseline is iproute2's business
            res["cold_baseline"]["census"] = got
            log(f"N={n}: after the baseline the lab holds {got}, expected {done}")
    log(f"N={n}: ipvland cold apply")
    fresh_parent()
    res["cold_ipvland"] = ipvland_cold(spec)
    got = census(n)
    res["cold_ipvland"]["census_ok"] = got == want
    if got != want or not res["cold_ipvland"]["ok"]:
        raise RuntimeError(f"ipvland cold apply did not converge: {got} != {want}; {res['cold_ipvland']}")
    if "cold_baseline" in res:
        res["cold_apply_ratio"] = round(res["cold_ipvland"]["seconds"] / res["cold_baseline"]["seconds"], 3)

    checkpoint(res)
    runs = args.noop_runs or (3 if n >= 1000 else 5)
    with Kernel() as k:
        log(f"N={n}: netlink writes")
        res.update(writes_workload(spec, k))
        if layout == "tens" and n == args.foreign_at:
            res["foreign"] = foreign_workload(spec, k, runs, work, args.foreign_routes, args.foreign_neighbors)
            res["noop_foreign_ratio"] = res["foreign"]["ratio"]
    checkpoint(res)

    if args.profile and n in args.profile:
        log(f"N={n}: profiling cold apply and no-op (pyinstrument)")
        fresh_parent()
        text = profiled(f"cold apply N={n}", lambda: ipvland_cold(spec))
        with Kernel() as k:
            noop_ipvland(spec, k, 1)
            text += profiled(f"no-op reconcile x3 N={n}", lambda: noop_ipvland(spec, k, 3))
        res["profile_text"] = text
        print(text, flush=True)

    if not args.no_daemon:
        idle = args.idle_seconds if args.idle_seconds is not None else (30.0 if n >= 1000 else 20.0)
        log(f"N={n}: daemon: startup, {args.events} drift events, {idle:.0f}s idle")
        res.update(daemon_workload(n, config, work, args.events, idle, args.startup_timeout, seed=n,
                                   budget=args.repair_budget))
        checkpoint(res)

    # 6 around 2: the steady-state window (five minutes at N=1000) holds the read-only workloads. Last:
    # right after a cold apply of 1000 devices the kernel still sends a transient of neighbor
    # messages for minutes (README, "Idle"), which is not the steady state.
    steady = args.steady_seconds if args.steady_seconds is not None else (DEFAULT_INTERVAL if n >= 1000 else 0.0)
    window = None
    if steady > 0 and layout == "tens" and not args.no_daemon:
        log(f"N={n}: steady state at the default interval: {steady:.0f}s, the no-op workloads inside")
        window = steady_window(config, work, steady, args.startup_timeout)
    with window or contextlib.nullcontext({}) as steady_res:
        log(f"N={n}: no-op reconcile x{runs}")
        with Kernel() as k:
            noop_ipvland(spec, k, 1)  # warm-up: sockets opened once, as in the daemon
            res["noop_ipvland"] = noop_ipvland(spec, k, runs)
        checkpoint(res)
        if not args.no_baselines:
            bruns = args.noop_baseline_runs or (1 if n >= 100 else 3)
            log(f"N={n}: no-op baseline (ip dumps) x{bruns}")
            res["noop_baseline"] = noop_baseline(n, bruns, args.baseline_sample)
            res["noop_ratio"] = round(res["noop_ipvland"]["seconds"] / res["noop_baseline"]["seconds"], 3)
            checkpoint(res)
        if window is not None:
            log(f"N={n}: the rest of the steady-state window")
    res.update(steady_res)
    teardown()
    shutil.rmtree(work, ignore_errors=True)
    return res


# ---------------------------------------------------------------- output


COLUMNS: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
    ("N", lambda r: str(r["n"])),
    ("cold ipvland s", lambda r: f"{r['cold_ipvland']['seconds']:.2f}"),
    ("cold ip-batch s", lambda r: f"{r['cold_baseline']['seconds']:.2f}"),
    ("cold ratio", lambda r: f"{r['cold_apply_ratio']:.2f}"),
    ("no-op ipvland s", lambda r: f"{r['noop_ipvland']['seconds']:.3f}"),
    ("no-op ip s", lambda r: f"{r['noop_baseline']['seconds']:.3f}"),
    ("no-op ratio", lambda r: f"{r['noop_ratio']:.2f}"),
    ("repair p50 ms", lambda r: f"{r['repair_p50_ms']:.0f}" if "repair_p50_ms" in r else "-"),
    ("repair p99 ms", lambda r: f"{r['repair_p99_ms']:.0f}" if "repair_p99_ms" in r else "-"),
    ("events", lambda r: str(r.get("repair_events", "-"))),
    ("no-op writes", lambda r: str(r["noop_writes"])),
    ("1-drift writes", lambda r: str(r["one_drift_writes"])),
    ("RSS MB", lambda r: f"{r['rss_mb']:.1f}" if "rss_mb" in r else "-"),
    ("idle CPU %", lambda r: f"{r['idle_cpu_percent']:.2f} ({r['idle_window_s']:.0f}s)"
     if "idle_cpu_percent" in r else "-"),
]


def table(results: list[dict[str, Any]]) -> str:
    head = "| " + " | ".join(c for c, _ in COLUMNS) + " |"
    sep = "|" + "|".join(" --- " for _ in COLUMNS) + "|"
    def cell(f: Callable[[dict[str, Any]], str], r: dict[str, Any]) -> str:
        try:
            return f(r)
        except KeyError:  # a size cut off before that workload
            return "-"

    rows = ["| " + " | ".join(cell(f, r) for _, f in COLUMNS) + " |" for r in results]
    return "\n".join([head, sep, *rows])


def headline(results: list[dict[str, Any]]) -> dict[str, Any]:
    by = {r["n"]: r for r in results}
    big = by[max(by)]
    h: dict[str, Any] = {"at_size": big["n"], "noop_writes": big["noop_writes"],
                         "one_drift_writes": big["one_drift_writes"]}
    h.update({k: big[k] for k in ("cold_apply_ratio", "noop_ratio") if k in big})  # not with --no-baselines
    if 100 in by and 1000 in by:
        growth = by[1000]["noop_ipvland"]["seconds"] / by[100]["noop_ipvland"]["seconds"]
        h["noop_growth_100_to_1000"] = round(growth, 2)
    for key in ("repair_p50_ms", "repair_p99_ms", "rss_mb", "idle_cpu_percent", "idle_window_s",
                "steady_cpu_percent_default", "steady_window_s"):
        if key in big:
            h[key] = big[key]
    foreign = [r for r in results if "noop_foreign_ratio" in r]
    if foreign:
        h["noop_foreign_ratio"] = foreign[0]["noop_foreign_ratio"]
    return h


PER_NS_KEYS = ("repair_p50_ms", "repair_p99_ms", "noop_ratio", "cold_apply_ratio", "rss_mb", "fds")


def headline_per_ns(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The per-ns layout's keys (issue 13), from its largest size: `<key>_per_ns`."""
    big = max(results, key=lambda r: r["n"])
    h: dict[str, Any] = {"at_size_per_ns": big["n"]}
    for key in PER_NS_KEYS:
        if key in big:
            h[f"{key}_per_ns"] = big[key]
    return h


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10,100,1000")
    ap.add_argument("--layout", choices=("tens", "per-ns", "both"), default="both",
                    help="tens: ten ipvlans per namespace; per-ns: one per namespace (the container "
                         "layout); both (default): tens at every size, then per-ns at --per-ns-sizes")
    ap.add_argument("--per-ns-sizes", help="sizes of the per-ns layout (default: the largest of --sizes)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--events", type=int, default=50,
                    help="drift events per size (default 50; at most two per device, see event_devices)")
    ap.add_argument("--idle-seconds", type=float, help="idle CPU window (default 30 at N>=1000, else 20)")
    ap.add_argument("--noop-runs", type=int, help="no-op reconcile repetitions (default 5, 3 at N>=1000)")
    ap.add_argument("--noop-baseline-runs", type=int, help="no-op baseline repetitions (default 3, 1 at N>=100)")
    ap.add_argument("--baseline-sample", type=int, default=25,
                    help="iproute2 baselines: run the per-namespace processes in at most this many lab "
                         "namespaces, evenly spread, and scale their time to all (default 25)")
    ap.add_argument("--foreign-at", type=int, default=100,
                    help="tens layout size at which to measure the no-op under a foreign load (default 100; 0: never)")
    ap.add_argument("--foreign-routes", type=int, default=100_000)
    ap.add_argument("--foreign-neighbors", type=int, default=1000)
    ap.add_argument("--startup-timeout", type=float, default=600.0)
    ap.add_argument("--repair-budget", type=float,
                    help="stop the drift events of a size after this many seconds (JSON: repair_events)")
    ap.add_argument("--steady-seconds", type=float,
                    help=f"steady-state CPU window at the default interval (default {DEFAULT_INTERVAL:g} at "
                         "N>=1000, else 0: not measured)")
    ap.add_argument("--no-daemon", action="store_true", help="skip workloads 3, 5 and 6")
    ap.add_argument("--no-baselines", action="store_true",
                    help="skip the iproute2 baselines (no ratios): the daemon's figures in a third of the time")
    ap.add_argument("--profile", type=lambda s: {int(x) for x in s.split(",")},
                    help="sizes at which to profile (pyinstrument) the cold apply and the no-op (extra runs)")
    ap.add_argument("--profile-resync", type=int, metavar="N",
                    help="only this: build the lab of size N (--layout tens or per-ns), time and profile "
                         "the daemon's resync in process, print it (and write --json)")
    ap.add_argument("--profile-repair", type=int, metavar="N",
                    help="only this: build the lab of size N (--layout tens or per-ns), drive --events repairs "
                         "of the daemon in process, time and profile them, print it (and write --json)")
    args = ap.parse_args(argv)
    if args.profile_resync or args.profile_repair:
        if os.geteuid() != 0:
            ap.error("needs root (run bench/run)")
        layout = "per-ns" if args.layout == "per-ns" else "tens"
        if args.profile_repair:
            res = repair_profile(args.profile_repair, layout, args.events)
        else:
            res = resync_profile(args.profile_resync, layout, args.noop_runs or 3, args.steady_seconds or 0.0)
        print(res["profile_text"], flush=True)
        print(json.dumps({k: v for k, v in res.items() if k != "profile_text"}, indent=1))
        if args.json:
            args.json.write_text(json.dumps({k: v for k, v in res.items() if k != "profile_text"}, indent=1) + "\n")
            args.json.with_suffix(".profile.txt").write_text(res["profile_text"])
        return 0
    sizes = [int(x) for x in args.sizes.split(",") if x]
    if any(n < 10 or n % 10 for n in sizes):
        ap.error("sizes must be multiples of 10")
    per_ns_sizes = [int(x) for x in args.per_ns_sizes.split(",") if x] if args.per_ns_sizes else sizes[-1:]
    runs: list[tuple[str, int]] = []
    if args.layout in ("tens", "both"):
        runs += [("tens", n) for n in sizes]
    if args.layout in ("per-ns", "both"):
        runs += [("per-ns", n) for n in (sizes if args.layout == "per-ns" else per_ns_sizes)]
    if os.geteuid() != 0:
        ap.error("needs root (run bench/run)")
    wall0 = time.monotonic()
    results: list[dict[str, Any]] = []

    def document_of(results: list[dict[str, Any]], partial: dict[str, Any] | None = None) -> dict[str, Any]:
        tens = [r for r in results if r["layout"] == "tens"]
        per_ns = [r for r in results if r["layout"] == "per-ns"]
        def strip(rs: list[dict[str, Any]]) -> dict[str, Any]:
            return {str(r["n"]): {k: v for k, v in r.items() if k != "profile_text"} for r in rs}

        out: dict[str, Any] = {}
        if tens:
            out = {"headline": headline(tens), **headline(tens)}
        if per_ns:
            out.setdefault("headline", {}).update(headline_per_ns(per_ns))
            out.update(headline_per_ns(per_ns))
        out.update({
            "environment": {"kernel": platform.release(), "python": platform.python_version(),
                            "in_vm": os.environ.get("IPVLAND_IN_VM") == "1", "cpus": os.cpu_count(),
                            "idle_window_note": "idle_cpu_percent is measured over idle_window_s seconds "
                                                "(30 s at N>=1000, else 20 s, unless --idle-seconds)"},
            "wall_s": round(time.monotonic() - wall0, 1), "sizes": strip(tens), "sizes_per_ns": strip(per_ns)})
        if partial is not None:  # a size still running (or cut off): what it measured so far
            out["partial"] = {k: v for k, v in partial.items() if k != "profile_text"}
        return out

    def checkpoint(partial: dict[str, Any] | None) -> None:
        if args.json:
            args.json.write_text(json.dumps(document_of(results, partial), indent=1) + "\n")

    for layout, n in runs:
        t = time.monotonic()
        r = run_size(n, args, checkpoint, layout)
        r["wall_s"] = round(time.monotonic() - t, 1)
        log(f"N={n} ({layout}) done in {r['wall_s']:.0f}s")
        results.append(r)
        checkpoint(None)
    out = document_of(results)
    for layout in ("tens", "per-ns"):
        rows = [r for r in results if r["layout"] == layout]
        if rows:
            print(f"layout {layout}:\n" + table(rows))
    print(json.dumps(out["headline"], indent=1))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")
        prof = "".join(r.get("profile_text", "") for r in results)
        if prof:
            args.json.with_suffix(".profile.txt").write_text(prof)
    return 0


if __name__ == "__main__":
    sys.exit(main())
