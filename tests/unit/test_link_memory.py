"""The event monitor's memory of the host namespace's links is seeded from a dump (events.seeded_memory),
on this host's real kernel, in a throwaway network namespace (veth needs no IPVLAN)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# In a fresh namespace: a veth pair, a seeded memory, then the kernel's own RTM_NEWLINK of lab0 for a
# change that leaves name, MTU, flags and MAC as they were (txqueuelen), and one for a real change (MTU),
# each read by the seeded memory and by one that learns from events only (as before the seed).
SCRIPT = r"""
import socket, subprocess
from ipvland import events
subprocess.run(["ip", "link", "add", "lab0", "type", "veth", "peer", "name", "lab0p"], check=True)
memory, unseeded = events.seeded_memory(), events.LinkMemory()
print("seeded", sorted(name for name, *_ in memory.links.values()))
mon = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, events.NETLINK_ROUTE)
mon.bind((0, events.RTMGRP_LINK))
mon.settimeout(5)
def named(*cmd):
    subprocess.run(["ip", "link", "set", "dev", "lab0", *cmd], check=True)
    names, before = set(), set()
    buf = mon.recv(65536)
    events.scan(buf, len(buf), names, memory)
    events.scan(buf, len(buf), before, unseeded)
    return sorted(names), sorted(before)
print("txqueuelen", *named("txqueuelen", "500"))
print("mtu", *named("mtu", "1400"))
"""


def test_the_first_unchanged_parent_message_after_start_names_no_one() -> None:
    r = subprocess.run(["unshare", "--net", sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True,
                       text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "seeded ['lab0', 'lab0p', 'lo']"
    assert lines[1] == "txqueuelen [] ['lab0']"  # unseeded, this first message named lab0: a widened repair
    assert lines[2] == "mtu ['lab0'] ['lab0']"  # a real change still names it
