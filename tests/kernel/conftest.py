"""Kernel tests: real netlink against a kernel with IPVLAN, run by tests/run (here or in a VM).

They FAIL rather than skip when they cannot run, so a green run always means they ran. They also
refuse to run outside the isolation tests/run provides: they create and delete links in the
namespace they run in.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ipvland.kernel import Kernel

HERE = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.kernel)


_verdict: str | None = None


def _why_not() -> str:
    """Empty when kernel tests can run here, else the reason (computed once)."""
    global _verdict
    if _verdict is None:
        if os.environ.get("IPVLAND_KERNEL_TESTS_ISOLATED") != "1":
            _verdict = ("kernel tests change the network namespace they run in: run tests/run, which "
                        "isolates them (throwaway namespaces or a VM)")
        else:
            probe = subprocess.run(
                ["unshare", "--net", "sh", "-c",
                 "ip link add p0 type veth peer name p1 && ip link add link p0 name i0 type ipvlan mode l2"],
                capture_output=True, text=True, check=False)
            _verdict = "" if probe.returncode == 0 else (
                f"kernel lacks IPVLAN ({probe.stderr.strip()}): run tests/run, which boots a VM")
    return _verdict


@pytest.fixture(autouse=True)
def _kernel_required() -> None:
    reason = _why_not()
    if reason:
        pytest.fail(reason, pytrace=False)


@pytest.fixture
def kernel() -> Iterator[Kernel]:
    with Kernel() as k:
        yield k
