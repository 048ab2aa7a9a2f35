"""Named namespaces created from a sandboxed mount namespace (as under the hardened systemd unit)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ipvland.kernel import delete_namespace, list_namespaces


def test_namespace_made_in_a_sandbox_is_a_mount_the_host_sees() -> None:
    # The sandbox: a mount namespace whose mounts are slaves of ours, as systemd's ProtectSystem= makes.
    # IPVLAND_HOST_MOUNT_NS (set by the unit to /proc/1/ns/mnt) names ours as the host's.
    code = "from ipvland.kernel import create_namespace; create_namespace('sbx0')"
    env = {**os.environ, "IPVLAND_HOST_MOUNT_NS": f"/proc/{os.getpid()}/ns/mnt"}
    try:
        done = subprocess.run(["unshare", "--mount", "--propagation", "slave", "--", sys.executable, "-c", code],
                              env=env, capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
        assert "sbx0" in list_namespaces()
        mounts = Path("/proc/self/mountinfo").read_text()
        assert " /run/netns/sbx0 " in mounts, "the bind mount must exist in the host's mount namespace"
        assert subprocess.run(["ip", "netns", "exec", "sbx0", "true"], check=False).returncode == 0
    finally:
        delete_namespace("sbx0")
