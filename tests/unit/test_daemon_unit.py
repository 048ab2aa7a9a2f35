"""The systemd unit: hardened (exposure <= 2.3) and shaped as the daemon expects (Type=notify, ...)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from ipvland.model import RT_PROTO

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "ipvland.service"


def service_section() -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    section = None
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line
            continue
        if section == "[Service]":
            key, _, value = line.partition("=")
            values.setdefault(key, []).append(value)
    return values


def test_exposure_score_is_at_most_2_3() -> None:
    # 2.0 before CAP_SYS_PTRACE (+0.3), which opening /proc/1/ns/mnt needs under systemd (see the unit).
    # systemd-analyze ships with systemd; a machine without it cannot vouch for the unit: fail, don't skip.
    exe = shutil.which("systemd-analyze")
    assert exe is not None, "systemd-analyze missing: apt-get install systemd"
    out = subprocess.run([exe, "security", "--offline=yes", "--no-pager", str(UNIT)],
                         capture_output=True, text=True, timeout=60)
    text = out.stdout + out.stderr
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", text)
    assert m is not None, text
    assert float(m.group(1)) <= 2.3, text


def test_unit_shape() -> None:
    s = service_section()
    assert s["Type"] == ["notify"]
    assert s["NotifyAccess"] == ["main"]
    # No /bin/kill on a minimal Debian; `ipvland reload` signals and waits for the reload to be handled.
    assert s["ExecReload"] == ["/usr/local/bin/ipvland reload --pid $MAINPID"]
    assert s["Restart"] == ["on-failure"]
    assert "WatchdogSec" in s
    assert s["ExecStart"][0].split()[1] == "run"
    caps = set(s["CapabilityBoundingSet"][0].split())
    assert caps == {"CAP_NET_ADMIN", "CAP_SYS_ADMIN", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE"}
    assert "net" in s["RestrictNamespaces"][0].split()
    assert s["RuntimeDirectory"] == ["ipvland"]
    # A sandboxed /run/netns must stay read-only: namespaces are created in the host's mount namespace.
    assert not any("/run/netns" in v for v in s.get("ReadWritePaths", []))


def test_rt_protos_name_matches_the_model() -> None:
    line = (REPO / "etc" / "iproute2" / "rt_protos.d" / "ipvland.conf").read_text().split()
    assert line == [str(RT_PROTO), "ipvland"]


@pytest.mark.parametrize("key", ["ProtectSystem", "ProtectKernelTunables", "NoNewPrivileges"])
def test_key_hardening_present(key: str) -> None:
    assert key in service_section()


def test_no_ordering_cycle_with_a_network_var() -> None:
    """Review finding: PrivateTmp= adds RequiresMountsFor=/var/tmp and default dependencies add
    basic.target; with /var on NFS that made a cycle through network-online.target (systemd then drops
    a job). Both units start early and unordered against remote mounts, as systemd-networkd does."""
    assert "PrivateTmp" not in service_section()  # /tmp is read-only under ProtectSystem=strict anyway
    for unit in (UNIT, UNIT.with_name("ipvland-wait-online.service")):
        text = unit.read_text()
        assert "\nDefaultDependencies=no\n" in text and "\nConflicts=shutdown.target\n" in text, unit.name
    wait_online = UNIT.with_name("ipvland-wait-online.service").read_text()
    directives = [line for line in wait_online.splitlines() if not line.startswith("#")]
    assert not any(line.startswith("Requires=") for line in directives), "a Requires= chain restarts consumers"
