"""Fixtures shared by the unit tests."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A directory any user may traverse and read (pytest's tmp_path is under a 0700 directory), for
    tests that run a command as an unprivileged user."""
    path = Path(tempfile.mkdtemp(prefix="ipvland-test-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)
