"""Issue 15 item 3: policy routing rules in the loader, the planner and `show`, on plain data.
The kernel side is tests/kernel/test_rules.py."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
import yaml

from ipvland import spec as spec_mod
from ipvland.model import RT_PROTO, Device, Observed, ObservedRule, Rule, RuleAdd, RuleDelete, Spec
from ipvland.plan import plan
from ipvland.show import to_document
from tests.unit.test_plan import ipvlan, parent_link, spec_of
from tests.unit.test_spec import errors_of, write

NET = ipaddress.ip_network
HEAD = "version: 1\nparents:\n  eth0:\n    mode: l3s\n    devices:\n      web0: {netns: web}\n"


def rules_of(tmp_path: Path, *rules: str) -> tuple[Rule, ...]:
    body = "".join(f"  - {r}\n" for r in rules)
    return spec_mod.load(write(tmp_path, f"{HEAD}rules:\n{body}")).rules


def test_rules_are_read_per_namespace_and_family(tmp_path: Path) -> None:
    got = rules_of(tmp_path,
                   "{priority: 100, from: 192.0.2.10, table: 100}",
                   "{netns: web, priority: 200, to: '2001:db8::/32', iif: web0, table: 254}",
                   "{priority: 300, fwmark: 7, fwmask: 0xff, action: blackhole, not: true}",
                   "{priority: 400, oif: eth0, family: ipv6, table: 10, from: '::/0'}")
    assert got == (
        Rule(100, 4, None, NET("192.0.2.10/32"), table=100),
        Rule(200, 6, "web", dst=NET("2001:db8::/32"), iif="web0", table=254),
        Rule(300, 4, fwmark=7, fwmask=0xFF, action="blackhole", invert=True),
        Rule(300, 6, fwmark=7, fwmask=0xFF, action="blackhole", invert=True),  # no from/to: both families
        Rule(400, 6, oif="eth0", table=10),  # from ::/0 is "from all": no prefix
    )
    assert got[0].describe() == "rule 100 from 192.0.2.10/32 lookup 100"
    assert got[2].describe() == "rule 300 not from all fwmark 0x7/0xff blackhole"


@pytest.mark.parametrize(("rule", "epath", "fragment"), [
    ("{priority: 0, table: 100}", "rules[0].priority", "must be between 1 and 4294967295"),
    ("{priority: 10}", "rules[0]", "needs 'table'"),
    ("{priority: 10, action: prohibit, table: 5}", "rules[0].table", "looks up no table"),
    ("{priority: 10, table: 5, fwmask: 3}", "rules[0].fwmask", "fwmask needs fwmark"),
    ("{priority: 10, table: 5, from: 10.0.0.0/8, to: '2001:db8::/32'}", "rules[0].to", "different families"),
    ("{priority: 10, table: 5, from: 10.0.0.0/8, family: ipv6}", "rules[0].family", "family ipv6 but"),
    ("{priority: 10, table: 5, netns: db}", "rules[0]", "netns db holds none of the spec's devices"),
    ("{priority: 10, table: 5, from: 10.0.0.1/8}", "rules[0].from", "host bits set"),
    ("{priority: 10, table: 5, action: goto}", "rules[0].action", "must be one of"),
])
def test_bad_rules(tmp_path: Path, rule: str, epath: str, fragment: str) -> None:
    errors = errors_of(write(tmp_path, f"{HEAD}rules:\n  - {rule}\n"))
    assert any(e.path == epath and fragment in e.message and e.line == 8 for e in errors), [str(e) for e in errors]


def test_one_rule_per_priority_names_both_places(tmp_path: Path) -> None:
    p = write(tmp_path, f"{HEAD}rules:\n  - {{priority: 10, table: 5}}\n",
              other__yaml="version: 1\nrules:\n  - {priority: 10, table: 6, family: ipv4}\n")
    errors = errors_of(p)
    assert any("has the priority of rule 10 from all lookup 5" in e.message and f"{p}:8:5" in e.message
               for e in errors), [str(e) for e in errors]


RULE = Rule(100, 4, "web", NET("192.0.2.10/32"), table=100)
DEFAULTS = tuple(ObservedRule(Rule(p, 4, "web", table=t), 2) for p, t in ((0, 255), (32766, 254), (32767, 253)))


def _spec(*rules: Rule) -> Spec:
    s = spec_of(Device("web0", "eth0", "web"))
    return Spec(s.version, s.parents, rules=rules)


def _observed(*rules: ObservedRule) -> Observed:
    return Observed(namespaces=frozenset({"web"}), links=(parent_link(), ipvlan("web0", 7, "web")),
                    scanned=frozenset({None, "web"}), rules=(*DEFAULTS, *rules))


def _rule_changes(p):  # type: ignore[no-untyped-def]
    return [c for c in p.changes if isinstance(c, RuleAdd | RuleDelete)]


def test_a_missing_rule_is_added_and_the_kernels_defaults_are_never_touched() -> None:
    assert _rule_changes(plan(_spec(RULE), _observed())) == [RuleAdd(RULE)]
    assert _rule_changes(plan(_spec(), _observed())) == []
    assert _rule_changes(plan(_spec(RULE), _observed(ObservedRule(RULE, RT_PROTO)))) == []


def test_a_changed_rule_is_added_before_the_old_one_goes() -> None:
    new = Rule(100, 4, "web", NET("192.0.2.10/32"), table=101)
    changes = _rule_changes(plan(_spec(new), _observed(ObservedRule(RULE, RT_PROTO))))
    assert changes == [RuleAdd(new), RuleDelete(RULE)]
    assert [c.describe() for c in changes] == ["+ rule 100 from 192.0.2.10/32 lookup 101 netns web",
                                               "- rule 100 from 192.0.2.10/32 lookup 100 netns web"]


def test_a_foreign_rule_at_the_same_priority_stays_and_an_identical_one_is_a_conflict() -> None:
    other = ObservedRule(Rule(100, 4, "web", table=7), 4)
    p = plan(_spec(RULE), _observed(other))
    assert _rule_changes(p) == [RuleAdd(RULE)]
    p = plan(_spec(RULE), _observed(ObservedRule(RULE, 4)))
    assert _rule_changes(p) == [] and "an identical rule ipvland does not own (proto 4)" in p.conflicts[0].message


def test_the_kernels_mask_for_a_mark_compares_equal() -> None:
    spec_rule = Rule(100, 4, None, fwmark=7, table=5)
    kernel_rule = Rule(100, 4, None, fwmark=7, fwmask=0xFFFFFFFF, table=5)
    assert _rule_changes(plan(_spec(spec_rule), _observed(ObservedRule(kernel_rule, RT_PROTO)))) == []


def test_ours_out_of_the_spec_go_and_out_of_view_stay() -> None:
    gone = ObservedRule(Rule(5, 6, None, table=9), RT_PROTO)
    assert _rule_changes(plan(_spec(), _observed(gone))) == [RuleDelete(gone.rule)]
    partial = Observed(links=(parent_link(),), rules=(ObservedRule(RULE, RT_PROTO),), scope=frozenset({None}))
    assert _rule_changes(plan(_spec(), partial)) == []


def test_show_round_trips_rules(tmp_path: Path) -> None:
    observed = _observed(ObservedRule(RULE, RT_PROTO),
                         ObservedRule(Rule(300, 6, None, fwmark=7, fwmask=0xFFFFFFFF, action="prohibit",
                                           invert=True), RT_PROTO),
                         ObservedRule(Rule(400, 4, None, iif="eth0", oif="x1", fwmark=3, fwmask=0xF, table=300),
                                      RT_PROTO))
    doc = to_document(observed)
    assert doc["rules"][0] == {"netns": "web", "priority": 100, "family": "ipv4", "from": "192.0.2.10/32",
                               "table": 100}
    path = tmp_path / "shown.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert _rule_changes(plan(spec_mod.load(path), observed)) == []
