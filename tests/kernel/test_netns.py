"""Named namespaces created from a sandboxed mount namespace (as under the hardened systemd unit)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ipvland import netns
from ipvland.kernel import KernelError, create_namespace, delete_namespace, list_namespaces


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


def test_a_sandbox_whose_python_the_host_lacks_still_makes_the_namespace(tmp_path: Path) -> None:
    """Issue 14: in a pod, the node has neither the image's Python nor ipvland. The child used to run
    `nsenter --mount=/proc/1/ns/mnt PYTHON -c ...`, which looked for PYTHON in the host's file system
    and failed (ENOENT). Here the sandbox reaches its interpreter only through a bind mount of its own:
    the path is an empty directory in the host's mount namespace."""
    venv = Path(sys.prefix)
    assert (venv / "pyvenv.cfg").exists(), "this test runs from the repository's virtualenv"
    only_here = tmp_path / "venv"
    only_here.mkdir()
    code = "from ipvland.kernel import create_namespace; create_namespace('sbx3')"
    env = {**os.environ, "IPVLAND_HOST_MOUNT_NS": f"/proc/{os.getpid()}/ns/mnt"}
    script = f'mount --bind "{venv}" "{only_here}" && exec "{only_here}/bin/python" -c "{code}"'
    try:
        done = subprocess.run(["unshare", "--mount", "--propagation", "slave", "--", "sh", "-c", script],
                              env=env, capture_output=True, text=True, check=False)
        assert not any(only_here.iterdir()), "the sandbox's bind mount must not reach the host"
        assert done.returncode == 0, done.stderr
        assert "sbx3" in list_namespaces()
        assert subprocess.run(["ip", "netns", "exec", "sbx3", "true"], check=False).returncode == 0
    finally:
        delete_namespace("sbx3")


def test_a_sandbox_whose_proc_sys_is_read_only_still_writes_sysctls() -> None:
    """The shipped unit (ProtectKernelTunables=yes, ProcSubset=pid) and a pod (the runtime mounts
    /proc/sys read-only) cannot write sysctls in their own /proc: every IPv6 device's
    keep_addr_on_down failed with EROFS. They now write through the host's root
    ($IPVLAND_HOST_MOUNT_NS's /proc/PID/root), still in the device's own network namespace."""
    subprocess.run(["ip", "netns", "add", "sbx4"], check=True)
    host_forward = Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()
    try:
        subprocess.run(["ip", "-n", "sbx4", "link", "add", "d0", "type", "dummy"], check=True)
        code = ("from ipvland.kernel import Kernel\nk = Kernel()\n"
                "k.set_sysctl('sbx4', 'd0', 'ipv6.keep_addr_on_down', 1)\n"
                "k.set_sysctl('sbx4', 'd0', 'ipv4.arp_ignore', 2)\nk.set_ip_forward('sbx4', 1)")
        env = {**os.environ, "IPVLAND_HOST_MOUNT_NS": f"/proc/{os.getpid()}/ns/mnt"}
        script = (f'mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys && '
                  f'! sh -c "echo 1 >/proc/sys/net/ipv4/ip_forward" 2>/dev/null && exec "{sys.executable}" -c "{code}"')
        done = subprocess.run(["unshare", "--mount", "--propagation", "slave", "--", "sh", "-c", script],
                              env=env, capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr

        def read(key: str) -> str:
            return subprocess.run(["ip", "netns", "exec", "sbx4", "cat", f"/proc/sys/net/{key}"],
                                  capture_output=True, text=True, check=True).stdout.strip()
        assert read("ipv6/conf/d0/keep_addr_on_down") == "1"
        assert read("ipv4/conf/d0/arp_ignore") == "2"
        # a namespace-wide key, where a write to the wrong namespace would raise nothing
        assert read("ipv4/ip_forward") == "1"
        assert Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() == host_forward, "the host's changed"
    finally:
        subprocess.run(["ip", "netns", "del", "sbx4"], check=False)


# The unit's capabilities (systemd/ipvland.service CapabilityBoundingSet=), and the same without the one
# that opening /proc/1/ns/mnt needs.
UNIT_CAPS = "-all,+net_admin,+sys_admin,+sys_chroot,+sys_ptrace"
WITHOUT_PTRACE = "-all,+net_admin,+sys_admin,+sys_chroot"


def _create_in_sandbox(name: str, caps: str) -> subprocess.CompletedProcess[str]:
    """create_namespace(name) from a slave mount namespace with only `caps`, as under systemd: the
    host's mount namespace (ours) is held by a process with every capability, as PID 1 is."""
    code = (f"from ipvland.kernel import create_namespace, KernelError\n"
            f"try:\n    create_namespace({name!r})\nexcept KernelError as e:\n    raise SystemExit(str(e))")
    env = {**os.environ, "IPVLAND_HOST_MOUNT_NS": f"/proc/{os.getpid()}/ns/mnt"}
    return subprocess.run(["unshare", "--mount", "--propagation", "slave", "--",
                           "setpriv", f"--bounding-set={caps}", f"--inh-caps={caps}", "--",
                           sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)


def test_sandbox_without_cap_sys_ptrace_fails_loudly_and_leaves_nothing() -> None:
    """Issue 10, defect 1: under systemd the daemon could not open /proc/1/ns/mnt (the kernel's ptrace
    access check: PID 1's capabilities are a superset of the sandbox's) and silently bind-mounted the
    namespace inside its own sandbox, where the host saw only an empty file. Now: an error that says why."""
    try:
        done = _create_in_sandbox("sbx1", WITHOUT_PTRACE)
        assert done.returncode != 0, done.stderr
        assert "CAP_SYS_PTRACE" in done.stderr and "Permission denied" in done.stderr, done.stderr
        assert not Path("/run/netns/sbx1").exists(), "a file the host cannot use was left at /run/netns/sbx1"
    finally:
        delete_namespace("sbx1")


def test_sandbox_with_the_units_capabilities_makes_a_namespace_the_host_sees() -> None:
    try:
        done = _create_in_sandbox("sbx2", UNIT_CAPS)
        assert done.returncode == 0, done.stderr
        assert "sbx2" in list_namespaces()
        assert subprocess.run(["ip", "netns", "exec", "sbx2", "true"], check=False).returncode == 0
    finally:
        delete_namespace("sbx2")


def test_an_empty_file_whose_mount_is_gone_is_no_namespace_and_is_mounted_over(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 10, defect 4: what the sandboxed daemon left behind (and what a lost mount leaves) is an empty
    mode-0 file. It is not listed as a namespace (opening it is EACCES without CAP_DAC_OVERRIDE, and it is
    no namespace anyway), and creating the namespace mounts over it instead of failing with EEXIST."""
    Path("/run/netns").mkdir(parents=True, exist_ok=True)
    stale = Path("/run/netns/stale0")
    stale.touch(mode=0)
    try:
        assert "stale0" not in list_namespaces()
        # A fresh one may be another tool's `ip netns add` between its create and its mount: left alone.
        with pytest.raises(KernelError, match="not \\(yet\\) a namespace"):
            create_namespace("stale0")
        monkeypatch.setattr(netns, "STALE_AFTER", 0.0)  # ctime cannot be set back: make "old" now
        create_namespace("stale0")
        assert "stale0" in list_namespaces()
        assert subprocess.run(["ip", "netns", "exec", "stale0", "true"], check=False).returncode == 0
    finally:
        delete_namespace("stale0")


def test_a_symlinked_namespace_is_a_namespace() -> None:
    """Review finding: `ln -s /proc/PID/ns/net /run/netns/NAME` (a Docker recipe) works with `ip netns
    exec`, but ipvland did not list it and every create failed with EEXIST."""
    Path("/run/netns").mkdir(parents=True, exist_ok=True)
    link = Path("/run/netns/linked0")
    holder = subprocess.Popen(["unshare", "--net", "sleep", "60"])
    try:
        for _ in range(100):  # until the child is in its own namespace
            if os.readlink(f"/proc/{holder.pid}/ns/net") != os.readlink("/proc/self/ns/net"):
                break
            time.sleep(0.05)
        link.symlink_to(f"/proc/{holder.pid}/ns/net")
        assert "linked0" in list_namespaces()
    finally:
        link.unlink(missing_ok=True)
        holder.kill()
        holder.wait()


def test_a_namespace_mounted_after_a_listing_of_its_bare_name_is_then_listed() -> None:
    """Issue 13: Kernel.list_namespaces reuses a listing while /run/netns is unchanged, as a repair
    at 1000 namespaces could not afford a stat of each. `ip netns add` is two steps, creating the
    name and mounting the namespace on it, and the mount does not change the directory: a listing
    taken between the two must not be kept (kernel.LISTING_SETTLE_NS)."""
    from ipvland.kernel import Kernel

    os.makedirs(netns.NETNS_DIR, exist_ok=True)
    path = os.path.join(netns.NETNS_DIR, "late0")
    os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDONLY, 0o444))  # step 1: the bare name
    try:
        with Kernel() as k:
            assert "late0" not in k.list_namespaces()  # a file, not a namespace yet
            before = os.stat(netns.NETNS_DIR).st_mtime_ns
            # step 2: a new namespace mounted on the name (unshare --net alone keeps our mount namespace)
            subprocess.run(["unshare", "--net", "--", "mount", "--bind", "/proc/self/ns/net", path], check=True)
            assert os.stat(netns.NETNS_DIR).st_mtime_ns == before, "the mount left the directory as it was"
            assert "late0" in k.list_namespaces()
    finally:
        delete_namespace("late0")
        assert "late0" not in list_namespaces()


def _age_netns_dir() -> None:
    """/run/netns as if quiet for a minute: a repair may then reuse a listing (LISTING_SETTLE_NS)."""
    then = time.time_ns() - 60_000_000_000
    os.utime(netns.NETNS_DIR, ns=(then, then))


def test_a_repair_lists_a_namespace_mounted_on_a_leftover_name_the_directory_never_saw() -> None:
    """Review of issue 13 (reproduced there): an empty file left under /run/netns (a mount gone) is
    mounted on later, by ipvland or another tool, without touching the directory. A listing without
    it, reused by every repair, hid the namespace until the directory changed for another reason."""
    from ipvland.kernel import Kernel

    os.makedirs(netns.NETNS_DIR, exist_ok=True)
    path = os.path.join(netns.NETNS_DIR, "left0")
    os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDONLY, 0))
    try:
        _age_netns_dir()
        with Kernel() as k:
            with k.one_listing(reuse=True):
                assert "left0" not in k.list_namespaces()
            subprocess.run(["unshare", "--net", "--", "mount", "--bind", "/proc/self/ns/net", path], check=True)
            with k.one_listing(reuse=True):
                assert "left0" in k.list_namespaces()
    finally:
        delete_namespace("left0")


def test_a_repair_drops_a_symlinked_namespace_whose_process_exited() -> None:
    """The `ln -s /proc/PID/ns/net /run/netns/NAME` recipe: the namespace goes with the process,
    and the directory does not change. A listing with a symlink is never reused."""
    from ipvland.kernel import Kernel

    os.makedirs(netns.NETNS_DIR, exist_ok=True)
    holder = subprocess.Popen(["unshare", "--net", "--", "sleep", "60"])
    link = os.path.join(netns.NETNS_DIR, "dock0")
    try:
        deadline = time.monotonic() + 10
        target = f"/proc/{holder.pid}/ns/net"
        while os.stat(target).st_ino == os.stat("/proc/self/ns/net").st_ino and time.monotonic() < deadline:
            time.sleep(0.05)  # unshare has not entered its namespace yet
        os.symlink(target, link)
        _age_netns_dir()
        with Kernel() as k:
            with k.one_listing(reuse=True):
                assert "dock0" in k.list_namespaces()
            holder.kill()
            holder.wait()
            with k.one_listing(reuse=True):
                assert "dock0" not in k.list_namespaces()
    finally:
        holder.kill()
        holder.wait()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(link)


def test_a_namespace_deleted_after_the_turn_listed_it_is_absent_not_an_error() -> None:
    """Review of issue 13: a turn lists /run/netns once (Kernel.one_listing); a namespace deleted
    after that (a container stopped) failed the turn's observe with ENOENT."""
    from ipvland.kernel import Kernel
    from ipvland.observe import observe

    create_namespace("gone0")
    try:
        with Kernel() as k, k.one_listing():
            assert "gone0" in k.list_namespaces()
            delete_namespace("gone0")
            seen = observe(k)
            assert "gone0" not in seen.namespaces
            assert not any(link.netns == "gone0" for link in seen.links)
    finally:
        delete_namespace("gone0")
