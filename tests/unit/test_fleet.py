"""One tree, every host (issue 14): `hosts:` selection, field-by-field merge of a device, render with
provenance, validate --host/--hosts. Pure: no root, no kernel."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ipvland import spec as spec_mod
from ipvland.model import State
from ipvland.spec import SCHEMA, SpecError, load, load_tree, loads, render_yaml

ROOT = Path(__file__).resolve().parents[2]
FLEET = ROOT / "etc" / "examples" / "fleet"

MAIN = "version: 1\nparents:\n  eth0:\n    mode: l3s\n"


def tree(tmp: Path, main: str = MAIN, **dropins: str) -> Path:
    path = tmp / "config.yaml"
    path.write_text(textwrap.dedent(main))
    (tmp / "config.d").mkdir(exist_ok=True)
    for name, text in dropins.items():
        (tmp / "config.d" / name.replace("__", ".")).write_text(textwrap.dedent(text))
    return path


def dev(name: str, body: str, hosts: str | None = None) -> str:
    head = f"hosts: {hosts}\n" if hosts is not None else ""
    return f"version: 1\n{head}parents:\n  eth0:\n    devices:\n      {name}: {body}\n"


def errors(path: Path, host: str) -> list[str]:
    with pytest.raises(SpecError) as info:
        load(path, host=host)
    return [str(e) for e in info.value.errors]


# ---------------------------------------------------------------- selection


def test_a_dropin_with_hosts_applies_only_on_the_hosts_its_globs_match(tmp_path: Path) -> None:
    p = tree(tmp_path, all__yaml=dev("common0", "{netns: c}"),
             web__yaml=dev("web0", "{netns: w}", hosts='["web-*", "db-1"]'),
             odd__yaml=dev("odd0", "{netns: o}", hosts='["node-?[13]"]'))
    names = {h: sorted(d.name for d in load(p, host=h).devices)
             for h in ("web-1", "WEB-22", "db-1", "db-2", "node-a1", "node-a2", "x")}
    assert names == {"web-1": ["common0", "web0"], "WEB-22": ["common0", "web0"], "db-1": ["common0", "web0"],
                     "db-2": ["common0"], "node-a1": ["common0", "odd0"], "node-a2": ["common0"], "x": ["common0"]}
    assert load(p, host="db-2").sources == (str(p), str(tmp_path / "config.d" / "all.yaml"))


def test_the_identity_is_ipvland_host_else_the_hostname(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tree(tmp_path, web__yaml=dev("web0", "{}", hosts="[web-1]"))
    monkeypatch.setattr(spec_mod.socket, "gethostname", lambda: "web-1")
    monkeypatch.delenv("IPVLAND_HOST", raising=False)
    assert spec_mod.default_host() == "web-1" and len(load(p).devices) == 1
    monkeypatch.setenv("IPVLAND_HOST", "db-1")
    assert spec_mod.default_host() == "db-1" and len(load(p).devices) == 0
    assert len(load(p, host="web-1").devices) == 1  # --host wins over both


def test_hosts_in_the_main_file_is_an_error(tmp_path: Path) -> None:
    p = tree(tmp_path, main="version: 1\nhosts: [web-1]\nparents: {}\n")
    assert errors(p, "web-1") == [f"{p}:2:1: hosts: 'hosts' selects the hosts of a drop-in; the main file "
                                  "applies to every host (move it to config.d/)"]


@pytest.mark.parametrize(("hosts", "fragment"), [
    ("[]", "needs at least 1 item, not 0"),
    ('"web-*"', "must be a list"),
    ('["web 1"]', "host pattern 'web 1': use letters"),
    ('["a/b"]', "host pattern 'a/b'"),
    ('[""]', "invalid value ''"),
])
def test_bad_hosts_are_errors_on_every_host(tmp_path: Path, hosts: str, fragment: str) -> None:
    p = tree(tmp_path, web__yaml=dev("web0", "{}", hosts=hosts))
    for host in ("web-1", "other"):
        assert any(fragment in e and "web.yaml:2:" in e for e in errors(p, host)), errors(p, host)


def test_a_broken_file_for_other_hosts_still_fails_every_host(tmp_path: Path) -> None:
    # Every file is checked on every host: a tree with a broken file is broken, whoever it selects.
    p = tree(tmp_path, db__yaml="version: 1\nhosts: [db-1]\nparents: {eth0: {mode: l4}}\n")
    assert any("db.yaml:3:" in e and "must be one of" in e for e in errors(p, "web-1"))


# ---------------------------------------------------------------- merge


def test_one_device_merges_field_by_field_across_files(tmp_path: Path) -> None:
    p = tree(tmp_path,
             a_shared__yaml=dev("web0", "{netns: web, mtu: 1400, state: down, routes: [{to: default}], "
                                        "ipv6: {accept_ra: false}}"),
             b_host__yaml=dev("web0", '{addresses: ["192.0.2.10/24"], neighbors: [{address: 192.0.2.1, '
                                      'lladdr: "02:00:00:00:00:01"}]}', hosts="[web-1]"))
    (d,) = load(p, host="web-1").devices
    assert (d.netns, d.mtu, d.state, [str(r.to) for r in d.routes], [str(a) for a in d.addresses],
            len(d.neighbors), d.sysctls) == ("web", 1400, State.DOWN, ["0.0.0.0/0"], ["192.0.2.10/24"], 1,
                                             (("ipv6.accept_ra", 0),))
    (d,) = load(p, host="web-2").devices
    assert d.addresses == () and d.mtu == 1400


def test_one_field_with_two_values_names_both_places(tmp_path: Path) -> None:
    p = tree(tmp_path, a__yaml=dev("web0", "{netns: web, addresses: [192.0.2.10/24]}"),
             b__yaml=dev("web0", "{netns: web, addresses: [192.0.2.11/24]}", hosts="[web-1]"))
    a, b = tmp_path / "config.d" / "a.yaml", tmp_path / "config.d" / "b.yaml"
    assert errors(p, "web-1") == [
        f"{b}:6:37: parents.eth0.devices.web0.addresses: device web0 addresses ['192.0.2.11/24'] conflicts "
        f"with ['192.0.2.10/24'] at {a}:5:37 (a field of a device has one value: set it in one file)"]
    assert len(load(p, host="web-2").devices) == 1  # b.yaml is not web-2's: no conflict there


def test_the_same_device_for_disjoint_hosts_never_conflicts(tmp_path: Path) -> None:
    p = tree(tmp_path, h1__yaml=dev("web0", "{mtu: 1400}", hosts="[web-1]"),
             h2__yaml=dev("web0", "{mtu: 9000}", hosts="[web-2]"))
    assert [d.mtu for d in load_tree(p).spec("web-2").devices] == [9000]
    t = load_tree(p)  # one tree, both hosts, in either order: drafts are shared and never changed
    assert (t.spec("web-1").devices[0].mtu, t.spec("web-2").devices[0].mtu, t.spec("web-1").devices[0].mtu) \
        == (1400, 9000, 1400)


def test_every_device_key_of_the_schema_has_a_merge_rule() -> None:
    # A new device field (schema.json) must say how it merges across files: add it to spec.DEVICE_FIELDS.
    assert set(SCHEMA["$defs"]["device"]["properties"]) == set(spec_mod.DEVICE_FIELDS)


def test_each_file_is_parsed_once_for_any_number_of_hosts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tree(tmp_path, **{f"h{i}__yaml": dev(f"d{i}", "{}", hosts=f"[web-{i}]") for i in range(5)})
    calls: list[str] = []
    real = spec_mod._parse
    monkeypatch.setattr(spec_mod, "_parse", lambda file, *a, **k: calls.append(file) or real(file, *a, **k))
    t = load_tree(p)
    for i in range(200):
        t.spec(f"web-{i % 7}")
    assert len(calls) == 6 and len(set(calls)) == 6
    assert len(t._memo) == 6  # five hosts with their file, and every other host


def test_files_sha256_is_of_the_bytes_parsed_for_this_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The digest a rollback refuses: of the selected files' bytes as parsed, never a second read."""
    p = tree(tmp_path, all__yaml=dev("common0", "{netns: c}"), web__yaml=dev("web0", "{}", hosts="[web-1]"))
    web, other = load(p, host="web-1"), load(p, host="x")
    assert len(web.files_sha256) == 64 and web.files_sha256 != other.files_sha256
    (tmp_path / "config.d" / "web.yaml").write_text(dev("web0", "{}", hosts="[web-1]") + "# a comment\n")
    assert load(p, host="x").files_sha256 == other.files_sha256, "another host's file is not this host's"
    commented = load(p, host="web-1")
    assert commented == web and commented.files_sha256 != web.files_sha256  # same config, other files
    real = spec_mod._read

    def read_then_replaced(path: Path, file: str, errors: object) -> str | None:
        text = real(path, file, errors)  # type: ignore[arg-type]
        path.write_text("version: 1\nparents: {}\n")  # a sync tool replaces it right after the read
        return text

    monkeypatch.setattr(spec_mod, "_read", read_then_replaced)
    assert load(p, host="web-1").files_sha256 == commented.files_sha256


# ---------------------------------------------------------------- render


def test_render_round_trips_through_the_loader_with_every_value_placed(tmp_path: Path) -> None:
    p = tree(tmp_path, main=MAIN + "    routes: [{to: 198.51.100.7/32}]\nprobes: [{netns: web, target: 192.0.2.1}]\n",
             a__yaml=dev("web0", "{netns: web, mtu: 1400}"),
             b__yaml=dev("web0", '{addresses: ["192.0.2.10/24", "2001:db8::10/64"]}', hosts="[web-1]"),
             c__yaml="version: 1\nparents:\n  eth0:\n    routes: [{to: 198.51.100.8/32, via: 192.0.2.1}]\n"
                     "  'on':\n    mode: l2\n    devices: {x1: {}}\n")
    t = load_tree(p)
    document, prov = t.render("web-1")
    text = render_yaml(document, prov, header="a header")
    back = loads(text, "<render>")
    want = t.spec("web-1")
    assert (back.parents, back.probes) == (want.parents, want.probes)
    a, b = tmp_path / "config.d" / "a.yaml", tmp_path / "config.d" / "b.yaml"
    lines = text.splitlines()
    assert lines[0] == "# a header"
    assert f'        mtu: 1400  # {a}:5:' in "\n".join(lines) or any(
        line.strip().startswith("mtu: 1400") and line.endswith(f"# {a}:5") for line in lines)
    assert any(line.strip().startswith("addresses:") and line.endswith(f"# {b}:6") for line in lines), text
    assert any(line.strip().startswith('- {"to": "198.51.100.8/32"') and "c.yaml:4" in line for line in lines), text
    assert '"on":' in text  # a key YAML would read as a boolean is quoted
    assert "hosts" not in text


def test_render_refuses_an_invalid_host(tmp_path: Path) -> None:
    p = tree(tmp_path, a__yaml=dev("web0", "{mtu: 1400}"), b__yaml=dev("web0", "{mtu: 1500}", hosts="[web-1]"))
    with pytest.raises(SpecError):
        load_tree(p).render("web-1")
    assert load_tree(p).render("web-2")[0]["parents"]["eth0"]["devices"]["web0"] == {"mtu": 1400}


# ---------------------------------------------------------------- the commands (real processes, no root needed)


def ipvland(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ipvland", *args], input=stdin, text=True, cwd=ROOT,
                          capture_output=True, timeout=60)


def test_the_fleet_example_is_valid_for_its_inventory_and_renders_per_host() -> None:
    config, inventory = str(FLEET / "config.yaml"), str(FLEET / "inventory.txt")
    r = ipvland("validate", "-c", config, "--hosts", inventory)
    assert (r.returncode, r.stderr) == (0, ""), r.stderr
    assert "valid for all 3 host(s)" in r.stdout
    r = ipvland("render", "-c", config, "--host", "web-2")
    assert r.returncode == 0, r.stderr
    assert "192.0.2.12/24" in r.stdout and "50-web-2.yaml:8" in r.stdout and "db0" not in r.stdout
    v = ipvland("validate", "-c", "-", stdin=r.stdout)
    assert v.returncode == 0, v.stderr
    j = json.loads(ipvland("render", "-c", config, "--host", "db-1", "--json").stdout)
    assert j["host"] == "db-1" and j["config"]["parents"]["eth0"]["devices"]["db0"]["mtu"] == 9000
    assert j["provenance"]["parents.eth0.devices.db0.addresses"].endswith("50-db-1.yaml:7:20")


def test_validate_hosts_prefixes_each_hosts_errors_and_reports_file_errors_once(tmp_path: Path) -> None:
    p = tree(tmp_path, a__yaml=dev("web0", "{mtu: 1400}"), b__yaml=dev("web0", "{mtu: 1500}", hosts="[web-2]"),
             c__yaml="version: 1\nparents: {eth0: {mode: l4}}\n")
    inv = tmp_path / "inventory"
    inv.write_text("# the fleet\nweb-1\nweb-2  # the odd one\n\nweb-3\n")
    r = ipvland("validate", "-c", str(p), "--hosts", str(inv))
    b = tmp_path / "config.d" / "b.yaml"
    lines = r.stderr.splitlines()
    assert r.returncode == 1
    assert sum("c.yaml:2:" in line for line in lines) == 1 and lines[0].startswith(str(tmp_path / "config.d" / "c"))
    assert [line for line in lines if line.startswith("web-")] == [
        f"web-2: {b}:6:19: parents.eth0.devices.web0.mtu: device web0 mtu 1500 conflicts with 1400 at "
        f"{tmp_path / 'config.d' / 'a.yaml'}:5:19 (a field of a device has one value: set it in one file)"]
    assert lines[-1] == f"{p}: 1 error(s) in the files, 1 of 3 host(s) with errors of their own ({inv})"
    r = ipvland("validate", "-c", str(p), "--host", "web-2")
    assert r.returncode == 1 and "mtu 1500 conflicts" in r.stderr


def test_validate_hosts_notes_a_dropin_that_selects_none_of_the_inventory(tmp_path: Path) -> None:
    p = tree(tmp_path, a__yaml=dev("web0", "{}", hosts='["wbe-*"]'), b__yaml=dev("db0", "{}", hosts="[db-1]"))
    inv = tmp_path / "inventory"
    inv.write_text("web-1\ndb-1\n")
    r = ipvland("validate", "-c", str(p), "--hosts", str(inv))
    assert r.returncode == 0, r.stderr  # a note, not an error
    assert r.stderr == f"{tmp_path / 'config.d' / 'a.yaml'}: note: its hosts: match none of the 2 host(s) of {inv}\n"


def test_validate_host_and_hosts_are_one_or_the_other(tmp_path: Path) -> None:
    r = ipvland("validate", "--host", "a", "--hosts", "b")
    assert r.returncode == 2 and "not allowed with" in r.stderr
    r = ipvland("validate", "-c", str(tree(tmp_path)), "--hosts", str(tmp_path / "missing"))
    assert r.returncode == 1 and "cannot read: No such file or directory" in r.stderr


def test_pre_commit_hook_runs_validate_on_an_inventory() -> None:
    import yaml

    (hook,) = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    assert hook["entry"].split()[:2] == ["ipvland", "validate"] and hook["pass_filenames"] is False
    assert hook["language"] == "python"


def test_the_fleet_bench_tree_is_valid_and_its_key_joins_bench_runs_json(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import fleet  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(ROOT / "bench"))
    main, inventory, n_files = fleet.write_tree(tmp_path / "tree")
    hosts = inventory.read_text().split()
    assert (n_files, len(hosts), len(set(hosts))) == (100, 10000, 10000)
    t = load_tree(main)
    assert t.file_errors == []
    some = hosts[::997]
    assert len({t.selected(h) for h in some}) == len(some)  # nearly every host selects its own set of files
    for h in some:
        s = t.spec(h)
        web0 = next(d for d in s.devices if d.name == "web0")
        assert web0.mtu == 9000 and len(web0.addresses) == 1  # structure shared, addresses per rack pair
        assert len(s.devices) > 50
    out = tmp_path / "bench.json"
    out.write_text(json.dumps({"headline": {"noop_ratio": 1.5}, "noop_ratio": 1.5}))
    result = fleet.measure(hosts=50)
    fleet.add_to(out, result)
    doc = json.loads(out.read_text())
    assert doc["noop_ratio"] == 1.5 and doc["headline"] == {"noop_ratio": 1.5,
                                                            "fleet_validate_10k_s": result["fleet_validate_10k_s"]}
    assert doc["fleet"]["hosts"] == 50 and doc["fleet_validate_10k_s"] > 0


def test_a_device_merged_across_files_keeps_the_sysctls_and_options_of_both_families(tmp_path: Path) -> None:
    """Found at the merge of issues 14 and 15: the ipv4 and ipv6 blocks share one sysctls list, and a
    per-field merge that copied the list for `ipv4` dropped the `ipv6` block given by another file."""
    p = tree(tmp_path,
             a__yaml=dev("web0", '{netns: w, ipv6: {accept_ra: false}, '
                                 'addresses: [{address: "2001:db8::1/64", nodad: true}]}'),
             b__yaml=dev("web0", "{ipv4: {rp_filter: 2, ip_forward: true}}"))
    (device,) = load(p, host="x").devices
    assert dict(device.sysctls) == {"ipv6.accept_ra": 0, "ipv4.rp_filter": 2}
    assert device.ip_forward is True
    assert [str(a) for a, o in device.address_options if o.nodad] == ["2001:db8::1/64"]


def test_regression_an_inventory_that_is_a_secret_file_is_not_echoed(tmp_path: Path) -> None:
    # `validate --hosts /etc/shadow` (a wrong path in a CI job) printed each line as a host name.
    p = tree(tmp_path, a__yaml=dev("web0", "{mtu: 1400}"), b__yaml=dev("web0", "{mtu: 1500}", hosts="['*']"))
    inv = tmp_path / "shadow"
    inv.write_text("root:$6$saltsalt$SECRETHASH:19000:0:99999:7:::\nweb-1\n" + "daemon:*:19000::::::\n" * 80)
    r = ipvland("validate", "-c", str(p), "--hosts", str(inv))
    assert r.returncode == 1
    assert "SECRET" not in r.stdout + r.stderr and "saltsalt" not in r.stderr and "daemon:" not in r.stderr
    lines = r.stderr.splitlines()
    assert lines[0] == f"{inv}:1: not a host name (one per line: letters, digits, '-', '_' and '.', at most 253)"
    assert lines[1].startswith(f"{inv}:3: ")
    assert lines[-1] == f"{inv}: … and 31 more line(s) that are not a host name"  # 81 bad lines, 50 shown
    assert len(lines) == 51


def test_an_inventory_larger_than_any_fleet_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    p = tree(tmp_path)
    inv = tmp_path / "big"
    with open(inv, "wb") as f:
        f.truncate(64 * 1024 * 1024)  # sparse: 64 MiB of NULs
    r = ipvland("validate", "-c", str(p), "--hosts", str(inv))
    assert r.returncode == 1 and r.stderr == f"{inv}: larger than 16 MiB: not an inventory of host names\n"


def test_a_fully_qualified_host_is_selected_by_its_short_name_too(tmp_path: Path) -> None:
    p = tree(tmp_path, a__yaml=dev("db0", "{mtu: 1400}", hosts="[db-1]"),
             b__yaml=dev("web0", "{mtu: 1400}", hosts="['web-1.example.com']"))
    def names(host: str) -> set[str]:
        return {d.name for d in load(p, host=host).devices}

    assert names("db-1.example.com") == {"db0"} and names("DB-1") == {"db0"}
    assert names("web-1.example.com") == {"web0"}
    assert names("web-1") == set()  # a pattern with a domain needs the domain
    assert names("db-10.example.com") == set()
