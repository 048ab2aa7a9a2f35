"""Policy routing rules on a real kernel (issue 15 item 3), in ipvland's own namespace and in a
device's: added with FRA_PROTOCOL 212, read back by iproute2, changed make-before-break, converged
to zero writes, removed; the kernel's default rules and a foreign rule at the same priority stay."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from iproute import converge, ipj
from wire import LAB_HEAD, sh, wired_lab

from ipvland import spec as spec_mod
from ipvland.model import RuleAdd, RuleDelete

CONFIG = LAB_HEAD + """\
      d0: {{netns: rl, addresses: [192.0.2.10/24]}}
rules:
  - {{priority: 100, from: 192.0.2.0/24, table: {table}}}
  - {{netns: rl, priority: 200, to: "2001:db8::/32", iif: d0, table: 300}}
  - {{netns: rl, priority: 300, fwmark: 7, fwmask: 255, action: prohibit}}
  - {{netns: rl, priority: 400, from: 192.0.2.0/24, not: true, table: 300}}
"""


def rules(family: str, netns: str | None = None) -> list[dict[str, Any]]:
    return ipj(family, "rule", "show", netns=netns)


def ours(family: str, netns: str | None = None) -> list[dict[str, Any]]:
    return [r for r in rules(family, netns) if r.get("protocol") == "212" or r.get("protocol") == "ipvland"]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    sh("ip", "rule", "add", "priority", "100", "from", "198.51.100.0/24", "table", "7", "proto", "static")
    yield from wired_lab(tmp_path_factory, "rules")
    sh("ip", "rule", "del", "priority", "100", "from", "198.51.100.0/24", "table", "7", check=False)


def apply(tmp: Path, name: str, text: str) -> Any:
    path = tmp / f"{name}.yaml"
    path.write_text(textwrap.dedent(text))
    return converge(spec_mod.load(path))  # converged, and a second run sends no write


def test_rules_are_added_where_the_spec_says_and_read_back(lab: Path) -> None:
    defaults4 = [r for r in rules("-4") if r["priority"] in (0, 32766, 32767)]
    apply(lab, "first", CONFIG.format(table=100))
    root = ours("-4")
    assert [(r["priority"], r["src"], r["srclen"], r["table"]) for r in root] == [(100, "192.0.2.0", 24, "100")]
    rl6 = ours("-6", "rl")
    # rule 300 names no address: it is in both families (README: family unset, neither from nor to)
    assert sorted(r["priority"] for r in rl6) == [200, 300], json.dumps(rl6)
    assert [(r["priority"], r.get("dst"), r.get("iif"), r.get("table")) for r in rl6 if r["priority"] == 200] == [
        (200, "2001:db8::", "d0", "300")], json.dumps(rl6)
    rl4 = {r["priority"]: r for r in ours("-4", "rl")}
    assert (rl4[300]["action"], rl4[300]["fwmark"], rl4[300]["fwmask"]) == ("prohibit", "0x7", "0xff"), rl4
    assert ("not" in rl4[400], rl4[400]["src"], rl4[400]["table"]) == (True, "192.0.2.0", "300"), rl4
    assert sorted(rl4) == [300, 400]
    assert len(ours("-6", "rl")) == 2  # the family-less rule is in both lists
    # the kernel's defaults and the foreign rule at priority 100 are as they were
    assert [r for r in rules("-4") if r["priority"] in (0, 32766, 32767)] == defaults4
    assert any(r["priority"] == 100 and r["table"] == "7" for r in rules("-4"))


def test_a_changed_rule_is_replaced_make_before_break(lab: Path) -> None:
    report = apply(lab, "second", CONFIG.format(table=101))
    kinds = [type(c) for c in report.plan.changes]
    assert kinds == [RuleAdd, RuleDelete], [c.describe() for c in report.plan.changes]
    assert [r["table"] for r in ours("-4")] == ["101"]


def test_rules_leaving_the_spec_go_and_nothing_else(lab: Path) -> None:
    apply(lab, "none", LAB_HEAD + "      d0: {netns: rl, addresses: [192.0.2.10/24]}\n")
    assert ours("-4") == [] and ours("-4", "rl") == [] and ours("-6", "rl") == []
    assert any(r["priority"] == 100 and r["table"] == "7" for r in rules("-4"))
    assert {r["priority"] for r in rules("-6", "rl")} == {0, 32766}
