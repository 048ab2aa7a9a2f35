"""The whole IPVLAN procedure, declarative, on a real kernel (issue 5).

A "remote host" is the namespace `peer`, joined by a veth to the parent NIC lab0. ipvland configures
this host (in-process) and the peer's side (`ipvland apply` run inside the peer namespace, fed by
`ipvland peers`). Every promise of the kernel's ipvlan documentation is checked with real packets.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ipvland import spec as spec_mod
from ipvland.kernel import Kernel
from ipvland.netns import entered
from ipvland.peers import as_document, peer_neighbors
from ipvland.reconcile import Report, reconcile

IPVLAND = [sys.executable, "-m", "ipvland"]
PEER_IP = "192.0.2.1"


def sh(*cmd: str, check: bool = True, netns: str | None = None) -> subprocess.CompletedProcess[str]:
    full = ["ip", "netns", "exec", netns, *cmd] if netns else list(cmd)
    return subprocess.run(full, capture_output=True, text=True, check=check)


def ping(netns: str, target: str, *extra: str) -> bool:
    return sh("ping", "-c", "1", "-W", "1", *extra, target, netns=netns, check=False).returncode == 0


@pytest.fixture
def wire(tmp_path: Path) -> Iterator[Path]:
    """lab0 (this host's NIC) <-> lab0p in namespace peer (the remote host, 192.0.2.1/24)."""
    sh("ip", "netns", "add", "peer")
    # Fixed MACs: a random one is rewritten by udev at some later moment, and a MAC change flushes
    # every neighbor entry on the device, permanent ones included (seen on 6.1).
    sh("ip", "link", "add", "lab0", "address", "02:00:00:00:0a:01", "type", "veth", "peer", "name", "lab0p",
       "address", "02:00:00:00:0a:02", "netns", "peer")
    sh("ip", "link", "set", "lab0", "up")
    sh("ip", "-n", "peer", "link", "set", "lo", "up")
    sh("ip", "-n", "peer", "link", "set", "lab0p", "up")
    sh("ip", "-n", "peer", "addr", "add", f"{PEER_IP}/24", "dev", "lab0p")
    yield tmp_path
    sh("nft", "delete", "table", "inet", "ipvtest", check=False)
    sh("ip", "link", "del", "lab0", check=False)
    for ns in Path("/run/netns").glob("*"):
        sh("ip", "netns", "del", ns.name, check=False)


def host_config(dirpath: Path, mode: str, probes: str = "") -> Path:
    path = dirpath / f"host-{mode}.yaml"
    path.write_text(textwrap.dedent(f"""\
        version: 1
        parents:
          lab0:
            mode: {mode}
            routes: [{{to: {PEER_IP}/32}}]   # the peer route through the NIC: l3/l3s egress is routed here
            devices:
              c1: {{netns: c1, addresses: [192.0.2.10/24], routes: [{{to: default}}]}}
              c2: {{netns: c2, addresses: [192.0.2.11/24], routes: [{{to: default}}]}}
        """) + probes)
    return path


def converge_host(path: Path, **kw: Any) -> Report:
    with Kernel() as kernel:
        return reconcile(spec_mod.load(path), kernel, **kw)


def configure_peer(host_cfg: Path) -> list[str]:
    """The peer's side, done by an ipvland running inside the peer namespace, fed by `peers`.

    In-process (the same code `ipvland peers` and `ipvland apply` run) to spare the VM two
    interpreter start-ups; the CLI itself is exercised in test_peers_ip_format_is_what_the_peer_types.
    """
    with Kernel() as kernel:
        macs = {link.name: link.mac for link in kernel.links(None) if link.mac}
    entries, problems = peer_neighbors(spec_mod.load(host_cfg), macs)
    assert not problems
    peer_spec = spec_mod.loads(yaml.safe_dump(as_document(entries, "lab0p")), "<peer>")
    with entered("peer"), Kernel() as kernel:  # its own namespace is the peer's
        report = reconcile(peer_spec, kernel)
    assert report.ok, json.dumps(report.to_json(), indent=1)
    return [str(n.address) for n in entries]


def nft_counters(ip: str) -> dict[str, int]:
    """Packets seen by the input and output hooks of the default namespace for `ip`."""
    out = json.loads(sh("nft", "-j", "list", "table", "inet", "ipvtest").stdout)
    counts = {}
    for item in out["nftables"]:
        rule = item.get("rule")
        if rule:
            counter = next(e["counter"] for e in rule["expr"] if "counter" in e)
            counts[rule["chain"]] = counter["packets"]
    return counts


def install_nft(ip: str) -> None:
    rules = f"""
        table inet ipvtest {{
          chain input {{ type filter hook input priority 0; ip daddr {ip} counter; }}
          chain output {{ type filter hook output priority 0; ip saddr {ip} counter; }}
        }}
    """
    subprocess.run(["nft", "-f", "-"], input=rules, text=True, check=True)


def rx_packets(dev: str, netns: str) -> int:
    stats = json.loads(sh("ip", "-n", netns, "-j", "-s", "link", "show", dev).stdout)[0]["stats64"]["rx"]
    return int(stats["packets"]) + int(stats.get("multicast", 0))


def test_l2_peer_reaches_ipvlan_without_static_entries_and_siblings_talk(wire: Path) -> None:
    cfg = host_config(wire, "l2")
    assert converge_host(cfg).ok
    assert ping("peer", "192.0.2.10"), "L2 answers ARP: no neighbor entry needed on the peer"
    assert ping("c1", "192.0.2.11"), "siblings reach each other"
    install_nft("192.0.2.10")
    assert ping("peer", "192.0.2.10")
    assert nft_counters("192.0.2.10") == {"input": 0, "output": 0}, "L2 bypasses the default namespace"


def test_l3_needs_the_peer_neighbor_entry_is_noarp_and_hooks_see_egress_only(wire: Path) -> None:
    cfg = host_config(wire, "l3")
    assert converge_host(cfg).ok
    flags = json.loads(sh("ip", "-n", "c1", "-j", "link", "show", "c1").stdout)[0]["flags"]
    assert "NOARP" in flags
    assert not ping("peer", "192.0.2.10"), "without the peer's neighbor entry, L3 is unreachable"
    assert configure_peer(cfg) == ["192.0.2.10", "192.0.2.11"]
    entry = json.loads(sh("ip", "-n", "peer", "-j", "neigh", "show", "192.0.2.10").stdout)[0]
    lab0_mac = json.loads(sh("ip", "-j", "link", "show", "lab0").stdout)[0]["address"]
    assert entry["lladdr"] == lab0_mac and "PERMANENT" in entry["state"]
    install_nft("192.0.2.10")
    assert ping("peer", "192.0.2.10"), "with the entry (address -> parent's MAC) it is reachable"
    counts = nft_counters("192.0.2.10")
    assert counts["output"] >= 1, "L3 egress goes through the default namespace's output hook"
    assert counts["input"] == 0, "L3 ingress does not go through the default namespace's input hook"


def test_l3s_hooks_in_default_namespace_see_ingress_and_egress(wire: Path) -> None:
    cfg = host_config(wire, "l3s")
    assert converge_host(cfg).ok
    configure_peer(cfg)
    install_nft("192.0.2.10")
    assert ping("peer", "192.0.2.10")
    counts = nft_counters("192.0.2.10")
    assert counts["input"] >= 1 and counts["output"] >= 1, counts


@pytest.mark.parametrize("mode", ["l2", "l3", "l3s"])
def test_broadcast_and_multicast_reach_only_l2(wire: Path, mode: str) -> None:
    assert converge_host(host_config(wire, mode)).ok
    before = rx_packets("c1", "c1")
    sh("ping", "-b", "-c", "3", "-i", "0.2", "-W", "1", "192.0.2.255", netns="peer", check=False)
    sh("ping", "-c", "3", "-i", "0.2", "-W", "1", "-I", "lab0p", "224.0.0.1", netns="peer", check=False)
    received = rx_packets("c1", "c1") - before
    if mode == "l2":
        assert received >= 3, "an L2 ipvlan receives broadcast and multicast"
    else:
        assert received == 0, f"an {mode} ipvlan must receive no broadcast or multicast"


def test_every_ipvlan_has_the_parents_mac(wire: Path) -> None:
    assert converge_host(host_config(wire, "l3s")).ok
    parent_mac = json.loads(sh("ip", "-j", "link", "show", "lab0").stdout)[0]["address"]
    for dev in ("c1", "c2"):
        assert json.loads(sh("ip", "-n", dev, "-j", "link", "show", dev).stdout)[0]["address"] == parent_mac


def test_peers_ip_format_is_what_the_peer_types(wire: Path) -> None:
    cfg = host_config(wire, "l3")
    assert converge_host(cfg).ok
    lines = subprocess.run([*IPVLAND, "peers", "-c", str(cfg), "--peer-dev", "lab0p"],
                           capture_output=True, text=True, check=True).stdout.splitlines()
    mac = json.loads(sh("ip", "-j", "link", "show", "lab0").stdout)[0]["address"]
    assert lines == [f"ip neigh replace 192.0.2.{n} lladdr {mac} dev lab0p nud permanent" for n in (10, 11)]
    for line in lines:
        sh(*line.split()[:1], "-n", "peer", *line.split()[1:])
    assert ping("peer", "192.0.2.11")


PROBE = f"""probes:
  - {{netns: c1, target: {PEER_IP}, tries: 2, timeout: 1}}
"""


def test_probes_run_after_a_changing_apply(wire: Path) -> None:
    report = converge_host(host_config(wire, "l2", probes=PROBE))
    assert report.ok and [p.ok for p in report.probes] == [True]
    out = subprocess.run([*IPVLAND, "probe", "-c", str(host_config(wire, "l2", probes=PROBE))],
                         capture_output=True, text=True)
    assert out.returncode == 0 and "ok" in out.stdout


def test_rollback_restores_mode_and_addresses_when_a_probe_breaks(wire: Path) -> None:
    good = host_config(wire, "l2", probes=PROBE)
    assert converge_host(good).ok
    index = json.loads(sh("ip", "-n", "c1", "-j", "link", "show", "c1").stdout)[0]["ifindex"]
    # another mode, and c1 renumbered out of the peer's subnet: the peer cannot answer c1 any more
    bad = host_config(wire, "l3", probes=PROBE)
    bad.write_text(bad.read_text().replace("192.0.2.10/24", "198.51.100.10/24"))
    cli = subprocess.run([*IPVLAND, "apply", "-c", str(bad), "--rollback-on-probe-failure", "--json"],
                         capture_output=True, text=True)
    assert cli.returncode == 1
    report = json.loads(cli.stdout)
    assert report["rollback"] is not None and report["rollback"]["ok"], report["rollback"]
    assert "FAILED" in report["rollback"]["broken"][0]
    info = json.loads(sh("ip", "-n", "c1", "-d", "-j", "link", "show", "c1").stdout)[0]
    assert info["linkinfo"]["info_data"]["mode"] == "l2" and info["ifindex"] == index
    addrs = json.loads(sh("ip", "-n", "c1", "-j", "-4", "addr", "show", "c1").stdout)[0]["addr_info"]
    assert [a["local"] for a in addrs] == ["192.0.2.10"]
    assert ping("c1", PEER_IP), "connectivity is back"
