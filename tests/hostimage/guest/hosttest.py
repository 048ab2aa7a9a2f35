#!/usr/bin/python3
"""The host checks, run inside the systemd host image by ipvland-hosttest.service (systemd as PID 1).

Boot 1 runs PHASE1, then reboots the guest; boot 2 runs PHASE2, then powers off. Each check prints one line
on the serial console, `HOSTCHECK PASS|FAIL NAME detail`, which tests/hostimage/test_hostimage.py turns into one
pytest result each. Only the standard library: this file runs on the image's own python3, and the host test
imports it to learn the check names.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import traceback
from collections.abc import Callable
from pathlib import Path

STATE = Path("/var/lib/ipvland-hosttest")
DROPINS = Path("/etc/ipvland/config.d")
CHANGE = re.compile(r"^[+~-] ")  # the daemon's one line per change: "+ link web0 ...", "- route ...", "~ ..."


def out(line: str) -> None:
    print(line, flush=True)


def sh(cmd: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=timeout, check=False)


def wait_until(pred: Callable[[], bool], timeout: float, step: float = 0.1) -> float | None:
    """Seconds until pred() held, None when it never did within timeout."""
    t0 = time.monotonic()
    while True:
        if pred():
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            return None
        time.sleep(step)


def prop(unit: str, name: str) -> str:
    return sh(f"systemctl show -p {name} --value {unit}").stdout.strip()


def status() -> dict:
    return json.loads(Path("/run/ipvland/status.json").read_text())


def journal(unit: str = "ipvland", invocation: str | None = None) -> list[dict]:
    where = f"_SYSTEMD_INVOCATION_ID={invocation}" if invocation else ""
    done = sh(f"journalctl -u {unit} {where} -o json --no-pager")
    entries = []
    for line in done.stdout.splitlines():
        try:
            entries.append(json.loads(line))
        except ValueError:
            continue
    return entries


def messages(entries: list[dict]) -> list[str]:
    return [e["MESSAGE"] for e in entries if isinstance(e.get("MESSAGE"), str)]


def change_lines(invocation: str | None = None) -> list[str]:
    return [m for m in messages(journal(invocation=invocation)) if CHANGE.match(m)]


def ifindex(netns: str, dev: str) -> int | None:
    done = sh(f"ip -n {netns} -j link show dev {dev}")
    if done.returncode != 0:
        return None
    return json.loads(done.stdout)[0]["ifindex"]


def has_addr(netns: str, dev: str, addr: str) -> bool:
    return f" {addr} " in sh(f"ip -n {netns} -o addr show dev {dev}").stdout + " "


def ping(netns: str, target: str) -> bool:
    return sh(f"ip netns exec {netns} ping -c 1 -W 3 {target}").returncode == 0


def write_dropin(name: str, text: str) -> None:
    """As the README says to write config files: a temp file, then a rename."""
    tmp = DROPINS / f".{name}.tmp"
    tmp.write_text(text)
    os.replace(tmp, DROPINS / name)


def reload() -> subprocess.CompletedProcess[str]:
    return sh("systemctl reload ipvland", timeout=120)


def parent_route_present() -> bool:
    return "192.0.2.1 " in sh("ip route show 192.0.2.1/32 proto 212").stdout


def parent_neighbor_present() -> bool:
    return "02:00:00:00:0b:99" in sh("ip neigh show 192.0.2.99 dev eth1").stdout


class Failed(Exception):
    pass


def need(ok: object, message: str) -> None:
    if not ok:
        raise Failed(message)


# ------------------------------------------------------------------------------------------ boot 1


def ready_after_first_reconcile() -> str:
    # This unit is ordered after ipvland.service (Type=notify): it starts only once READY=1 was sent.
    need(prop("ipvland", "ActiveState") == "active" and prop("ipvland", "SubState") == "running",
         f"ipvland is {prop('ipvland', 'ActiveState')}/{prop('ipvland', 'SubState')}")
    last = status().get("last_reconcile") or {}
    need(last.get("result") == "ok", f"first reconcile: {last.get('result')}: {last.get('errors')}")
    return f"READY after a reconcile that ended {last.get('result')} ({last.get('duration')} s)"


def namespaces_visible_to_the_host() -> str:
    # Issue 10, defect 1: the sandboxed daemon must fill the namespace /run/netns/web names for everyone.
    need("web" in sh("ip netns list").stdout, "ip netns list has no web")
    link = sh("ip -n web -d link show web0")
    need(link.returncode == 0, f"ip -n web link show web0: {link.stderr.strip()}")
    need("ipvlan  mode l3s" in link.stdout, f"not an l3s ipvlan: {link.stdout!r}")
    need("alias ipvland" in link.stdout, "no ownership alias")
    need(has_addr("web", "web0", "192.0.2.10/24"), "no 192.0.2.10/24 on web0")
    need("default dev web0" in sh("ip -n web route show default").stdout, "no default route in web")
    need(parent_route_present(), "no peer route 192.0.2.1 proto ipvland on eth1")
    need(parent_neighbor_present(), "no neighbor 192.0.2.99 on eth1")
    need(ping("web", "192.0.2.1"), "ip netns exec web ping 192.0.2.1 failed")
    need(sh("ip netns exec peer ping -c 1 -W 3 192.0.2.10").returncode == 0, "the peer cannot ping 192.0.2.10")
    return "ip netns exec web sees web0 (l3s, 192.0.2.10/24) and reaches the peer, both ways"


def status_line_in_systemctl() -> str:
    text = prop("ipvland", "StatusText")
    need(text, "no STATUS= text")
    need(text in sh("systemctl status --no-pager ipvland").stdout, "systemctl status does not show it")
    return text


def journal_one_line_per_change() -> str:
    entries = journal()
    created = [e for e in entries if str(e.get("MESSAGE", "")).startswith("+ link web0 ")]
    need(len(created) == 1, f"{len(created)} '+ link web0' lines")
    need(created[0].get("PRIORITY") == "6", f"a change logged at priority {created[0].get('PRIORITY')}, not 6 (info)")
    noise = [m for m in messages(entries) if "psched" in m or "tc subsystem" in m]
    need(not noise, f"pyroute2's tc noise in the journal (issue 10, defect 5): {noise}")
    need(not [m for m in messages(entries) if "Traceback" in m], "a traceback in the journal")
    return f"{len(change_lines())} change lines, at priority 6; no tc noise"


def security_of_the_running_unit() -> str:
    done = sh("systemd-analyze security --no-pager ipvland")
    m = re.search(r"Overall exposure level for ipvland.service: (\d+\.\d+)", done.stdout + done.stderr)
    need(m, f"no exposure score: {done.stdout[-300:]} {done.stderr[-300:]}")
    assert m is not None
    need(float(m.group(1)) <= 2.3, f"exposure {m.group(1)} > 2.3")
    return f"exposure {m.group(1)}"


def units_verify_clean() -> str:
    units = "/etc/systemd/system/ipvland.service /etc/systemd/system/ipvland-wait-online.service"
    done = sh(f"systemd-analyze verify {units}")
    need(done.returncode == 0 and not done.stdout.strip() and not done.stderr.strip(),
         f"rc {done.returncode}: {(done.stdout + done.stderr).strip()[-400:]}")
    return "no findings"


def app_ordered_after_network_online() -> str:
    need(prop("ipvland-hosttest-app", "Result") == "success",
         f"the app unit failed: {prop('ipvland-hosttest-app', 'Result')}")
    text = Path("/run/ipvland-hosttest-app.txt").read_text()
    need("192.0.2.10/24" in text, f"the app saw no address: {text!r}")
    need(" 0% packet loss" in text, f"the app could not reach the peer: {text!r}")
    online_done = int(prop("ipvland-wait-online", "ExecMainExitTimestampMonotonic") or 0)
    app_start = int(prop("ipvland-hosttest-app", "ExecMainStartTimestampMonotonic") or 0)
    need(0 < online_done <= app_start, f"wait-online exited at {online_done}, the app started at {app_start}")
    return f"the app started {(app_start - online_done) / 1e6:.2f} s after ipvland-wait-online; saw 192.0.2.10, pinged"


def reload_applies_an_edit() -> str:
    # Issue 10, defect 2: ExecReload= must work without /bin/kill, and return once the reload is done.
    need(not Path("/bin/kill").exists() and not Path("/usr/bin/kill").exists(), "this image has a kill binary")
    write_dropin("db.yaml", "version: 1\nparents:\n  eth1:\n    devices:\n      db0:\n        netns: db\n"
                 "        addresses: [192.0.2.11/24]\n        routes: [{to: default}]\n")
    t0 = time.monotonic()
    done = reload()
    took = time.monotonic() - t0
    need(done.returncode == 0, f"systemctl reload: {done.stderr.strip()}")
    need(wait_until(lambda: has_addr("db", "db0", "192.0.2.11/24"), 10) is not None, "db0 never appeared")
    need(ping("db", "192.0.2.1"), "db cannot reach the peer")
    return f"systemctl reload returned in {took:.1f} s; db0 in place"


def ipv6_device_writes_its_sysctl_from_the_sandbox() -> str:
    # An IPv6 address makes ipvland set the device's keep_addr_on_down (a /proc/sys write), which the
    # unit's sandbox (ProtectKernelTunables=yes, ProcSubset=pid) hides: it goes through the host's root.
    write_dropin("v6.yaml", "version: 1\nparents:\n  eth1:\n    devices:\n      v60:\n        netns: v6\n"
                 "        addresses: ['2001:db8::10/64']\n")
    try:
        done = reload()
        need(done.returncode == 0, f"systemctl reload: {done.stderr.strip()}")
        need(wait_until(lambda: has_addr("v6", "v60", "2001:db8::10/64"), 15) is not None, "no 2001:db8::10/64 on v60")
        kept = sh("ip netns exec v6 cat /proc/sys/net/ipv6/conf/v60/keep_addr_on_down").stdout.strip()
        need(kept == "1", f"keep_addr_on_down of v60 is {kept!r}, not 1")
        last = status().get("last_reconcile") or {}
        need(last.get("result") == "ok", f"reconcile: {last.get('result')}: {last.get('errors')}")
    finally:
        (DROPINS / "v6.yaml").unlink(missing_ok=True)
        reload()
    need(wait_until(lambda: ifindex("v6", "v60") is None, 15) is not None, "v60 stayed after its drop-in went")
    return "v60 (IPv6) made, keep_addr_on_down=1 written from the sandbox; removed with its drop-in"


def bad_config_keeps_the_network() -> str:
    before = (ifindex("web", "web0"), ifindex("db", "db0"))
    write_dropin("zz-bad.yaml", "version: 1\nparents: [\n")
    done = reload()
    errors = [e for e in journal() if str(e.get("MESSAGE", "")).startswith("config:")]
    (DROPINS / "zz-bad.yaml").unlink()
    again = reload()
    need(again.returncode == 0, f"reload after the fix: {again.stderr.strip()}")
    need(done.returncode != 0, "systemctl reload of a broken config succeeded")
    need(errors and all(e.get("PRIORITY") == "3" for e in errors), f"config errors not at priority 3: {errors[-1:]}")
    need((ifindex("web", "web0"), ifindex("db", "db0")) == before, "a device was re-created or removed")
    return (f"reload of a broken file: exit {done.returncode}; {len(errors)} error line(s) at priority 3; "
            "nothing touched")


def late_parent_picked_up_at_once() -> str:
    # Issue 10, item 6: a NIC that appears after ipvland started (the unit's resync is 300 s here).
    write_dropin("late.yaml", "version: 1\nparents:\n  late0:\n    mode: l2\n    devices:\n      late1:\n"
                 "        netns: late\n        addresses: [203.0.113.10/24]\n")
    need(reload().returncode == 0, "reload of late.yaml failed")
    need(sh("ip link add late0 type veth peer name late0p && ip link set late0 up").returncode == 0, "no veth")
    took = wait_until(lambda: has_addr("late", "late1", "203.0.113.10/24"), 10)
    (DROPINS / "late.yaml").unlink()
    reload()
    sh("ip link del late0")
    need(took is not None and took < 10, f"the late parent's device came after {took} s (the resync is 300 s)")
    return f"late1 up {took:.2f} s after late0 appeared"


def _networkd_round(action: str, settle: float = 12.0) -> tuple[str, float | None, int]:
    """(what of ipvland's was removed, seconds until all was back, ipvland's writes after)."""
    changes_before = len(change_lines())
    removed: set[str] = set()
    sh(action)
    t0 = time.monotonic()
    back_at = None
    while time.monotonic() - t0 < settle:
        missing = {what for what, present in (("route", parent_route_present()),
                                              ("neighbor", parent_neighbor_present())) if not present}
        removed |= missing
        if missing:
            back_at = None
        elif back_at is None:
            back_at = time.monotonic() - t0
        time.sleep(0.05)
    writes = len(change_lines()) - changes_before
    if removed:  # what networkd said it did, for whoever reads the console
        since = sh("journalctl -u systemd-networkd -n 60 -o cat --no-pager").stdout.splitlines()
        for line in since:
            if any(w in line for w in ("oreign", "emov", "eth1", "Dropping", "down")):
                out(f"HOSTLOG networkd: {line[:200]}")
    return "+".join(sorted(removed)) or "nothing", back_at, writes


def networkd_beside_ipvland() -> str:
    # Issue 10, item 7: networkd manages eth1. Its defaults remove foreign routes when it (re)starts.
    need(prop("systemd-networkd", "ActiveState") == "active", "networkd is not running")
    need("198.51.100.1/24" in sh("ip -o addr show dev eth1").stdout, "networkd did not configure eth1")
    report = []
    for action in ("systemctl restart systemd-networkd", "networkctl reconfigure eth1"):
        removed, back, writes = _networkd_round(action)
        need(back is not None, f"after `{action}` ipvland's {removed} did not come back")
        need(writes <= 4, f"after `{action}` ipvland wrote {writes} changes: a fight")
        report.append(f"{action}: removed {removed}, all back at {back:.2f} s, {writes} write(s)")
    # The recommended drop-ins (etc/systemd/): networkd leaves foreign routes alone and keeps its own
    # static address (removing a device's last IPv4 address flushes its routes); networkd 252 still drops
    # foreign neighbor entries, which ipvland re-adds, once each.
    Path("/etc/systemd/networkd.conf.d").mkdir(parents=True, exist_ok=True)
    Path("/etc/systemd/networkd.conf.d/ipvland.conf").write_text(
        Path("/usr/local/lib/ipvland-hosttest/networkd-ipvland.conf").read_text())
    Path("/etc/systemd/network/20-eth1.network.d").mkdir(parents=True, exist_ok=True)
    Path("/etc/systemd/network/20-eth1.network.d/ipvland.conf").write_text(
        Path("/usr/local/lib/ipvland-hosttest/network-ipvland.conf").read_text())
    removed, back, writes = _networkd_round("systemctl restart systemd-networkd")
    need("route" not in removed, "with the drop-ins, a networkd restart removed ipvland's route")
    need(back is not None and writes <= 1, f"with the drop-ins, a restart: removed {removed}, {writes} write(s)")
    report.append(f"with the drop-ins, restart: removed {removed}, {writes} write(s)")
    # `networkctl reconfigure` applies networkd's config from scratch: it removes and re-adds its own
    # address even with KeepConfiguration=static, and the kernel flushes the NIC's routes with it.
    removed, back, writes = _networkd_round("networkctl reconfigure eth1")
    need(back is not None and writes <= 2, f"with the drop-ins, reconfigure: removed {removed}, {writes} write(s)")
    report.append(f"with the drop-ins, reconfigure: removed {removed}, all back at {back:.2f} s, {writes} write(s)")
    need("198.51.100.1/24" in sh("ip -o addr show dev eth1").stdout, "networkd's own address is gone")
    return "; ".join(report)


def container_runtime_uses_the_namespace() -> str:
    # Issue 10, item 8: systemd-nspawn (Debian's systemd-container) joins /run/netns/web.
    before = (ifindex("web", "web0"), ifindex("db", "db0"))
    changes = len(change_lines())
    cmd = ("systemd-nspawn -q --pipe -D /var/lib/machines/mini --network-namespace-path=/run/netns/web "
           "/bin/ping -c 1 -W 5 192.0.2.1")
    first = sh(cmd, timeout=120)
    need(first.returncode == 0, f"container 1: rc {first.returncode}: {(first.stdout + first.stderr).strip()[-300:]}")
    second = sh(cmd, timeout=120)  # the container restarted
    need(second.returncode == 0, f"container 2: rc {second.returncode}: {(second.stderr).strip()[-300:]}")
    time.sleep(1)
    need((ifindex("web", "web0"), ifindex("db", "db0")) == before, "a device changed across the container's restart")
    need(len(change_lines()) == changes, "ipvland changed something across the container's restart")
    return "systemd-nspawn in netns web pinged the peer, twice; nothing else moved"


def stop_leaves_the_network() -> str:
    before = (ifindex("web", "web0"), ifindex("db", "db0"))
    need(sh("systemctl stop ipvland").returncode == 0, "stop failed")
    need(prop("ipvland", "ActiveState") == "inactive", "not stopped")
    need((ifindex("web", "web0"), ifindex("db", "db0")) == before, "stopping changed the devices")
    need(ping("web", "192.0.2.1") and parent_route_present(), "stopping cut the network")
    need(sh("systemctl start ipvland").returncode == 0, "start failed")
    invocation = prop("ipvland", "InvocationID")
    need(not change_lines(invocation), f"the restarted daemon changed: {change_lines(invocation)}")
    return "devices, route and ping kept across stop; the new start changed nothing"


def no_spurious_watchdog() -> str:
    # Issue 10, defect 3: the watchdog must not fire during normal work (reloads, creates, networkd rounds).
    need(prop("ipvland", "NRestarts") == "0", f"NRestarts={prop('ipvland', 'NRestarts')}")
    timeouts = [m for m in sh("journalctl --no-pager -u ipvland").stdout.splitlines() if "Watchdog timeout" in m]
    need(not timeouts, f"{timeouts}")
    return "no restart, no watchdog timeout"


def watchdog_restarts_a_stuck_daemon() -> str:
    app_started = prop("ipvland-hosttest-app", "ActiveEnterTimestampMonotonic")
    pid = int(prop("ipvland", "MainPID"))
    os.kill(pid, signal.SIGSTOP)
    took = wait_until(lambda: prop("ipvland", "NRestarts") == "1" and prop("ipvland", "ActiveState") == "active"
                      and prop("ipvland", "MainPID") not in ("0", str(pid)), 120, step=0.5)
    need(took is not None, f"not restarted: NRestarts={prop('ipvland', 'NRestarts')}")
    invocation = prop("ipvland", "InvocationID")
    wait_until(lambda: status().get("pid") != pid, 30)
    logged = messages(journal(invocation=invocation))
    need(not [m for m in logged if "Permission denied" in m or "EACCES" in m],
         "the restarted daemon cannot read its namespaces (issue 10, defect 4)")
    need(not change_lines(invocation), f"the restarted daemon changed: {change_lines(invocation)}")
    need((status().get("last_reconcile") or {}).get("result") == "ok", "the restarted daemon is not converged")
    # A consumer ordered after ipvland-wait-online (Wants=, not Requires=) lives through ipvland's restarts.
    need(prop("ipvland-hosttest-app", "ActiveEnterTimestampMonotonic") == app_started,
         "the application unit was restarted with ipvland")
    return f"SIGSTOP: restarted after {took:.0f} s, converged without a write; the app unit untouched"


PHASE1: tuple[Callable[[], str], ...] = (
    ready_after_first_reconcile, namespaces_visible_to_the_host, status_line_in_systemctl,
    journal_one_line_per_change, security_of_the_running_unit, units_verify_clean,
    app_ordered_after_network_online, reload_applies_an_edit, ipv6_device_writes_its_sysctl_from_the_sandbox,
    bad_config_keeps_the_network,
    late_parent_picked_up_at_once, networkd_beside_ipvland, container_runtime_uses_the_namespace,
    stop_leaves_the_network, no_spurious_watchdog, watchdog_restarts_a_stuck_daemon,
)


# ------------------------------------------------------------------------------------------ boot 2


def reboot_brings_everything_back() -> str:
    for ns, dev, addr in (("web", "web0", "192.0.2.10/24"), ("db", "db0", "192.0.2.11/24")):
        need(has_addr(ns, dev, addr), f"{dev} in {ns} has no {addr} after the reboot")
        need(ping(ns, "192.0.2.1"), f"{ns} cannot reach the peer after the reboot")
    need(parent_route_present() and parent_neighbor_present(), "parent route/neighbor missing after the reboot")
    return "namespaces (in /run, so gone), devices, addresses, route, neighbor: back"


def reboot_app_ordered_after_network_online() -> str:
    return app_ordered_after_network_online()


def reboot_wait_online_succeeded() -> str:
    need(prop("ipvland-wait-online", "Result") == "success", prop("ipvland-wait-online", "Result"))
    online = int(prop("ipvland-wait-online", "ExecMainExitTimestampMonotonic") or 0)
    return f"network-online.target reached {online / 1e6:.1f} s after the kernel started"


# ------------------------------------------------------------------------------- the DaemonSet's pod

LIB = Path("/usr/local/lib/ipvland-hosttest")
CONFIGMAPS = STATE / "configmaps"
POD_DROPIN = """# From the ConfigMap: an l3s device in a namespace the pod creates (hostPID: the node's mount ns).
version: 1
parents:
  eth1:
    devices:
      pod0:
        netns: podns
        addresses: [{addresses}, "2001:db8::20/64"]   # IPv6: a keep_addr_on_down write (/proc/sys)
"""


def _configmap(name: str, files: dict[str, str], generation: int) -> None:
    """A ConfigMap volume as the kubelet writes it: the files in a timestamped directory, `..data` a
    symlink to it, each file a symlink through `..data`; an update swaps `..data` with one rename()."""
    top = CONFIGMAPS / name
    data = top / f"..2026_11_29_00_00_0{generation}.000000000"
    data.mkdir(parents=True)
    for file, text in files.items():
        (data / file).write_text(text)
        if not (top / file).is_symlink():
            (top / file).symlink_to(f"..data/{file}")
    tmp = top / "..data_tmp"
    tmp.symlink_to(data.name)
    os.replace(tmp, top / "..data")


def _pod_exec(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", "exec", "ipvland", *argv], capture_output=True, text=True, timeout=60,
                          check=False)


def _network_snapshot() -> str:
    namespaces = sorted(line.split()[0] for line in sh("ip netns list").stdout.splitlines())
    parts = []
    for ns in [None, *namespaces]:
        at = f"-n {ns} " if ns else ""
        for what in ("-d link", "addr", "route show table all", "-6 route show table all", "neigh"):
            parts.append(sh(f"ip {at}{what}").stdout)
    # counters and neighbor states move by themselves; what ipvland could change does not
    return re.sub(r"(REACHABLE|STALE|DELAY|PROBE|valid_lft \S+|preferred_lft \S+)", "", "\n".join(parts))


def container_image_runs_as_the_daemonset() -> str:
    """Issue 14: the image of deploy/container, imported with podman, run exactly as the DaemonSet's pod
    (tests/hostimage/podman_run.py translates deploy/kubernetes/daemonset.yaml). It takes over from the
    systemd unit on this host (same state directory), converges, creates a named namespace the host
    sees, picks up a ConfigMap update (the `..data` swap), and exits 0 on SIGTERM leaving the network."""
    pod = json.loads((LIB / "podman-run.json").read_text())
    report: list[str] = []

    def step(what: str) -> None:
        report.append(what)
        out(f"HOSTCHECK INFO pod: {what}")

    t0 = time.monotonic()
    imported = sh(f"{LIB}/import {LIB}/ipvland-rootfs.tar", timeout=600)
    need(imported.returncode == 0, f"podman import: {imported.stderr.strip()[-400:]}")
    image = imported.stdout.strip()
    step(f"imported {image} in {time.monotonic() - t0:.0f} s")
    need(sh("systemctl stop ipvland").returncode == 0, "could not stop the unit (the pod takes over)")
    host_config = Path("/etc/ipvland/config.yaml").read_text()
    _configmap("ipvland-config", {"config.yaml": host_config}, 1)
    _configmap("ipvland-dropins", {"50-pod.yaml": POD_DROPIN.format(addresses="192.0.2.20/24")}, 1)
    started = subprocess.run(["podman", "run", "--detach", *pod["run"]], capture_output=True, text=True,
                             timeout=300, check=False)
    need(started.returncode == 0, f"podman run: {started.stderr.strip()[-400:]}")
    try:
        ready = wait_until(lambda: _pod_exec(pod["readiness"]).returncode == 0, 240, step=2)
        if ready is None:
            logs = sh("podman logs --tail 15 ipvland").stdout + sh("podman logs --tail 15 ipvland").stderr
            need(False, f"the readiness probe never passed: {_pod_exec(pod['readiness']).stdout.strip()[-300:]}"
                        f" | logs: {logs.strip()[-600:]}")
        step(f"ready {ready:.0f} s after podman run")
        need(_pod_exec(pod["liveness"]).returncode == 0, "the liveness probe fails")
        need("podns" in sh("ip netns list").stdout, "the host does not see namespace podns (made by the pod)")
        need(has_addr("podns", "pod0", "192.0.2.20/24"), "pod0 in podns has no 192.0.2.20/24")
        need(has_addr("web", "web0", "192.0.2.10/24"), "the host config's web0 lost its address")
        need(ping("podns", "192.0.2.1"), "podns cannot reach the peer")
        kept = sh("ip netns exec podns cat /proc/sys/net/ipv6/conf/pod0/keep_addr_on_down").stdout.strip()
        need(kept == "1", f"keep_addr_on_down of pod0 is {kept!r}: the pod could not write the sysctl")
        step("podns made by the pod, seen by the host, reaches the peer; pod0's IPv6 sysctl written")
        _configmap("ipvland-dropins",
                   {"50-pod.yaml": POD_DROPIN.format(addresses="192.0.2.20/24, 192.0.2.21/24")}, 2)
        picked = wait_until(lambda: has_addr("podns", "pod0", "192.0.2.21/24"), 120, step=0.5)
        need(picked is not None, "the ConfigMap update (..data swap) was not applied in 120 s")
        step(f"ConfigMap swap applied in {picked:.1f} s")
        need(wait_until(lambda: _pod_exec(pod["readiness"]).returncode == 0, 60, step=1) is not None,
             "not ready again after the update")
        before = _network_snapshot()
        # SIGTERM to the daemon, as the kubelet sends it (`podman stop` was seen not to deliver it to a
        # --pid host container here: no "SIGTERM received" logged, SIGKILL after the grace period).
        stop_signal = sh("podman inspect --format {{.Config.StopSignal}} ipvland").stdout.strip()
        out(f"HOSTCHECK INFO pod: the image's stop signal: {stop_signal}")
        killed = sh("podman kill --signal TERM ipvland")
        need(killed.returncode == 0, f"podman kill: {killed.stderr.strip()[-300:]}")
        waited = sh(f"timeout {pod['grace']} podman wait ipvland", timeout=pod["grace"] + 30)
        code = waited.stdout.strip()
        if code != "0":
            logs = sh("podman logs --timestamps --tail 12 ipvland")
            need(False, f"the pod did not exit 0 within {pod['grace']} s of SIGTERM (wait: {code or waited.returncode})"
                        "; its last lines: " + " | ".join((logs.stdout + logs.stderr).strip().splitlines()))
        after = _network_snapshot()
        need(before == after, "stopping the pod changed the network")
        step("SIGTERM: exit 0, the network as it was")
    finally:
        sh("podman rm --force ipvland", timeout=120)
        sh("systemctl start ipvland", timeout=120)
    return "; ".join(report)


PHASE2: tuple[Callable[[], str], ...] = (
    reboot_brings_everything_back, reboot_app_ordered_after_network_online, reboot_wait_online_succeeded,
    container_image_runs_as_the_daemonset,
)


def run(checks: tuple[Callable[[], str], ...]) -> None:
    for check in checks:
        t0 = time.monotonic()
        try:
            detail = check()
            out(f"HOSTCHECK PASS {check.__name__} {detail} [{time.monotonic() - t0:.1f}s]")
        except Failed as e:
            out(f"HOSTCHECK FAIL {check.__name__} {e} [{time.monotonic() - t0:.1f}s]")
            _log_tail()
        except Exception as e:
            last = traceback.format_exc().strip().splitlines()[-3:]
            out(f"HOSTCHECK FAIL {check.__name__} {type(e).__name__}: {e} {' | '.join(last)}")
            _log_tail()


def _log_tail() -> None:
    """After a failure: the daemon's last journal lines, for whoever reads the console log."""
    for line in sh("journalctl -u ipvland -n 25 -o short-monotonic --no-pager").stdout.splitlines():
        out(f"HOSTLOG {line}")


def only_these() -> set[str]:
    """`hostchecks=a,b` on the kernel command line (tests/hostimage/boot IMAGE LOG --only a,b): run just
    those checks, in one boot (for working on one check; the full run never sets it)."""
    for word in Path("/proc/cmdline").read_text().split():
        if word.startswith("hostchecks="):
            return set(word.partition("=")[2].split(","))
    return set()


def main() -> None:
    STATE.mkdir(parents=True, exist_ok=True)
    only = only_these()
    if only:
        run(tuple(c for c in (*PHASE1, *PHASE2) if c.__name__ in only))
        out("HOSTCHECK DONE")
        os.sync()
        sh("systemctl poweroff")
        return
    phase_file = STATE / "phase"
    phase = phase_file.read_text().strip() if phase_file.exists() else "1"
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    out(f"HOSTCHECK INFO boot{phase} checks start {uptime:.1f}s after the kernel started")
    if phase == "1":
        run(PHASE1)
        phase_file.write_text("2\n")
        out("HOSTCHECK INFO rebooting")
        os.sync()
        sh("systemctl reboot")
    else:
        run(PHASE2)
        out("HOSTCHECK DONE")
        os.sync()
        sh("systemctl poweroff")


if __name__ == "__main__":
    main()
