"""A helper of the issue-15 unit tests: loading fails with an error at a key, saying something."""

from __future__ import annotations

from pathlib import Path

from tests.unit.test_spec import errors_of


def assert_error(path: Path, epath: str, fragment: str) -> None:
    errors = errors_of(path)
    assert any(e.path == epath and fragment in e.message for e in errors), [str(e) for e in errors]
