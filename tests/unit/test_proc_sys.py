"""Where sysctls are written from (kernel._proc_sys_net): plain data, no kernel involved."""

from __future__ import annotations

import pytest

from ipvland import kernel


def test_outside_a_sandbox_our_own_proc_sys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kernel, "_foreign_mount_ns", lambda: None)
    assert kernel._proc_sys_net() == "/proc/sys/net"


def test_in_a_sandbox_the_hosts_through_its_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kernel, "_foreign_mount_ns", lambda: "/proc/1/ns/mnt")
    assert kernel._proc_sys_net() == "/proc/1/root/proc/sys/net"


def test_a_host_mount_namespace_not_under_proc_is_an_error_that_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kernel, "_foreign_mount_ns", lambda: "/run/host-mnt")
    with pytest.raises(kernel.KernelError) as e:
        kernel._proc_sys_net()
    assert "IPVLAND_HOST_MOUNT_NS=/run/host-mnt is not /proc/PID/ns/mnt" in str(e.value)
