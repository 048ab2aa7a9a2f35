"""Per-device sysctls on a real kernel (issue 15 item 4): set in the device's namespace, read back
through /proc (the independent observer) and through ipvland's link dump (the devconf slots),
a change by hand is drift that the next reconcile repairs, and converged means zero writes."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest
from iproute import converge
from wire import LAB_HEAD, lab_spec, wired_lab

from ipvland import spec as spec_mod
from ipvland.kernel import Kernel
from ipvland.model import LinkSysctlSet
from ipvland.observe import observe
from ipvland.plan import plan

CONFIG = LAB_HEAD + """\
      d0:
        netns: sy
        addresses: [192.0.2.10/24]
        ipv6: {accept_ra: false, autoconf: false, addr_gen_mode: random, disable_ipv6: false}
        ipv4: {rp_filter: 2, arp_ignore: 1, arp_announce: 2, forwarding: true}
      d1:
        netns: sy
        ipv6: {disable_ipv6: true}
        ipv4: {rp_filter: 1}
      d2:
        netns: fw
        ipv4: {ip_forward: true}
"""
EXPECTED = {
    "d0": {"ipv6/conf/d0/accept_ra": "0", "ipv6/conf/d0/autoconf": "0", "ipv6/conf/d0/addr_gen_mode": "3",
           "ipv6/conf/d0/disable_ipv6": "0", "ipv4/conf/d0/rp_filter": "2", "ipv4/conf/d0/arp_ignore": "1",
           "ipv4/conf/d0/arp_announce": "2", "ipv4/conf/d0/forwarding": "1"},
    "d1": {"ipv6/conf/d1/disable_ipv6": "1", "ipv4/conf/d1/rp_filter": "1"},
}


def proc(path: str, netns: str = "sy") -> str:
    done = subprocess.run(["ip", "netns", "exec", netns, "cat", f"/proc/sys/net/{path}"], capture_output=True,
                          text=True, check=True)
    return done.stdout.strip()


def write_proc(path: str, value: str, netns: str = "sy") -> None:
    subprocess.run(["ip", "netns", "exec", netns, "sh", "-c", f"echo {value} > /proc/sys/net/{path}"], check=True)


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> Iterator[spec_mod.Spec]:
    for tmp in wired_lab(tmp_path_factory, "sysctls"):
        yield lab_spec(tmp, CONFIG)


def test_settings_are_set_in_the_devices_namespace_and_read_back(spec: spec_mod.Spec) -> None:
    converge(spec)  # a second run writes nothing: the link dump reads every slot back as written
    for values in EXPECTED.values():
        assert {path: proc(path) for path in values} == values
    # the namespace's ip_forward, and with it every device's forwarding there
    assert (proc("ipv4/ip_forward", "fw"), proc("ipv4/conf/d2/forwarding", "fw")) == ("1", "1")
    assert proc("ipv4/ip_forward") == "0"  # not in the other namespace


def test_ip_forward_changed_by_hand_is_repaired(spec: spec_mod.Spec) -> None:
    write_proc("ipv4/ip_forward", "0", "fw")
    with Kernel() as kernel:
        changes = [c.describe() for c in plan(spec, observe(kernel, spec)).changes]
    assert changes == ["~ netns fw ipv4.ip_forward 0 -> 1"]
    converge(spec)
    assert proc("ipv4/ip_forward", "fw") == "1"


@pytest.mark.parametrize(("path", "drift"), [
    ("ipv4/conf/d0/rp_filter", "0"), ("ipv4/conf/d0/arp_ignore", "2"), ("ipv4/conf/d0/arp_announce", "0"),
    ("ipv4/conf/d0/forwarding", "0"), ("ipv6/conf/d0/addr_gen_mode", "0"), ("ipv6/conf/d1/disable_ipv6", "0"),
])
def test_a_change_by_hand_is_drift_and_is_repaired(spec: spec_mod.Spec, path: str, drift: str) -> None:
    write_proc(path, drift)
    with Kernel() as kernel:
        changes = [c for c in plan(spec, observe(kernel, spec)).changes if isinstance(c, LinkSysctlSet)]
    key = path.replace("/conf/d0/", ".").replace("/conf/d1/", ".")
    assert [(c.name, c.key, c.old) for c in changes] == [(path.split("/")[2], key, int(drift))]
    converge(spec)
    assert proc(path) == EXPECTED[path.split("/")[2]][path]
