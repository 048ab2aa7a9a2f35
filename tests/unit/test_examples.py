"""Every example config loads: the files directly under etc/examples/ (etc/examples/fleet/ selects per
host and is tested with its loader) and the commented etc/ipvland/config.yaml."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ipvland import spec as spec_mod

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = [*sorted((ROOT / "etc" / "examples").glob("*.yaml")), ROOT / "etc" / "ipvland" / "config.yaml"]


def test_there_are_examples() -> None:
    assert len(EXAMPLES) >= 2


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_loads(path: Path) -> None:
    spec = spec_mod.load(path)
    assert spec.parents


def test_validate_accepts_every_example() -> None:
    """As a user runs it: `ipvland validate -c FILE`, exit 0 (stdin: no drop-ins are read)."""
    for path in EXAMPLES:
        done = subprocess.run([sys.executable, "-m", "ipvland", "validate", "-c", "-"], input=path.read_text(),
                              capture_output=True, text=True, check=False, cwd=ROOT)
        assert done.returncode == 0, f"{path}: {done.stdout}{done.stderr}"
