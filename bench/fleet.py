"""The fleet part of the benchmark (issue 14): `ipvland validate --hosts` over an inventory of 10,000 hosts
and a tree of 100 files, on one core. Pure: no root, no kernel, so bench/run runs it on the host (not in
the VM) and adds its key `fleet_validate_10k_s` (wall seconds of the whole command, interpreter start
included; `fleet.cpu_s` is its CPU time, which a busy machine does not inflate) to the JSON.

The tree: a main file (two parents), 9 shared drop-ins (no hosts:) and 90 selected ones whose globs cut
the inventory (rack00-node000 ... rack99-node099) along four axes, so almost every host selects its own
set of files (the merge is memoised per set: this is the worst case for it, not the best). Every host
gets web0's structure from a shared file and its addresses from its rack pair's file (a field-by-field
merge), and about 60 devices in all.

    python bench/fleet.py [--hosts 10000] [--json FILE]   # prints {"fleet_validate_10k_s": ...}
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEVICES_PER_FILE = 5


def devices(j: int, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k in range(DEVICES_PER_FILE):
        out[f"f{j}d{k}"] = {"netns": f"ns{j}", "mtu": 1500,
                            "addresses": [f"10.{j}.{k}.1/24", f"fd00:{j:x}:{k:x}::1/64"],
                            "routes": [{"to": f"198.18.{j}.{k * 8}/29", "via": f"10.{j}.{k}.254"}]}
    out.update(extra or {})
    return out


def write_tree(root: Path) -> tuple[Path, Path, int]:
    """The 100-file tree and the 10,000-host inventory; returns (main, inventory, number of files)."""
    d = root / "config.d"
    d.mkdir(parents=True)
    dump = json.dumps  # JSON is YAML: the loader reads it the same
    main = root / "config.yaml"
    main.write_text(dump({"version": 1, "parents": {"eth0": {"mode": "l3s"}, "eth1": {"mode": "l2"}}}))
    files = [main]

    def drop(name: str, hosts: list[str] | None, parents: dict[str, Any]) -> None:
        doc: dict[str, Any] = {"version": 1}
        if hosts is not None:
            doc["hosts"] = hosts
        doc["parents"] = parents
        path = d / f"{name}.yaml"
        path.write_text(dump(doc, indent=1))
        files.append(path)

    web0 = {"web0": {"netns": "web", "mtu": 9000, "routes": [{"to": "default", "via": "192.0.2.1"}]}}
    drop("00-shared", None, {"eth0": {"devices": devices(0, web0)}})
    for j in range(1, 9):
        drop(f"0{j}-shared", None, {"eth0" if j % 2 else "eth1": {"devices": devices(j)}})
    for j in range(50):  # rack pairs: web0's addresses, per pair
        web = {"web0": {"addresses": [f"192.0.2.{j + 10}/24"]}}
        drop(f"10-racks-{j:02d}", [f"rack{2 * j:02d}-*", f"rack{2 * j + 1:02d}-*"],
             {"eth0": {"devices": devices(10 + j, web)}})
    axes = [lambda x: f"*-node0{x}?", lambda x: f"*-node??{x}", lambda x: f"rack?{x}-*",
            lambda x: f"rack{x}?-node0[0-4]?"]
    for a, glob in enumerate(axes):
        for x in range(10):
            j = 60 + a * 10 + x
            drop(f"20-axis{a}-{x}", [glob(x)], {"eth1": {"devices": devices(j)}})
    inventory = root / "inventory.txt"
    inventory.write_text("".join(f"rack{r:02d}-node{n:03d}\n" for r in range(100) for n in range(100)))
    return main, inventory, len(files)


def measure(hosts: int = 10000) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="ipvland-fleet-"))
    try:
        main, inventory, n_files = write_tree(work)
        if hosts != 10000:
            names = inventory.read_text().splitlines()[:hosts]
            inventory.write_text("\n".join(names) + "\n")
        one_core = ["taskset", "-c", "0"] if shutil.which("taskset") else []
        cmd = [*one_core, sys.executable, "-m", "ipvland", "validate", "-c", str(main), "--hosts", str(inventory)]
        t = time.monotonic()
        cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
        r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
        seconds = time.monotonic() - t
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu_s = (after.ru_utime - cpu.ru_utime) + (after.ru_stime - cpu.ru_stime)
        if r.returncode != 0:
            raise SystemExit(f"bench/fleet.py: validate --hosts failed ({r.returncode}): {r.stderr[-2000:]}")
        return {"fleet_validate_10k_s": round(seconds, 2),
                "fleet": {"cpu_s": round(cpu_s, 2), "load_average_1m": os.getloadavg()[0], "hosts": hosts,
                          "files": n_files, "one_core": bool(one_core), "target_s": 30,
                          "command": "ipvland validate -c config.yaml --hosts inventory.txt (process start "
                                     "included)", "stdout": r.stdout.strip()}}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def add_to(path: Path, result: dict[str, Any]) -> None:
    """Add the fleet keys to bench/run's JSON (top level and headline), keeping every other key."""
    doc: dict[str, Any] = json.loads(path.read_text()) if path.exists() and path.stat().st_size else {}
    doc.update(result)
    doc.setdefault("headline", {})["fleet_validate_10k_s"] = result["fleet_validate_10k_s"]
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hosts", type=int, default=10000)
    ap.add_argument("--json", type=Path, help="add the keys to this JSON file (bench/run's)")
    args = ap.parse_args(argv)
    result = measure(args.hosts)
    print(json.dumps(result, indent=1))
    if args.json:
        add_to(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
