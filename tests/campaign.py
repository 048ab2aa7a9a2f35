"""The randomized convergence campaign's machinery (tests/kernel/test_campaign.py drives it).

Everything random comes from one `random.Random`, and every choice is made from the spec (never
from what the kernel shows), so a seed replays the same rounds. Pieces:

- `Gen`: random valid specs (as YAML documents) and random edits of them, kept inside the set of
  specs that can converge on a kernel (addresses unique, route keys unique per namespace, gateways
  on a connected subnet, ...) and outside the known-open classes that `Switches` leaves off;
- `drift`: changes by hand with iproute2, on the objects of the spec last applied;
- `Foreign`: other tools' objects (an ipvlan on another parent, a veth, routes and permanent
  neighbors of other protocols) that ipvland must leave exactly as they are;
- `live_owned` / `expected_owned`: what ipvland owns, read with iproute2 (independently of
  ipvland's own netlink code) and as the spec says it must be;
- `AddressWatch`: raw rtnetlink listeners, one per namespace, that record every address and link
  deletion while ipvland works, so an address that stays in the spec cannot vanish unseen.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import os
import random
import socket
import struct
import subprocess
from dataclasses import dataclass, field, fields
from typing import Any

from ipvland.kernel import _in_netns

Doc = dict[str, Any]
Ns = str | None

PARENTS = ("cp0", "cp1", "cp2", "cp3")  # veths the campaign creates; their peers are cpNp
NAMESPACES = ("cn0", "cn1", "cn2")
FOREIGN_NS = "cfx"  # a namespace the spec never names
DEVICE_NAMES = tuple(f"d{i}" for i in range(8))
MODES = ("l2", "l3", "l3s")
FLAGS = ("bridge", "private", "vepa")
MTUS = (1280, 1400, 1450, 1500)
TABLES = (None, None, 100, 200)


# ------------------------------------------------------------------ switches


@dataclass(frozen=True)
class Switches:
    """Classes of specs and drift the campaign can leave out, each naming an issue-11 case.

    Every class ipvland handles is on by default. `dup_routes` stays off: validation refuses such a
    spec (it cannot converge), so a generated one would only stop the round at load.
    IPVLAND_CAMPAIGN_ENABLE=name[,name...] (or `all`) switches classes on, IPVLAND_CAMPAIGN_DISABLE
    switches them off (to narrow a failure down).
    """

    v6_metric0: bool = True  # IPv6 routes with metric 0 (the kernel stores 1024)      (case 1)
    dup_routes: bool = False  # one route key (dst, table, metric) on two devices of a namespace (case 1)
    primary_drop: bool = True  # drop an IPv4 address while another of its subnet stays (case 7)
    tmp_leftovers: bool = True  # an `ipvtmp-*` device left by an interrupted create (case 10)
    parent_rename: bool = True  # a parent renamed by hand (and back)                  (case 10)
    netns_recreate_daemon: bool = True  # namespace deleted + re-created while the daemon runs (case 6)
    # Found by this campaign (tests/kernel/test_campaign_regressions.py):
    routes_on_down: bool = True  # routes on a `state: down` device: inactive until it is up
    v6_on_down: bool = True  # IPv6 addresses on a device that goes down (keep_addr_on_down)

    @classmethod
    def from_env(cls) -> Switches:
        known = {f.name for f in fields(cls)}
        chosen = {}
        for var, value in (("IPVLAND_CAMPAIGN_ENABLE", True), ("IPVLAND_CAMPAIGN_DISABLE", False)):
            names = {n.strip() for n in os.environ.get(var, "").split(",") if n.strip()}
            if "all" in names:
                names = known
            unknown = names - known
            if unknown:
                raise ValueError(f"{var}: unknown switch(es) {sorted(unknown)}; known: {sorted(known)}")
            chosen.update({n: value for n in names})
        return cls(**chosen)

    def on(self) -> list[str]:
        return [f.name for f in fields(self) if getattr(self, f.name)]


# ------------------------------------------------------------------ iproute2


def ip(*args: str, netns: Ns = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = ["ip", *(["-n", netns] if netns else []), *args]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)}: {done.stderr.strip()}")
    return done


def ipj(*args: str, netns: Ns = None) -> list[dict[str, Any]]:
    done = ip("-j", *args, netns=netns, check=False)
    if done.returncode != 0 or not done.stdout.strip():
        return []
    out: list[dict[str, Any]] = json.loads(done.stdout)
    return out


def named_namespaces() -> list[str]:
    try:
        return sorted(os.listdir("/run/netns"))
    except FileNotFoundError:
        return []


# ------------------------------------------------------------------ the spec generator


def _v4(parent: int, subnet: int, host: int) -> str:
    return f"10.{parent + 1}.{subnet}.{host}/24"


def _v6(parent: int, subnet: int, host: int) -> str:
    return f"2001:db8:{parent + 1}:{subnet}::{host:x}/64"


def _mac(rng: random.Random) -> str:
    return "02:" + ":".join(f"{rng.randrange(256):02x}" for _ in range(5))


def devices_of(doc: Doc) -> list[tuple[str, str, Doc]]:
    """(parent, name, device) of every device, in spec order."""
    return [(p, name, dev) for p, parent in (doc.get("parents") or {}).items()
            for name, dev in ((parent or {}).get("devices") or {}).items()]


def route_key(route: Doc, ns: Ns) -> tuple[Ns, int, ipaddress.IPv4Network | ipaddress.IPv6Network, int, int]:
    net = route_net(route)
    metric = route.get("metric")
    if metric is None:
        metric = 0 if net.version == 4 else 1024
    if net.version == 6 and metric == 0:
        metric = 1024  # what the kernel stores
    return (ns, net.version, net, route.get("table") or 254, metric)


def route_net(route: Doc) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    to = route["to"]
    if to == "default":
        via = route.get("via")
        return ipaddress.ip_network("::/0" if via is not None and ":" in via else "0.0.0.0/0")
    return ipaddress.ip_network(to)


@dataclass
class Gen:
    rng: random.Random
    switches: Switches
    tried: dict[str, int] = field(default_factory=dict)  # what was generated, by kind (printed)

    def count(self, what: str) -> None:
        self.tried[what] = self.tried.get(what, 0) + 1

    # -- pieces

    def address(self, parent: int, family: int) -> str:
        subnet, host = self.rng.randrange(2), self.rng.randrange(2, 60)
        return _v4(parent, subnet, host) if family == 4 else _v6(parent, subnet, host)

    def route(self, device: Doc | None, parent: int) -> Doc:
        """A route through a device (device given) or a parent; gateways on a connected subnet."""
        rng = self.rng
        family = rng.choice((4, 6))
        route: Doc = {}
        kind = rng.randrange(4)
        if kind == 0:
            route["to"] = "default"
        elif family == 4:
            host = f"198.18.{rng.randrange(4)}.{rng.randrange(1, 250)}/32"
            route["to"] = rng.choice(("198.51.100.0/24", "203.0.113.0/25", host))
        else:
            host = f"2001:db8:fd::{rng.randrange(1, 250):x}/128"
            route["to"] = rng.choice(("2001:db8:ff::/64", "2001:db8:fe::/48", host))
        gateway = self._gateway(device, parent, family)
        if gateway is not None and rng.random() < 0.5:
            route["via"] = gateway
        elif route["to"] == "default" and family == 6:
            route["to"] = "::/0"
        if rng.random() < 0.4:
            route["table"] = rng.choice((100, 200, 254))
        if rng.random() < 0.5:
            route["metric"] = rng.choice((0, 0, 10, 100, 1024, 2000))
        self.count(f"route.v{family}")
        return route

    def _gateway(self, device: Doc | None, parent: int, family: int) -> str | None:
        if device is None:  # a parent: the campaign gives cpN 10.200.N.1/24 and 2001:db8:200:N::1/64
            return f"10.200.{parent}.2" if family == 4 else f"2001:db8:200:{parent}::2"
        for a in device.get("addresses") or ():
            iface = ipaddress.ip_interface(a)
            if iface.version == family:
                return str(iface.network.network_address + 254)
        return None

    def neighbor(self, parent: int, on_parent: bool) -> Doc:
        family = self.rng.choice((4, 6))
        host = self.rng.randrange(60, 120)
        if on_parent:
            address = f"10.201.{parent}.{host}" if family == 4 else f"2001:db8:201:{parent}::{host:x}"
        else:
            address = f"10.{parent + 1}.{self.rng.randrange(2)}.{host}" if family == 4 else \
                f"2001:db8:{parent + 1}:{self.rng.randrange(2)}::{host:x}"
        self.count(f"neighbor.v{family}")
        return {"address": address, "lladdr": _mac(self.rng)}

    def device(self, parent: int, namespaces: list[str]) -> Doc:
        rng = self.rng
        dev: Doc = {}
        ns = rng.choice([None, *namespaces])
        if ns is not None:
            dev["netns"] = ns
        dev["addresses"] = [self.address(parent, rng.choice((4, 6))) for _ in range(rng.randrange(4))]
        if rng.random() < 0.3:
            dev["mtu"] = rng.choice(MTUS)
        if rng.random() < 0.15:
            dev["state"] = "down"
        elif rng.random() < 0.2:
            dev["state"] = "up"
        dev["routes"] = [self.route(dev, parent) for _ in range(rng.choice((0, 0, 1, 2)))]
        dev["neighbors"] = [self.neighbor(parent, False) for _ in range(rng.choice((0, 0, 1, 2)))]
        return dev

    def parent(self, index: int, namespaces: list[str]) -> Doc:
        rng = self.rng
        p: Doc = {"mode": rng.choice(MODES)}
        if rng.random() < 0.6:
            p["flags"] = rng.choice(FLAGS)
        p["routes"] = [self.route(None, index) for _ in range(rng.choice((0, 0, 1, 2)))]
        p["neighbors"] = [self.neighbor(index, True) for _ in range(rng.choice((0, 0, 1)))]
        names = rng.sample(DEVICE_NAMES, rng.randrange(0, 4))
        p["devices"] = {name: self.device(index, namespaces) for name in names}
        self.count(f"mode.{p['mode']}")
        return p

    def spec(self) -> Doc:
        rng = self.rng
        namespaces = rng.sample(NAMESPACES, rng.randrange(0, 4))
        chosen = sorted(rng.sample(range(len(PARENTS)), rng.randrange(1, 5)))
        doc: Doc = {"version": 1, "parents": {PARENTS[i]: self.parent(i, namespaces) for i in chosen}}
        return self.normalize(doc)

    # -- edits

    def edit(self, old: Doc) -> Doc:
        """A random edit of a spec (one to three mutations), normalized; never a known-open class."""
        for _ in range(20):
            doc = copy.deepcopy(old)
            for _ in range(self.rng.randrange(1, 4)):
                self._mutate(doc)
            doc = self.normalize(doc)
            if self.switches.primary_drop or not drops_a_primary(old, doc):
                return doc
        return copy.deepcopy(old)

    def _mutate(self, doc: Doc) -> None:
        rng = self.rng
        parents: Doc = doc["parents"]
        namespaces = sorted({d["netns"] for _, _, d in devices_of(doc) if d.get("netns")} | set(
            rng.sample(NAMESPACES, rng.randrange(0, 3))))
        devices = devices_of(doc)
        what = rng.choice(["parent+", "parent-", "mode", "flags", "device+", "device-", "device-netns",
                           "device-parent", "device-rename", "addresses", "address-move", "mtu", "state",
                           "routes", "neighbors", "parent-routes", "parent-neighbors", "whole"])
        self.count(f"edit.{what}")
        if what == "whole":
            fresh = self.spec()
            doc.clear()
            doc.update(fresh)
        elif what == "parent+":
            free = [i for i, name in enumerate(PARENTS) if name not in parents]
            if free:
                i = rng.choice(free)
                parents[PARENTS[i]] = self.parent(i, namespaces)
        elif what == "parent-" and len(parents) > 1:
            del parents[rng.choice(sorted(parents))]
        elif what in ("mode", "flags") and parents:
            p = parents[rng.choice(sorted(parents))]
            if what == "mode":
                p["mode"] = rng.choice(MODES)
            else:
                p["flags"] = rng.choice(FLAGS)
        elif what == "device+" and parents:
            name = rng.choice(sorted(parents))
            free = [n for n in DEVICE_NAMES if n not in parents[name].setdefault("devices", {})]
            if free:
                parents[name]["devices"][rng.choice(free)] = self.device(PARENTS.index(name), namespaces)
        elif (devices and what.startswith("device")) or what in ("addresses", "mtu", "state", "routes", "neighbors"):
            if not devices:
                return
            pname, dname, dev = rng.choice(devices)
            pi = PARENTS.index(pname)
            if what == "device-":
                del parents[pname]["devices"][dname]
            elif what == "device-netns":
                ns = rng.choice([None, *NAMESPACES])
                dev.pop("netns", None)
                if ns is not None:
                    dev["netns"] = ns
            elif what == "device-parent":
                other = rng.choice(sorted(parents))
                if other != pname:
                    del parents[pname]["devices"][dname]
                    parents[other].setdefault("devices", {})[dname] = dev
            elif what == "device-rename":
                free = [n for n in DEVICE_NAMES if n not in parents[pname]["devices"]]
                if free:
                    parents[pname]["devices"][rng.choice(free)] = parents[pname]["devices"].pop(dname)
            elif what == "addresses":
                addrs = dev.setdefault("addresses", [])
                if addrs and rng.random() < 0.5:
                    addrs.pop(rng.randrange(len(addrs)))
                else:
                    addrs.insert(rng.randrange(len(addrs) + 1), self.address(pi, rng.choice((4, 6))))
            elif what == "mtu":
                if dev.get("mtu") is not None and rng.random() < 0.3:
                    del dev["mtu"]
                else:
                    dev["mtu"] = rng.choice(MTUS)
            elif what == "state":
                dev["state"] = "up" if dev.get("state") == "down" else "down"
            elif what == "routes":
                routes = dev.setdefault("routes", [])
                if routes and rng.random() < 0.5:
                    routes.pop(rng.randrange(len(routes)))
                else:
                    routes.append(self.route(dev, pi))
            elif what == "neighbors":
                neighbors = dev.setdefault("neighbors", [])
                if neighbors and rng.random() < 0.5:
                    neighbors.pop(rng.randrange(len(neighbors)))
                else:
                    neighbors.append(self.neighbor(pi, False))
        elif what == "address-move" and len(devices) > 1:
            (_, _, a), (_, _, b) = rng.sample(devices, 2)
            if a.get("addresses"):
                moved = a["addresses"].pop(rng.randrange(len(a["addresses"])))
                b.setdefault("addresses", []).append(moved)
        elif what in ("parent-routes", "parent-neighbors") and parents:
            name = rng.choice(sorted(parents))
            key = what.split("-")[1]
            items = parents[name].setdefault(key, [])
            if items and rng.random() < 0.5:
                items.pop(rng.randrange(len(items)))
            elif key == "routes":
                items.append(self.route(None, PARENTS.index(name)))
            else:
                items.append(self.neighbor(PARENTS.index(name), True))

    # -- what keeps a spec valid and convergent

    def normalize(self, doc: Doc) -> Doc:
        """Drop whatever makes a spec invalid or unable to converge (or a known-open class)."""
        parents: Doc = doc.setdefault("parents", {})
        seen_names: set[tuple[Ns, str]] = set()
        seen_addrs: set[str] = set()
        route_keys: set[Any] = set()
        for pname in sorted(parents):
            parent = parents[pname] or {}
            parents[pname] = parent
            parent.setdefault("mode", self.rng.choice(MODES))
            for name in sorted(parent.get("devices") or {}):
                dev = parent["devices"][name]
                ns = dev.get("netns")
                if (ns, name) in seen_names:
                    del parent["devices"][name]
                    continue
                seen_names.add((ns, name))
                kept = []
                for a in dev.get("addresses") or ():
                    ip_only = str(ipaddress.ip_interface(a).ip)
                    if ip_only not in seen_addrs:
                        seen_addrs.add(ip_only)
                        kept.append(a)
                dev["addresses"] = kept
                if dev.get("state") == "down" and not self.switches.v6_on_down:
                    dev["addresses"] = [a for a in kept if ipaddress.ip_interface(a).version == 4]
                if dev.get("state") == "down" and not self.switches.routes_on_down:
                    dev["routes"] = []
                dev["routes"] = self._keep_routes(dev.get("routes") or [], dev, ns, route_keys)
                dev["neighbors"] = _unique_neighbors(dev.get("neighbors") or [])
            parent["routes"] = self._keep_routes(parent.get("routes") or [], None, None, route_keys)
            parent["neighbors"] = _unique_neighbors(parent.get("neighbors") or [])
        # Empty lists and maps are written out anyway: the YAML then shows the whole shape.
        return doc

    def _keep_routes(self, routes: list[Doc], dev: Doc | None, ns: Ns, keys: set[Any]) -> list[Doc]:
        kept = []
        for route in routes:
            net = route_net(route)
            via = route.get("via")
            if not self.switches.v6_metric0 and net.version == 6 and route.get("metric") == 0:
                route["metric"] = 1
            if via is not None and dev is not None:
                # the gateway must stay on a subnet the device has (addresses move between rounds)
                nets = [ipaddress.ip_interface(a).network for a in dev.get("addresses") or ()]
                if not any(ipaddress.ip_address(via) in n for n in nets):
                    continue
            key = route_key(route, ns)
            if key in keys and not self.switches.dup_routes:
                continue
            keys.add(key)
            kept.append(route)
        return kept


def _unique_neighbors(neighbors: list[Doc]) -> list[Doc]:
    seen: set[str] = set()
    kept = []
    for n in neighbors:
        if n["address"] not in seen:
            seen.add(n["address"])
            kept.append(n)
    return kept


def device_index(doc: Doc) -> dict[tuple[Ns, str], tuple[str, Doc]]:
    return {(d.get("netns"), name): (p, d) for p, name, d in devices_of(doc)}


def drops_a_primary(old: Doc, new: Doc) -> bool:
    """An IPv4 address leaves a device that keeps another address of the same subnet (case 7)."""
    before, after = device_index(old), device_index(new)
    for key, (parent, dev) in after.items():
        if key not in before or before[key][0] != parent:
            continue  # created anew: nothing to drop
        old_v4 = {ipaddress.ip_interface(a) for a in before[key][1].get("addresses") or ()
                  if ipaddress.ip_interface(a).version == 4}
        new_v4 = {ipaddress.ip_interface(a) for a in dev.get("addresses") or ()
                  if ipaddress.ip_interface(a).version == 4}
        gone, stays = old_v4 - new_v4, old_v4 & new_v4
        if any(g.network == s.network for g in gone for s in stays | (new_v4 - old_v4)):
            return True
    return False


# ------------------------------------------------------------------ drift by hand


def drift(rng: random.Random, doc: Doc, switches: Switches, *, daemon: bool = False) -> list[str]:
    """0-3 changes by hand to what the spec (last applied, converged) owns; returns what was done."""
    done: list[str] = []
    devices = devices_of(doc)
    parents = sorted(doc["parents"])
    kinds = ["del-device", "rename-device", "flush-addrs", "add-addr", "mtu", "mode", "updown",
             "del-route", "add-route", "del-neigh", "add-neigh", "netns-recreate", "parent-mtu"]
    if switches.tmp_leftovers:
        kinds.append("tmp-leftover")
    if switches.parent_rename:
        kinds.append("parent-rename")
    if daemon and not switches.netns_recreate_daemon:
        kinds.remove("netns-recreate")
    for _ in range(rng.choice((0, 1, 1, 2, 3))):
        kind = rng.choice(kinds)
        line = _drift_one(rng, kind, doc, devices, parents)
        if line:
            done.append(line)
    return done


def _run(line: str, *args: str, netns: Ns = None) -> str:
    r = ip(*args, netns=netns, check=False)
    return f"{line} (ip {'-n ' + netns + ' ' if netns else ''}{' '.join(args)}: " \
           f"{'ok' if r.returncode == 0 else r.stderr.strip()})"


def _drift_one(rng: random.Random, kind: str, doc: Doc, devices: list[tuple[str, str, Doc]],
               parents: list[str]) -> str | None:
    if kind == "parent-mtu":
        p = rng.choice(parents)
        return _run(kind, "link", "set", p, "mtu", str(rng.choice((1300, 1420, 1500))))
    if kind == "parent-rename":  # renamed back after one apply (test_campaign.py checks that apply)
        p = rng.choice(parents)
        return _run(f"{kind} {p}", "link", "set", p, "name", p + "x")
    if kind == "netns-recreate":
        used = sorted({d.get("netns") for _, _, d in devices if d.get("netns")})
        if not used:
            return None
        ns = rng.choice(used)
        ip("netns", "del", ns, check=False)
        return _run(kind, "netns", "add", ns)
    if kind == "tmp-leftover":
        p = rng.choice(parents)
        mode = (doc["parents"][p] or {}).get("mode", "l2")
        return _run(kind, "link", "add", "link", p, "name", f"ipvtmp-{rng.randrange(16**8):08x}", "type",
                    "ipvlan", "mode", mode)
    if not devices:
        return None
    pname, name, dev = rng.choice(devices)
    ns = dev.get("netns")
    pi = PARENTS.index(pname)
    if kind == "del-device":
        return _run(kind, "link", "del", name, netns=ns)
    if kind == "rename-device":
        ip("link", "set", name, "down", netns=ns, check=False)
        return _run(kind, "link", "set", name, "name", name + "r", netns=ns)
    if kind == "flush-addrs":
        return _run(kind, "addr", "flush", "dev", name, netns=ns)
    if kind == "add-addr":
        a = rng.choice((f"10.250.{pi}.{rng.randrange(1, 250)}/24", f"2001:db8:250:{pi}::{rng.randrange(1, 250):x}/64"))
        return _run(kind, "addr", "add", a, "dev", name, netns=ns)
    if kind == "mtu":
        return _run(kind, "link", "set", name, "mtu", str(rng.choice((1300, 1350, 1500))), netns=ns)
    if kind == "mode":
        return _run(kind, "link", "set", name, "type", "ipvlan", "mode", rng.choice(MODES), netns=ns)
    if kind == "updown":
        return _run(kind, "link", "set", name, rng.choice(("down", "up")), netns=ns)
    if kind == "del-route":
        routes = dev.get("routes") or []
        if not routes:
            return None
        r = rng.choice(routes)
        net = route_net(r)
        args = ["-6" if net.version == 6 else "-4", "route", "del", str(net), "dev", name, "proto", "212"]
        if r.get("table"):
            args += ["table", str(r["table"])]
        if r.get("metric") is not None:
            args += ["metric", str(r["metric"])]
        return _run(kind, *args, netns=ns)
    if kind == "add-route":
        return _run(kind, "route", "add", f"192.0.2.{rng.randrange(1, 250)}", "dev", name, "proto", "212",
                    "table", str(rng.choice((254, 100))), netns=ns)
    if kind == "del-neigh":
        neighbors = dev.get("neighbors") or []
        if not neighbors:
            return None
        return _run(kind, "neigh", "del", rng.choice(neighbors)["address"], "dev", name, netns=ns)
    if kind == "add-neigh":
        return _run(kind, "neigh", "add", f"10.251.0.{rng.randrange(1, 250)}", "lladdr", _mac(rng), "dev", name,
                    "nud", "permanent", "proto", "212", netns=ns)
    raise AssertionError(kind)


# ------------------------------------------------------------------ the lab and foreign objects


def make_lab() -> None:
    """The parents (veths cp0-cp3 with fixed MACs) and the foreign parent fp0; everything else clean."""
    clean_lab()
    for i, p in enumerate(PARENTS):
        ip("link", "add", p, "address", f"02:00:00:00:c{i}:01", "type", "veth", "peer", "name", p + "p",
           "address", f"02:00:00:00:c{i}:02")
        ip("link", "set", p, "up")
        ip("link", "set", p + "p", "up")
        # gateways for the parents' routes (foreign addresses: ipvland never touches a parent's)
        ip("addr", "add", f"10.200.{i}.1/24", "dev", p)
        ip("addr", "add", f"2001:db8:200:{i}::1/64", "dev", p, "nodad")
    ip("link", "add", "fp0", "address", "02:00:00:00:f0:01", "type", "veth", "peer", "name", "fp0p",
       "address", "02:00:00:00:f0:02")
    ip("link", "set", "fp0", "up")
    ip("netns", "add", FOREIGN_NS)


def clean_lab() -> None:
    for name in (*PARENTS, *(p + "x" for p in PARENTS), "fp0", "fv0"):
        ip("link", "del", name, check=False)
    for ns in named_namespaces():
        ip("netns", "del", ns, check=False)


@dataclass
class Foreign:
    """Other tools' objects; the campaign adds and removes them, ipvland must leave them alone."""

    rng: random.Random
    made: list[str] = field(default_factory=list)

    def shuffle(self, namespaces: list[str]) -> list[str]:
        """Add one or two foreign objects (and sometimes remove the foreign ipvlan or veth)."""
        rng = self.rng
        lines = []
        for _ in range(rng.randrange(1, 3)):
            kind = rng.choice(("ipvlan", "veth", "route", "route6", "neigh"))
            where = rng.choice([None, FOREIGN_NS, *namespaces])
            n = rng.randrange(1, 250)
            if kind == "ipvlan":
                name = f"fi{rng.randrange(3)}"
                args = ["link", "add", "link", "fp0", "name", name]
                if where is not None:
                    args += ["netns", where]
                lines.append(_run("foreign-ipvlan", *args, "type", "ipvlan", "mode", rng.choice(MODES)))
                lines.append(_run("foreign-ipvlan-addr", "addr", "add", f"100.64.0.{n}/24", "dev", name, netns=where))
            elif kind == "veth":
                ip("link", "del", "fv0", check=False)
                lines.append(_run("foreign-veth", "link", "add", "fv0", "type", "veth", "peer", "name", "fv0p",
                                  *(["netns", where] if where is not None else [])))
                ip("link", "set", "fv0", "up", check=False)
                ip("link", "set", "fv0p", "up", netns=where, check=False)
                lines.append(_run("foreign-veth-route", "route", "add", f"100.67.{n}.0/24", "dev", "fv0p", "proto",
                                  "static", netns=where))
            elif kind in ("route", "route6"):
                p = rng.choice(PARENTS)
                proto = rng.choice(("static", "boot", "99", "dhcp"))
                to = f"100.65.{n}.0/24" if kind == "route" else f"2001:db8:65:{n:x}::/64"
                table = rng.choice(("254", "100"))
                lines.append(_run("foreign-route", "route", "add", to, "dev", p, "proto", proto, "table", table))
            else:
                p = rng.choice(PARENTS)
                lines.append(_run("foreign-neigh", "neigh", "replace", f"100.66.0.{n}", "lladdr", _mac(rng),
                                  "dev", p, "nud", "permanent"))
        if rng.random() < 0.2:
            for ns in [None, FOREIGN_NS, *namespaces]:
                for name in ("fi0", "fi1", "fi2", "fv0p"):
                    ip("link", "del", name, netns=ns, check=False)
            lines.append("foreign: removed the foreign ipvlans and veths")
        return lines


def _owned_link(entry: dict[str, Any]) -> bool:
    return entry.get("ifalias") == "ipvland" or entry["ifname"].startswith("ipvtmp-")


@dataclass
class NsState:
    links: list[dict[str, Any]]
    addrs: list[dict[str, Any]]
    routes: list[tuple[int, dict[str, Any]]]  # (family, route)
    neighbors: list[dict[str, Any]]


def read_state() -> dict[Ns, NsState]:
    """Every namespace as iproute2 shows it: three `ip` processes per namespace (one a batch)."""
    out: dict[Ns, NsState] = {}
    for ns in [None, *named_namespaces()]:
        where = ["-n", ns] if ns else []
        runs = [subprocess.run(["ip", "-d", "-j", *where, "-batch", "-"],
                               input="link show\naddr show\nneigh show nud permanent\n",
                               capture_output=True, text=True, check=False)]
        runs += [subprocess.run(["ip", "-j", family, *where, "route", "show", "table", "all"],
                                capture_output=True, text=True, check=False) for family in ("-4", "-6")]
        if any(run.returncode != 0 for run in runs):
            continue  # deleted meanwhile
        parts = [json.loads(line) for line in runs[0].stdout.splitlines() if line.strip()]
        links, addrs, neighbors = [*parts, [], [], []][:3]
        routes = [(family, r) for family, run in ((4, runs[1]), (6, runs[2]))
                  for r in (json.loads(run.stdout) if run.stdout.strip() else [])]
        out[ns] = NsState(links, addrs, routes, neighbors)
    return out


def foreign_snapshot(state: dict[Ns, NsState]) -> dict[str, Any]:
    """Every object ipvland does not own, as iproute2 shows it, in every namespace."""
    snap: dict[str, Any] = {}
    for ns, st in state.items():
        where = ns or "-"
        owned: set[str] = set()
        for entry in st.links:
            if _owned_link(entry):
                owned.add(entry["ifname"])
                continue
            info = entry.get("linkinfo", {})
            snap[f"{where} link {entry['ifname']}"] = {
                "ifindex": entry["ifindex"], "kind": info.get("info_kind"), "mtu": entry["mtu"],
                "up": "UP" in entry.get("flags", []), "alias": entry.get("ifalias"),
                "ipvlan": info.get("info_data") if info.get("info_kind") == "ipvlan" else None,
                "address": entry.get("address")}
        for entry in st.addrs:
            if entry["ifname"] in owned:
                continue
            snap[f"{where} addrs {entry['ifname']}"] = sorted(
                f"{a['local']}/{a['prefixlen']}" for a in entry.get("addr_info", []) if a.get("scope") != "link")
        for _, r in st.routes:
            if r.get("protocol") in ("kernel", "212", "ra") or r.get("table") == "local":
                continue
            if r.get("dev") in owned or r.get("type") in ("multicast", "local", "broadcast"):
                continue
            r = {k: v for k, v in r.items() if k != "flags"}  # linkdown & co. follow the carrier
            snap[f"{where} route {json.dumps(r, sort_keys=True)}"] = True
        for n in st.neighbors:
            if n.get("protocol") == "212" or n.get("dev") in owned:
                continue
            snap[f"{where} neigh {n['dst']} dev {n['dev']}"] = n.get("lladdr")
    return snap


def diff_snapshots(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Foreign objects changed or gone, and new unowned ones in namespaces that existed before
    (a namespace ipvland creates brings its own loopback)."""
    namespaces = {key.split(" ", 1)[0] for key in before}
    out = []
    for key in sorted(set(before) | set(after)):
        if key not in before and key.split(" ", 1)[0] not in namespaces:
            continue
        if before.get(key) != after.get(key):
            out.append(f"{key}: {before.get(key)!r} -> {after.get(key)!r}")
    return out


# ------------------------------------------------------------------ owned state: spec vs iproute2


def _net(dst: str, family: int) -> str:
    if dst == "default":
        return "0.0.0.0/0" if family == 4 else "::/0"
    return str(ipaddress.ip_network(dst if "/" in dst else f"{dst}/{32 if family == 4 else 128}"))


def expected_owned(doc: Doc) -> dict[str, Any]:
    want: dict[str, Any] = {"links": {}, "routes": set(), "neighbors": set()}
    for pname, parent in doc["parents"].items():
        for route in parent.get("routes") or ():
            want["routes"].add(_route_tuple(None, pname, route))
        for n in parent.get("neighbors") or ():
            want["neighbors"].add((None, pname, str(ipaddress.ip_address(n["address"])), n["lladdr"].lower()))
        for name, dev in (parent.get("devices") or {}).items():
            ns = dev.get("netns")
            want["links"][(ns, name)] = {
                "parent": pname, "mode": parent["mode"], "flags": parent.get("flags", "bridge"),
                "mtu": dev.get("mtu"), "up": dev.get("state", "up") == "up",
                "addresses": sorted(str(ipaddress.ip_interface(a)) for a in dev.get("addresses") or ())}
            # a down device carries no routes (the kernel refuses and flushes them): inactive until up
            for route in dev.get("routes") or () if dev.get("state", "up") == "up" else ():
                want["routes"].add(_route_tuple(ns, name, route))
            for n in dev.get("neighbors") or ():
                want["neighbors"].add((ns, name, str(ipaddress.ip_address(n["address"])), n["lladdr"].lower()))
    return want


def _route_tuple(ns: Ns, dev: str, route: Doc) -> tuple[Any, ...]:
    _, _, net, table, metric = route_key(route, ns)
    via = route.get("via")
    return (ns, dev, str(net), table, metric, str(ipaddress.ip_address(via)) if via else None)


def live_owned(state: dict[Ns, NsState], want: dict[str, Any]) -> dict[str, Any]:
    """What ipvland owns, read with iproute2, in the shape of expected_owned (mtu only where wanted)."""
    have: dict[str, Any] = {"links": {}, "routes": set(), "neighbors": set()}
    roots = {e["ifindex"]: e["ifname"] for e in state[None].links}
    for ns, st in state.items():
        addrs = {e["ifname"]: sorted(str(ipaddress.ip_interface(f"{a['local']}/{a['prefixlen']}"))
                                     for a in e.get("addr_info", []) if a.get("scope") != "link")
                 for e in st.addrs}
        for e in st.links:
            info = e.get("linkinfo", {})
            if info.get("info_kind") != "ipvlan" or not _owned_link(e):
                continue
            data = info.get("info_data", {})
            flags = "private" if "private" in json.dumps(data) else "vepa" if "vepa" in json.dumps(data) else "bridge"
            parent = e.get("link") if ns is None else roots.get(e.get("link_index", -1), e.get("link"))
            wanted = want["links"].get((ns, e["ifname"]), {})
            have["links"][(ns, e["ifname"])] = {
                "parent": parent, "mode": data.get("mode"), "flags": flags,
                "mtu": e["mtu"] if wanted.get("mtu") is not None else None,
                "up": "UP" in e.get("flags", []), "addresses": addrs.get(e["ifname"], [])}
        for fam, r in st.routes:
            if r.get("protocol") != "212":
                continue
            table = r.get("table", "main")
            table = 254 if table == "main" else int(table)
            metric = r.get("metric", 0)
            have["routes"].add((ns, r["dev"], _net(r["dst"], fam), table, metric, r.get("gateway")))
        for n in st.neighbors:
            if n.get("protocol") == "212":
                have["neighbors"].add((ns, n["dev"], str(ipaddress.ip_address(n["dst"])), n["lladdr"].lower()))
    return have


def owned_diff(want: dict[str, Any], have: dict[str, Any]) -> list[str]:
    out = []
    for key in sorted(set(want["links"]) | set(have["links"]), key=str):
        if want["links"].get(key) != have["links"].get(key):
            out.append(f"link {key}: want {want['links'].get(key)}, have {have['links'].get(key)}")
    for what in ("routes", "neighbors"):
        for item in sorted(want[what] - have[what], key=str):
            out.append(f"{what[:-1]} missing: {item}")
        for item in sorted(have[what] - want[what], key=str):
            out.append(f"{what[:-1]} extra: {item}")
    return out


# ------------------------------------------------------------------ netlink watch


RTMGRP_LINK, RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR = 0x1, 0x10, 0x100
RTMGRP_NEIGH, RTMGRP_IPV4_ROUTE, RTMGRP_IPV6_ROUTE = 0x4, 0x40, 0x400
RTM_DELLINK, RTM_NEWADDR, RTM_DELADDR = 17, 20, 21
RTM_NEWROUTE, RTM_DELROUTE, RTM_NEWNEIGH, RTM_DELNEIGH = 24, 25, 28, 29
NLMSG_ERROR, NLMSG_OVERRUN = 2, 4


def _attrs(data: bytes, off: int, end: int) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    while off + 4 <= end:
        length, kind = struct.unpack_from("HH", data, off)
        if length < 4:
            break
        out[kind & 0x3FFF] = data[off + 4:off + length]
        off += (length + 3) & ~3
    return out


@dataclass(frozen=True)
class Event:
    netns: Ns
    kind: str  # "deladdr", "dellink", "route" (proto 212), "neigh" (proto 212)
    ifindex: int
    detail: str


class Watch:
    """rtnetlink listeners in a set of namespaces, opened before ipvland acts (no race), read after."""

    def __init__(self, namespaces: list[Ns], groups: int) -> None:
        self.socks: dict[Ns, socket.socket] = {}
        for ns in namespaces:
            def make() -> socket.socket:
                s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK, 0)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
                s.bind((0, groups))
                return s
            try:
                self.socks[ns] = _in_netns(ns, make)
            except OSError:
                continue  # a namespace that is gone: nothing can vanish there

    def close(self) -> None:
        for s in self.socks.values():
            s.close()
        self.socks.clear()

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def events(self) -> list[Event]:
        out: list[Event] = []
        for ns, s in self.socks.items():
            while True:
                try:
                    data = s.recv(1 << 20)
                except BlockingIOError:
                    break
                except OSError as e:  # ENOBUFS: events were lost; the check cannot be trusted
                    raise AssertionError(f"netlink watch in {ns or 'root'}: {e}") from e
                off = 0
                while off + 16 <= len(data):
                    length, mtype = struct.unpack_from("IH", data, off)
                    if length < 16:
                        break
                    out.extend(_decode(ns, mtype, data, off + 16, off + length))
                    off += (length + 3) & ~3
        return out


def _decode(ns: Ns, mtype: int, data: bytes, off: int, end: int) -> list[Event]:
    if mtype == RTM_DELADDR:
        _, prefixlen, _, _, index = struct.unpack_from("BBBBI", data, off)
        a = _attrs(data, off + 8, end)
        raw = a.get(2) or a.get(1)  # IFA_LOCAL, else IFA_ADDRESS
        if raw is None:
            return []
        addr = ipaddress.ip_address(raw)
        return [Event(ns, "deladdr", index, f"{addr}/{prefixlen}")]
    if mtype == RTM_DELLINK:
        _, _, _, index = struct.unpack_from("BxHiI", data, off)
        return [Event(ns, "dellink", index, "")]
    if mtype in (RTM_NEWROUTE, RTM_DELROUTE):
        proto = data[off + 5]
        if proto != 212:
            return []
        a = _attrs(data, off + 12, end)
        oif = struct.unpack("I", a[4])[0] if 4 in a else 0
        return [Event(ns, "route", oif, f"{'new' if mtype == RTM_NEWROUTE else 'del'}route")]
    if mtype in (RTM_NEWNEIGH, RTM_DELNEIGH):
        _, index, _, _, _ = struct.unpack_from("BxxxiHBB", data, off)
        a = _attrs(data, off + 12, end)
        if a.get(12) != b"\xd4":  # NDA_PROTOCOL 212
            return []
        return [Event(ns, "neigh", index, f"{'new' if mtype == RTM_NEWNEIGH else 'del'}neigh")]
    return []


def addresses_by_device(state: dict[Ns, NsState]) -> dict[tuple[Ns, int], tuple[str, set[str]]]:
    """(netns, ifindex) -> (name, addresses)."""
    out = {}
    for ns, st in state.items():
        for e in st.addrs:
            out[(ns, e["ifindex"])] = (e["ifname"], {
                str(ipaddress.ip_interface(f"{a['local']}/{a['prefixlen']}")) for a in e.get("addr_info", [])
                if a.get("scope") != "link"})
    return out


def vanished(events: list[Event], before: dict[tuple[Ns, int], tuple[str, set[str]]], doc: Doc,
             old: Doc | None = None) -> list[str]:
    """Addresses that the spec keeps on a device that stayed, and that were deleted in the window.

    A device that moved to another parent does not stay: the kernel cannot change an ipvlan's parent,
    so it is deleted and created again, and its addresses with it (seed 3221884034, round 6: d6 moved
    from cp1 to cp2 in one edit)."""
    gone_links = {(e.netns, e.ifindex) for e in events if e.kind == "dellink"}
    previous = device_index(old) if old is not None else None
    wanted = {key: {str(ipaddress.ip_interface(a)) for a in dev.get("addresses") or ()}
              for key, (parent, dev) in device_index(doc).items()
              if previous is None or (key in previous and previous[key][0] == parent)}
    out = []
    for e in events:
        if e.kind != "deladdr" or (e.netns, e.ifindex) in gone_links:
            continue
        name, had = before.get((e.netns, e.ifindex), ("?", set()))
        address = str(ipaddress.ip_interface(e.detail))
        if address in had and address in wanted.get((e.netns, name), set()):
            out.append(f"{address} on {name} netns {e.netns or '-'}")
    return out
