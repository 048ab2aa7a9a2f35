"""load() never raises anything but SpecError, whatever the file holds."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any
from unittest import mock

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ipvland import spec as spec_mod
from ipvland.model import Spec
from ipvland.spec import SpecError, load

FUZZ = settings(max_examples=int(os.environ.get("SPEC_FUZZ_EXAMPLES", "200")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

_DIR = Path(tempfile.mkdtemp(prefix="ipvland-spec-fuzz-"))
_PATH = _DIR / "config.yaml"


def load_bytes(data: bytes) -> Spec | SpecError:
    _PATH.write_bytes(data)
    try:
        return load(_PATH)
    except SpecError as e:
        assert e.errors, "a SpecError always carries at least one error"
        for err in e.errors:
            assert err.file == str(_PATH) and err.line >= 0 and err.col >= 0 and err.message
        assert_in_reading_order(list(e.errors))
        return e


def is_cut_notice(err: spec_mod.ConfigError) -> bool:
    return err.line == 0 and err.message.startswith("… and ")


def assert_in_reading_order(errors: list[spec_mod.ConfigError]) -> None:
    """In file order, by line and column; a file's "… and N more" notice (at most 50 per file are
    shown) closes that file's errors, though its position (0:0) would sort first."""
    shown = [e for e in errors if not is_cut_notice(e)]
    assert shown == sorted(shown, key=lambda x: (x.file, x.line, x.col, x.path, x.message))
    for i, e in enumerate(errors):
        if is_cut_notice(e):
            assert i == len(errors) - 1 or errors[i + 1].file != e.file, "the notice closes its file"
            assert sum(x.file == e.file for x in shown) == spec_mod.MAX_ERRORS_PER_FILE


def test_regression_more_than_50_errors_end_with_the_notice_not_sorted_to_the_top() -> None:
    """Found by test_every_complaint_is_human: the notice sits at 0:0, and the old check sorted it first."""
    e = load_bytes(("version: 1\nparents:\n" + "".join(f"  toolongname{i:06d}: {{}}\n" for i in range(60))).encode())
    assert isinstance(e, SpecError) and is_cut_notice(e.errors[-1]) and "10 more" in e.errors[-1].message


@FUZZ
@given(st.binary(max_size=300))
def test_arbitrary_bytes(data: bytes) -> None:
    assert isinstance(load_bytes(data), Spec | SpecError)


YAMLISH = st.text(alphabet=st.sampled_from(list("version: 1\nparents{}[]-,eth0 mode l3s devices web0 "
                                                "addresses 192.0.2.10/24 :&*!#'\"\t|>?%@`~\\")),
                  max_size=200)


@FUZZ
@given(YAMLISH)
def test_yamlish_text(text: str) -> None:
    assert isinstance(load_bytes(text.encode("utf-8", "surrogatepass")), Spec | SpecError)


KEYS = st.sampled_from(["version", "parents", "probes", "eth0", "eth1", "web0", "mode", "flags", "devices",
                        "routes", "neighbors", "addresses", "netns", "mtu", "state", "to", "via", "metric",
                        "table", "address", "lladdr", "target", "tries", "timeout", "x"])
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=True), st.text(max_size=20),
    st.sampled_from(["l2", "l3s", "bridge", "up", "down", "default", "192.0.2.10/24", "2001:db8::1",
                     "fe80::1/64", "12:34:56:00:00:11", "01:00:5e:00:00:01", "10.0.0.0/8", "web"]))
DOCS: st.SearchStrategy[Any] = st.recursive(
    SCALARS,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(KEYS, children, max_size=5)),
    max_leaves=30)


@FUZZ
@given(DOCS, st.booleans())
def test_structured_documents(doc: Any, with_version: bool) -> None:
    if with_version and isinstance(doc, dict):
        doc = {"version": 1, **doc}
    text = yaml.safe_dump(doc, allow_unicode=True)
    result = load_bytes(text.encode("utf-8", "surrogatepass"))
    assert isinstance(result, Spec | SpecError)


@FUZZ
@given(YAMLISH)
def test_yamlish_text_with_the_pure_python_parser(text: str) -> None:
    with mock.patch.object(spec_mod, "_LoaderClass", spec_mod._Loader):
        assert isinstance(load_bytes(text.encode("utf-8", "surrogatepass")), Spec | SpecError)


NAMES = st.sampled_from(["eth0", "eth1", "web0", "web0", "lo", "ipvtmp-1", "a" * 16, "a/b", "x y", ".", "",
                         "é" * 8, "eth0.100"])
VALUES = st.sampled_from([None, True, 0, 1, 255, 254, -1, 1500, 2**32, 0.5, float("nan"), "", "l2", "l9",
                          "vepa", "up", "web", "a/b", "default", "192.0.2.1", "192.0.2.1/24", "192.0.2.1/33",
                          "2001:db8::1", "fe80::1/64", "10.0.0.0/8", "12:34:56:00:00:11", "ff:ff:ff:ff:ff:ff",
                          "x" * 256, [], {}])


def mapping(keys: list[str], values: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(st.sampled_from(keys), values, max_size=len(keys))


ROUTE = mapping(["to", "via", "metric", "table", "tov"], VALUES)
NEIGH = mapping(["address", "lladdr", "mac"], VALUES)
DEVICE = st.one_of(VALUES, mapping(["netns", "mtu", "state", "addresses", "routes", "neighbors"], st.one_of(
    VALUES, st.lists(VALUES, max_size=3), st.lists(ROUTE, max_size=2), st.lists(NEIGH, max_size=2))))
PARENT = st.one_of(VALUES, st.fixed_dictionaries({}, optional={
    "mode": VALUES, "flags": VALUES, "routes": st.lists(ROUTE, max_size=2), "neighbors": st.lists(NEIGH, max_size=2),
    "devices": st.dictionaries(NAMES, DEVICE, max_size=3)}))
PROBE = mapping(["netns", "target", "tries", "timeout"], VALUES)
CONFIG = st.fixed_dictionaries({"version": st.sampled_from([1, 1, 1, 2, "1"])}, optional={
    "parents": st.dictionaries(NAMES, PARENT, max_size=3), "probes": st.lists(PROBE, max_size=2)})


@FUZZ
@given(CONFIG)
def test_every_complaint_is_human(doc: dict[str, Any]) -> None:
    """No raw jsonschema fallback ('invalid value') or internal error surfaces for plausible configs."""
    result = load_bytes(yaml.safe_dump(doc, allow_unicode=True).encode())
    if isinstance(result, SpecError):
        for e in result.errors:
            assert not e.message.startswith(("invalid value", "invalid name", "internal error")), str(e)
            assert (e.line >= 1 and e.col >= 1) or is_cut_notice(e), str(e)
