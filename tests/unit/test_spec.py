"""The config loader and validator: positions, messages, merging, and hostile input."""

from __future__ import annotations

import ipaddress
import json
import os
import textwrap
from pathlib import Path

import jsonschema
import pytest
import yaml

from ipvland import spec as spec_mod
from ipvland.model import Flag, Mode, Neighbor, Route, State
from ipvland.spec import SCHEMA, ConfigError, SpecError, default_config_path, dropin_paths, load

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "etc" / "ipvland" / "config.yaml"
SCHEMA_FILE = ROOT / "ipvland" / "schema.json"  # the one copy, shipped in the package
INSTALLED_SCHEMA = "/usr/share/ipvland/ipvland.schema.json"


# ---------------------------------------------------------------- helpers


def write(tmp: Path, main: str | bytes | None, **dropins: str) -> Path:
    """Write config.yaml (dedented) and config.d/<name> drop-ins; return the main path."""
    path = tmp / "config.yaml"
    if isinstance(main, bytes):
        path.write_bytes(main)
    elif main is not None:
        path.write_text(textwrap.dedent(main))
    if dropins:
        (tmp / "config.d").mkdir(exist_ok=True)
        for name, text in dropins.items():
            (tmp / "config.d" / name.replace("__", ".")).write_text(textwrap.dedent(text))
    return path


def errors_of(path: Path) -> tuple[ConfigError, ...]:
    with pytest.raises(SpecError) as info:
        load(path)
    return info.value.errors


def expect(path: Path, line: int, col: int, fragment: str, file: Path | None = None,
           epath: str | None = None) -> ConfigError:
    """Loading fails with an error at file:line:col whose message contains fragment."""
    errs = errors_of(path)
    f = str(file or path)
    hits = [e for e in errs if e.file == f and (e.line, e.col) == (line, col) and fragment in e.message]
    assert hits, "\n".join(str(e) for e in errs)
    if epath is not None:
        assert hits[0].path == epath, str(hits[0])
    return hits[0]


def one_device(body: str, mode: str = "l3s") -> str:
    """A main file with parent eth0 and the given (already indented by 6) device lines."""
    return f"version: 1\nparents:\n  eth0:\n    mode: {mode}\n    devices:\n{body}"


# ---------------------------------------------------------------- API and example


def test_example_config_loads_and_matches_the_documented_model() -> None:
    s = load(EXAMPLE)
    assert s.version == 1
    assert s.sources == (str(EXAMPLE),)
    (eth0,) = s.parents
    assert (eth0.name, eth0.mode, eth0.flags) == ("eth0", Mode.L3S, Flag.BRIDGE)
    assert eth0.routes == (Route(ipaddress.ip_network("198.51.100.7/32"),
                                 ipaddress.ip_address("192.0.2.1")),)
    assert eth0.neighbors == (Neighbor(ipaddress.ip_address("192.0.2.10"), "e8:6a:6e:8a:a2:44"),)
    (web0,) = eth0.devices
    assert (web0.name, web0.parent, web0.netns, web0.mtu, web0.state) == ("web0", "eth0", "web", 1500,
                                                                          State.UP)
    assert web0.addresses == (ipaddress.ip_interface("192.0.2.10/24"),
                              ipaddress.ip_interface("2001:db8::10/64"))
    assert web0.routes == (Route(ipaddress.ip_network("0.0.0.0/0")),)
    assert s.probes[0].target == ipaddress.ip_address("192.0.2.1")
    assert (s.probes[0].netns, s.probes[0].tries, s.probes[0].timeout) == ("web", 3, 1.0)


def test_example_config_validates_against_the_schema_file_directly() -> None:
    schema = json.loads(SCHEMA_FILE.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] and schema["title"] and schema["description"]
    jsonschema.Draft202012Validator(schema).validate(yaml.safe_load(EXAMPLE.read_text()))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(schema).validate({"version": 1, "parents": {"eth0": {"mod": "l2"}}})


def test_schema_file_is_the_schema_the_loader_uses_and_the_only_copy() -> None:
    assert json.loads(SCHEMA_FILE.read_text()) == SCHEMA
    copies = [p for p in ROOT.rglob("*.json") if p.is_file() and ".venv" not in p.parts and ".git" not in p.parts
              and '"$defs"' in p.read_text(errors="replace") and "ipvland" in p.read_text(errors="replace")]
    assert copies == [SCHEMA_FILE]


def test_example_points_editors_at_the_schema_the_readme_installs() -> None:
    assert EXAMPLE.read_text().splitlines()[0] == f"# yaml-language-server: $schema={INSTALLED_SCHEMA}"
    readme = (ROOT / "README.md").read_text()
    assert f"ipvland schema > {INSTALLED_SCHEMA}" in readme
    assert "install -d /usr/share/ipvland" in readme


def test_config_error_str() -> None:
    assert str(ConfigError("a.yaml", 3, 7, "parents.eth0", "bad")) == "a.yaml:3:7: parents.eth0: bad"
    assert str(ConfigError("a.yaml", 0, 0, "", "cannot read: x")) == "a.yaml: cannot read: x"  # no fake 0:0
    assert str(ConfigError("a.yaml", 0, 0, "parents", "x")) == "a.yaml: parents: x"


def test_spec_error_sorts_by_file_line_col() -> None:
    e = SpecError([ConfigError("b", 1, 1, "", "x"), ConfigError("a", 9, 1, "", "y"),
                   ConfigError("a", 2, 5, "", "z"), ConfigError("a", 2, 3, "", "w")])
    assert [(x.file, x.line, x.col) for x in e.errors] == [("a", 2, 3), ("a", 2, 5), ("a", 9, 1), ("b", 1, 1)]
    assert str(e).splitlines()[0] == "a:2:3: w"


def test_default_config_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IPVLAND_CONFIG", raising=False)
    assert default_config_path() == Path("/etc/ipvland/config.yaml")
    monkeypatch.setenv("IPVLAND_CONFIG", "/tmp/x.yaml")
    assert default_config_path() == Path("/tmp/x.yaml")


def test_parents_empty_is_valid(tmp_path: Path) -> None:
    s = load(write(tmp_path, "version: 1\nparents: {}\n"))
    assert s.parents == () and s.probes == ()


def test_parent_without_devices_needs_no_mode_and_null_entries_are_empty(tmp_path: Path) -> None:
    s = load(write(tmp_path, "version: 1\nparents:\n  eth0:\n  eth1:\n    mode: l2\n    devices:\n      a:\n"))
    p0 = s.parents[0]
    assert (p0.name, p0.mode, p0.devices) == ("eth0", None, ())
    assert s.parents[1].devices[0].name == "a" and s.parents[1].devices[0].netns is None
    assert s.parents[1].devices[0].state is State.UP


def test_all_errors_are_reported_at_once(tmp_path: Path) -> None:
    p = write(tmp_path, one_device("      a:\n        mtu: 5\n        state: sideways\n        adresses: []\n"))
    assert len(errors_of(p)) == 3


# ---------------------------------------------------------------- files


def test_missing_main_file(tmp_path: Path) -> None:
    (e,) = errors_of(tmp_path / "config.yaml")
    assert str(e) == f"{tmp_path / 'config.yaml'}: cannot read: No such file or directory"


def test_directory_instead_of_file(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").mkdir()
    (e,) = errors_of(tmp_path / "config.yaml")
    assert (e.line, e.col) == (0, 0) and "Is a directory" in e.message


def test_permission_denied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = write(tmp_path, "version: 1\nparents: {}\n")

    def deny(path: Path) -> object:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(spec_mod, "_open", deny)
    (e,) = errors_of(p)
    assert str(e) == f"{p}: cannot read: Permission denied"


def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "config.yaml")
    (e,) = errors_of(tmp_path / "config.yaml")
    assert "not a regular file" in e.message


def test_huge_file_is_refused(tmp_path: Path) -> None:
    p = write(tmp_path, b"version: 1\nparents: {}\n" + b"#" * (4 * 1024 * 1024))
    (e,) = errors_of(p)
    assert (e.line, e.col) == (0, 0) and "too large" in e.message and "4 MiB" in e.message


def test_non_utf8(tmp_path: Path) -> None:
    p = write(tmp_path, b"version: 1\nparents:\n  eth\xff0: {}\n")
    expect(p, 3, 6, "not valid UTF-8 at byte 25")


def test_nul_byte(tmp_path: Path) -> None:
    p = write(tmp_path, b"version: 1\x00\nparents: {}\n")
    expect(p, 1, 11, "#x0000")


def test_binary_garbage(tmp_path: Path) -> None:
    p = write(tmp_path, bytes(range(256)) * 4)
    assert errors_of(p)


# ---------------------------------------------------------------- document shape


@pytest.mark.parametrize(("text", "line", "col", "fragment"), [
    ("", 1, 1, "empty document"),
    ("# only\n# comments\n", 1, 1, "empty document"),
    ("- a\n- b\n", 1, 1, "must be a mapping starting with 'version: 1', not a list"),
    ("hello\n", 1, 1, "must be a mapping"),
    ("42\n", 1, 1, "must be a mapping"),
    ("version: 2\nparents: {}\n", 1, 10, "unsupported version 2"),
    ("version: '1'\nparents: {}\n", 1, 10, "must be the integer 1, not '1'"),
    ("version: true\nparents: {}\n", 1, 10, "must be the integer 1, not 'true', which YAML reads as a boolean"),
    ("version: 1.0\nparents: {}\n", 1, 10, "must be the integer 1"),
    ("parents: {}\n", 1, 1, "missing required key 'version'"),
    ("version: 1\n", 1, 1, "missing required key 'parents' in the main file"),
    ("version: 1\nparents:\n", 2, 9, "must be a mapping, not nothing (null) (write {} for none)"),
    ("version: 1\nparents:\n  eth0:\n    mode: l2\n    devices:\n      a:\n        addresses: [192.0.2.1/24",
     7, 33, "YAML syntax error: "),
    ("version: 1\nparents:\n  eth0: {mode: l2\n", 4, 1, "YAML syntax error"),
    ("version: 1\nparents: {}\n---\nversion: 1\n", 3, 1, "expected a single document"),
    ("version: 1\nparents:\n\teth0: {}\n", 3, 1, "not tabs"),
    ("version: 1\nparents: {}\nversion: 1\n", 3, 1, "duplicate key 'version' (first at line 1)"),
    ("version: 1\nparents: !!python/object:os.system {}\n", 2, 10, "YAML tag tag:yaml.org,2002:python/object"),
    ("version: !!python/name:os.system 1\nparents: {}\n", 1, 10, "is not supported"),
    ("version: 1\nparents: !custom {}\n", 2, 10, "YAML tag !custom is not supported"),
    ("version: !!int abc\nparents: {}\n", 1, 10, "'abc' is not a valid int"),
    ("version: 1\nparents:\n  ? [a]\n  : {}\n", 3, 5, "mapping keys must be plain strings"),
    ("version: 1\nparents: {}\n<<: {version: 1}\n", 3, 1, "unknown key '<<'"),
    ("version: 1\nparents: {}\nprobe: []\n", 3, 1, "unknown key 'probe' (did you mean 'probes'?)"),
])
@pytest.mark.parametrize("parser", ["libyaml", "python"])
def test_bad_documents(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, parser: str, text: str, line: int,
                       col: int, fragment: str) -> None:
    if parser == "python":
        monkeypatch.setattr(spec_mod, "_LoaderClass", spec_mod._Loader)
    elif spec_mod._LoaderClass is spec_mod._Loader:
        pytest.skip("PyYAML without libyaml")
    elif (line, col) == (7, 33):  # libyaml reports the end of the stream, past the last newline
        line, col = 8, 1
    expect(write(tmp_path, text), line, col, fragment)


def test_alias_is_refused(tmp_path: Path) -> None:
    p = write(tmp_path, "version: 1\nparents:\n  eth0: &p {mode: l2}\n  eth1: *p\n")
    expect(p, 4, 9, "YAML aliases (*name) are not supported")


def test_billion_laughs(tmp_path: Path) -> None:
    lines = ['version: 1', 'a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    p = write(tmp_path, "\n".join(lines) + "\n")
    expect(p, 3, 10, "aliases")


@pytest.mark.parametrize("parser", ["libyaml", "python"])
@pytest.mark.parametrize("depth", [100, 20000])
def test_deep_nesting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, depth: int, parser: str) -> None:
    if parser == "python":
        monkeypatch.setattr(spec_mod, "_LoaderClass", spec_mod._Loader)
    p = write(tmp_path, "version: 1\nparents: " + "[" * depth + "]" * depth + "\n")
    (e,) = errors_of(p)
    assert e.line == 2 and "nesting" in e.message


def test_deep_block_nesting(tmp_path: Path) -> None:
    text = "version: 1\nparents:\n" + "".join("  " * (i + 1) + f"k{i}:\n" for i in range(300))
    (e,) = errors_of(write(tmp_path, text))
    assert "nesting deeper than" in e.message


def test_duplicate_device_key(tmp_path: Path) -> None:
    p = write(tmp_path, one_device("      web0: {}\n      web1: {}\n      web0: {}\n"))
    expect(p, 8, 7, "duplicate key 'web0' (first at line 6)", epath="parents.eth0.devices.web0")


def test_unknown_key_suggests_the_closest(tmp_path: Path) -> None:
    p = write(tmp_path, one_device("      web0:\n        adresses: [192.0.2.1/24]\n"))
    e = expect(p, 7, 9, "unknown key 'adresses' (did you mean 'addresses'?)")
    assert e.path == "parents.eth0.devices.web0.adresses"


def test_unknown_key_without_close_match_lists_keys(tmp_path: Path) -> None:
    p = write(tmp_path, "version: 1\nparents:\n  eth0:\n    zzz: 1\n")
    expect(p, 4, 5, "valid keys: devices, flags, match, mode, neighbors, routes")


# ---------------------------------------------------------------- enums, types, ranges


@pytest.mark.parametrize(("body", "line", "col", "fragment", "epath"), [
    ("    mode: l4\n", 4, 11, "must be one of l2, l3, l3s, not 'l4'", "parents.eth0.mode"),
    ("    flags: open\n", 4, 12, "must be one of bridge, private, vepa", "parents.eth0.flags"),
    ("    devices: []\n", 4, 14, "must be a mapping, not a list", "parents.eth0.devices"),
    ("    routes: {}\n", 4, 13, "must be a list, not a mapping", "parents.eth0.routes"),
    ("    routes:\n", 4, 12, "must be a list, not nothing (null) (write [] for none)", "parents.eth0.routes"),
    ("    routes: [{via: 192.0.2.1}]\n", 4, 14, "missing required key 'to'", "parents.eth0.routes[0]"),
    ("    neighbors: [{address: 192.0.2.1}]\n", 4, 17, "missing required key 'lladdr'",
     "parents.eth0.neighbors[0]"),
])
def test_parent_structure_errors(tmp_path: Path, body: str, line: int, col: int, fragment: str,
                                 epath: str) -> None:
    expect(write(tmp_path, "version: 1\nparents:\n  eth0:\n" + body), line, col, fragment, epath=epath)


@pytest.mark.parametrize(("device", "line", "col", "fragment"), [
    ("mtu: 67", 7, 14, "must be between 68 and 65535, not 67"),
    ("mtu: 65536", 7, 14, "must be between 68 and 65535"),
    ("mtu: '1500'", 7, 14, "must be an integer"),
    ("mtu: 01500", 7, 14, "must be an integer, not '01500'"),
    ("mtu: 1500.0", 7, 14, "must be an integer"),
    ("state: on", 7, 16, "must be one of up, down, not 'on', which YAML reads as a boolean"),
    ("state: UP", 7, 16, "must be one of up, down"),
    ("netns: yes", 7, 16, "must be a string or a mapping, not 'yes', which YAML reads as a boolean (quote it)"),
    ("netns: 12", 7, 16, "must be a string"),
    ("addresses: 192.0.2.1/24", 7, 20, "must be a list"),
])
def test_device_type_and_range_errors(tmp_path: Path, device: str, line: int, col: int, fragment: str) -> None:
    expect(write(tmp_path, one_device(f"      web0:\n        {device}\n")), line, col, fragment)


def test_device_state_down(tmp_path: Path) -> None:
    s = load(write(tmp_path, one_device("      web0:\n        state: down\n")))
    assert s.devices[0].state is State.DOWN


# ---------------------------------------------------------------- names


@pytest.mark.parametrize(("name", "fragment"), [
    ("a23456789012345x", "16 bytes long; the kernel allows at most 15"),
    ("'éééééééé'", "16 bytes long"),
    ("'a/b'", "'/'"),
    ("'a:b'", "':'"),
    ("'a b'", "' '"),
    ("'.'", "is not a valid interface name"),
    ("'..'", "is not a valid interface name"),
    ("ipvtmp-1234abcd", "reserved for ipvland's temporary names"),
    ("lo", "loopback"),
    ("'\"\\x01x\"'", "control characters"),
])
def test_bad_device_names(tmp_path: Path, name: str, fragment: str) -> None:
    if name.startswith("'\""):  # a double-quoted YAML escape
        name = name[1:-1]
    expect(write(tmp_path, one_device(f"      {name}: {{}}\n")), 6, 7, fragment)


def test_fifteen_byte_names_are_fine(tmp_path: Path) -> None:
    s = load(write(tmp_path, "version: 1\nparents:\n  a23456789012345:\n    mode: l2\n"
                             "    devices:\n      b23456789012345: {}\n      éééééééb: {}\n"))
    assert [d.name for d in s.devices] == ["b23456789012345", "éééééééb"]


def test_bad_parent_name(tmp_path: Path) -> None:
    expect(write(tmp_path, "version: 1\nparents:\n  eth0/1: {}\n"), 3, 3, "'/'", epath="parents['eth0/1']")
    expect(write(tmp_path, "version: 1\nparents:\n  'eth 0': {}\n"), 3, 3, "' '",
           epath="parents['eth 0']")


def test_dotted_parent_name_is_fine(tmp_path: Path) -> None:
    s = load(write(tmp_path, "version: 1\nparents:\n  eth0.100:\n    mode: l2\n    devices: {v0: {}}\n"))
    assert s.parents[0].name == "eth0.100"


@pytest.mark.parametrize(("netns", "fragment"), [
    ("'a/b'", "'/'"),
    ("'..'", "not a valid namespace name"),
    ("'.'", "not a valid namespace name"),
    ("'a b'", "' '"),
    ("''", "must not be empty"),
    ("x" * 256, "256 bytes long; at most 255"),
])
def test_bad_netns(tmp_path: Path, netns: str, fragment: str) -> None:
    expect(write(tmp_path, one_device(f"      web0:\n        netns: {netns}\n")), 7, 16, fragment,
           epath="parents.eth0.devices.web0.netns")


def test_long_netns_is_fine(tmp_path: Path) -> None:
    s = load(write(tmp_path, one_device(f"      web0:\n        netns: {'x' * 255}\n")))
    assert s.devices[0].netns == "x" * 255 and s.namespaces == {"x" * 255}


# ---------------------------------------------------------------- addresses


def test_addresses_are_interfaces(tmp_path: Path) -> None:
    s = load(write(tmp_path, one_device("      web0:\n        addresses: [192.0.2.10/24, '2001:db8::a/64', "
                                        "2001:db8::b/128]\n")))
    assert s.devices[0].addresses == (ipaddress.IPv4Interface("192.0.2.10/24"),
                                      ipaddress.IPv6Interface("2001:db8::a/64"),
                                      ipaddress.IPv6Interface("2001:db8::b/128"))


@pytest.mark.parametrize(("addrs", "col", "fragment"), [
    ("[192.0.2.10]", 21, "'192.0.2.10' needs a prefix length, e.g. 192.0.2.10/32"),
    ("['2001:db8::1']", 21, "needs a prefix length, e.g. 2001:db8::1/128"),
    ("['fe80::1/64']", 21, "IPv6 link-local"),
    ("[192.0.2.10/33]", 21, "too long"),
    ("[192.0.2.300/24]", 21, "is not an interface address"),
    ("[192.0.2.1/255.255.255.0]", 21, "is not an interface address"),
    ("['fe80::1%eth0/64']", 21, "is not an interface address"),
    ("[224.0.0.1/24]", 21, "multicast"),
    ("[0.0.0.0/8]", 21, "unspecified"),
    ("[12]", 21, "must be a string"),
])
def test_bad_addresses(tmp_path: Path, addrs: str, col: int, fragment: str) -> None:
    expect(write(tmp_path, one_device(f"      web0:\n        addresses: {addrs}\n")), 7, col, fragment,
           epath="parents.eth0.devices.web0.addresses[0]")


def test_duplicate_address_within_a_device(tmp_path: Path) -> None:
    p = write(tmp_path, one_device("      web0:\n        addresses: [192.0.2.1/24, 192.0.2.1/32]\n"))
    expect(p, 7, 35, "address 192.0.2.1 is also on this device at", epath="parents.eth0.devices.web0.addresses[1]")


def test_same_address_on_two_ipvlans_of_one_parent(tmp_path: Path) -> None:
    p = write(tmp_path, one_device("      a:\n        netns: x\n        addresses: [192.0.2.1/24]\n"
                                   "      b:\n        netns: y\n        addresses: ['192.0.2.1/32']\n"))
    e = expect(p, 11, 21, "address 192.0.2.1 is also on device a at")
    assert f"{p}:8:21" in e.message


def test_same_address_on_two_parents_is_fine(tmp_path: Path) -> None:
    s = load(write(tmp_path, "version: 1\nparents:\n"
                             "  eth0: {mode: l2, devices: {a: {netns: x, addresses: [192.0.2.1/24]}}}\n"
                             "  eth1: {mode: l2, devices: {b: {netns: y, addresses: [192.0.2.1/24]}}}\n"))
    assert len(s.devices) == 2


def test_small_mtu_with_ipv6(tmp_path: Path) -> None:
    p = write(tmp_path, one_device("      a:\n        mtu: 1000\n        addresses: ['2001:db8::1/64']\n"))
    expect(p, 7, 14, "below 1280")
    s = load(write(tmp_path, one_device("      a:\n        mtu: 1000\n        addresses: [192.0.2.1/24]\n")))
    assert s.devices[0].mtu == 1000


# ---------------------------------------------------------------- routes


def routes_of(tmp_path: Path, *routes: str) -> tuple[Route, ...]:
    body = "".join(f"      - {r}\n" for r in routes)
    return load(write(tmp_path, f"version: 1\nparents:\n  eth0:\n    routes:\n{body}")).parents[0].routes


def net(s: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(s)


def ip(s: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(s)


def test_route_forms(tmp_path: Path) -> None:
    assert routes_of(tmp_path, "{to: 198.51.100.7}", "{to: '2001:db8::7'}", "{to: default}",
                     "{to: default, via: 'fe80::1'}", "{to: '::/0', via: '2001:db8::1', metric: 5}",
                     "{to: 0.0.0.0/0, via: 192.0.2.1, table: 100}", "{to: 10.0.0.0/8, table: 254}") == (
        Route(net("198.51.100.7/32")),
        Route(net("2001:db8::7/128")),
        Route(net("0.0.0.0/0")),
        Route(net("::/0"), ip("fe80::1")),
        Route(net("::/0"), ip("2001:db8::1"), metric=5),
        Route(net("0.0.0.0/0"), ip("192.0.2.1"), table=100),
        Route(net("10.0.0.0/8")),
    )


def test_identical_routes_collapse(tmp_path: Path) -> None:
    assert routes_of(tmp_path, "{to: 10.0.0.0/8}", "{to: 10.0.0.0/8}") == (Route(net("10.0.0.0/8")),)


@pytest.mark.parametrize(("route", "col", "fragment", "epath"), [
    ("{to: 198.51.100.7/24}", 14,
     "198.51.100.7/24 has host bits set; did you mean 198.51.100.0/24?", "parents.eth0.routes[0].to"),
    ("{to: 'default6'}", 14, "is not a prefix like", "parents.eth0.routes[0].to"),
    ("{to: 10.0.0.0/8, via: '2001:db8::1'}", 31, "gateway 2001:db8::1 is IPv6 but destination 10.0.0.0/8 is IPv4",
     "parents.eth0.routes[0].via"),
    ("{to: 10.0.0.0/8, via: 10.0.0.0/8}", 31, "is not a gateway address", "parents.eth0.routes[0].via"),
    ("{to: 10.0.0.0/8, metric: -1}", 34, "must be between 0 and 4294967295, not -1",
     "parents.eth0.routes[0].metric"),
    ("{to: 10.0.0.0/8, metric: 4294967296}", 34, "must be between 0 and 4294967295",
     "parents.eth0.routes[0].metric"),
    ("{to: 10.0.0.0/8, table: 0}", 33, "must be between 1 and 4294967295, not 0",
     "parents.eth0.routes[0].table"),
    ("{to: 10.0.0.0/8, table: 255}", 33, "local table", "parents.eth0.routes[0].table"),
    ("{to: 10.0.0.0/8, gw: 10.0.0.1}", 26, "unknown key 'gw'", "parents.eth0.routes[0].gw"),
])
def test_bad_routes(tmp_path: Path, route: str, col: int, fragment: str, epath: str) -> None:
    p = write(tmp_path, f"version: 1\nparents:\n  eth0:\n    routes:\n      - {route}\n")
    expect(p, 5, col, fragment, epath=epath)


def test_conflicting_routes_name_both_places(tmp_path: Path) -> None:
    p = write(tmp_path, "version: 1\nparents:\n  eth0:\n    routes:\n      - {to: 10.0.0.0/8, via: 192.0.2.1}\n",
              other__yaml="version: 1\nparents:\n  eth0:\n    routes:\n      - {to: 10.0.0.0/8, via: 192.0.2.2}\n")
    other = tmp_path / "config.d" / "other.yaml"
    e = expect(p, 5, 9, "conflicts with route 10.0.0.0/8 via 192.0.2.1", file=other)
    assert f"{p}:5:9" in e.message


def test_routes_united_across_files(tmp_path: Path) -> None:
    p = write(tmp_path, "version: 1\nparents:\n  eth0:\n    routes: [{to: 10.0.0.0/8}]\n",
              a__yaml="version: 1\nparents:\n  eth0:\n    routes: [{to: 10.0.0.0/8}, {to: 10.1.0.0/16}]\n")
    assert load(p).parents[0].routes == (Route(net("10.0.0.0/8")), Route(net("10.1.0.0/16")))


def test_device_routes(tmp_path: Path) -> None:
    s = load(write(tmp_path, one_device("      a:\n        routes: [{to: default}, {to: 192.0.2.0/24, metric: 7}]\n")))
    assert s.devices[0].routes == (Route(net("0.0.0.0/0")), Route(net("192.0.2.0/24"), metric=7))


# ---------------------------------------------------------------- neighbors and MACs


def neigh_file(tmp_path: Path, lladdr: str) -> Path:
    return write(tmp_path, "version: 1\nparents:\n  eth0:\n    neighbors:\n      - address: 192.0.2.1\n"
                           f"        lladdr: {lladdr}\n")


@pytest.mark.parametrize(("text", "mac"), [
    ("12:34:56:00:00:11", "12:34:56:00:00:11"),  # YAML 1.1 base 60 int with a stock loader
    ("10:20:30:40:50:59", "10:20:30:40:50:59"),
    ("e8:6a:6e:8a:a2:44", "e8:6a:6e:8a:a2:44"),
    ("'E8-6A-6E-8A-A2-44'", "e8:6a:6e:8a:a2:44"),
    ("02-00-00-00-00-01", "02:00:00:00:00:01"),
])
def test_mac_addresses_load_exactly(tmp_path: Path, text: str, mac: str) -> None:
    assert yaml.safe_load("x: 12:34:56:00:00:11")["x"] != "12:34:56:00:00:11"  # the trap we avoid
    assert load(neigh_file(tmp_path, text)).parents[0].neighbors[0].lladdr == mac


@pytest.mark.parametrize(("text", "fragment"), [
    ("01:00:5e:00:00:01", "multicast"),
    ("ff:ff:ff:ff:ff:ff", "broadcast"),
    ("00:00:00:00:00:00", "all-zero"),
    ("'12:34:56:00:00'", "is not a MAC address"),
    ("'12:34-56:00:00:11'", "is not a MAC address"),
    ("'1:2:3:4:5:6'", "is not a MAC address"),
    ("!!int 12:34:56:00:00:11", "is not a valid int"),
    ("123456", "must be a string"),
])
def test_bad_mac_addresses(tmp_path: Path, text: str, fragment: str) -> None:
    expect(neigh_file(tmp_path, text), 6, 17, fragment, epath="parents.eth0.neighbors[0].lladdr")


def test_bad_neighbor_address(tmp_path: Path) -> None:
    p = write(tmp_path, "version: 1\nparents:\n  eth0:\n    neighbors:\n      - address: 192.0.2.1/32\n"
                        "        lladdr: '02:00:00:00:00:01'\n")
    expect(p, 5, 18, "is not an IP address", epath="parents.eth0.neighbors[0].address")


def test_neighbors_collapse_and_conflict(tmp_path: Path) -> None:
    n = "      - {address: 192.0.2.1, lladdr: '02:00:00:00:00:01'}\n"
    s = load(write(tmp_path, one_device(f"      a:\n        neighbors:\n  {n}  {n}")))
    assert s.devices[0].neighbors == (Neighbor(ip("192.0.2.1"), "02:00:00:00:00:01"),)
    m = n.replace(":01'", ":02'")
    p = write(tmp_path, one_device(f"      a:\n        neighbors:\n  {n}  {m}"))
    e = expect(p, 9, 11, "neighbor 192.0.2.1 lladdr 02:00:00:00:00:02 conflicts with lladdr 02:00:00:00:00:01")
    assert f"{p}:8:11" in e.message


# ---------------------------------------------------------------- clashes in one namespace


def test_same_device_name_on_two_parents_same_netns(tmp_path: Path) -> None:
    p = write(tmp_path, "version: 1\nparents:\n  eth0: {mode: l2, devices: {web0: {netns: a}}}\n"
                        "  eth1: {mode: l2, devices: {web0: {netns: a}}}\n")
    e = expect(p, 4, 30, "device web0 is also defined on parent eth0 at")
    assert "netns a" in e.message


def test_same_device_name_in_root_namespace(tmp_path: Path) -> None:
    p = write(tmp_path, "version: 1\nparents:\n  eth0: {mode: l2, devices: {web0: {}}}\n"
                        "  eth1: {mode: l2, devices: {web0: {}}}\n")
    expect(p, 4, 30, "device web0 is also defined on parent eth0")


def test_same_device_name_in_different_namespaces_is_fine(tmp_path: Path) -> None:
    s = load(write(tmp_path, "version: 1\nparents:\n  eth0: {mode: l2, devices: {web0: {netns: a}}}\n"
                             "  eth1: {mode: l2, devices: {web0: {netns: b}, web1: {}}}\n"))
    assert [(d.parent, d.netns, d.name) for d in s.devices] == [("eth0", "a", "web0"), ("eth1", "b", "web0"),
                                                                ("eth1", None, "web1")]


def test_device_named_like_another_parent(tmp_path: Path) -> None:
    p = write(tmp_path, "version: 1\nparents:\n  eth0: {}\n  eth1:\n    mode: l2\n    devices:\n      eth0: {}\n")
    expect(p, 7, 7, "device eth0 has the same name as parent eth0")


def test_device_named_like_its_parent(tmp_path: Path) -> None:
    expect(write(tmp_path, one_device("      eth0: {}\n")), 6, 7, "same name as parent eth0")
    s = load(write(tmp_path, one_device("      eth0: {netns: x}\n")))
    assert s.devices[0].name == "eth0" and s.devices[0].netns == "x"


# ---------------------------------------------------------------- drop-ins


def test_mode_in_main_devices_in_dropin(tmp_path: Path) -> None:
    p = write(tmp_path, "version: 1\nparents:\n  eth0:\n    mode: l2\n    flags: vepa\n",
              web__yaml="version: 1\nparents:\n  eth0:\n    devices:\n      web0: {netns: web}\n")
    s = load(p)
    assert s.sources == (str(p), str(tmp_path / "config.d" / "web.yaml"))
    (eth0,) = s.parents
    assert (eth0.mode, eth0.flags, [d.name for d in eth0.devices]) == (Mode.L2, Flag.VEPA, ["web0"])


def test_mode_missing_everywhere(tmp_path: Path) -> None:
    p = write(tmp_path, "version: 1\nparents:\n  eth0: {}\n",
              web__yaml="version: 1\nparents:\n  eth0:\n    devices:\n      web0: {}\n")
    expect(p, 3, 3, "parent eth0 has devices (e.g. web0 at")


def test_device_defined_twice_across_files_with_one_field_two_values(tmp_path: Path) -> None:
    # Since issue 14 a device may be spread over files field by field (tests/unit/test_fleet.py);
    # one field with two different values still names both places.
    p = write(tmp_path, "version: 1\nparents:\n  eth0:\n    mode: l2\n    devices:\n      web0: {mtu: 1500}\n",
              other__yaml="version: 1\nparents:\n  eth0:\n    devices:\n      web0: {mtu: 1400}\n")
    e = expect(p, 5, 19, "device web0 mtu 1400 conflicts with 1500 at", file=tmp_path / "config.d" / "other.yaml",
               epath="parents.eth0.devices.web0.mtu")
    assert f"{p}:6:19" in e.message


def test_conflicting_mode_names_both_files(tmp_path: Path) -> None:
    p = write(tmp_path, "version: 1\nparents:\n  eth0:\n    mode: l2\n",
              b__yaml="version: 1\nparents:\n  eth0:\n    mode: l2\n",
              c__yaml="version: 1\nparents:\n  eth0:\n    mode: l3\n")
    e = expect(p, 4, 11, "mode l3 conflicts with mode l2 at", file=tmp_path / "config.d" / "c.yaml",
               epath="parents.eth0.mode")
    assert f"{p}:4:11" in e.message
    assert len(errors_of(p)) == 1  # b.yaml agrees


def test_conflicting_flags(tmp_path: Path) -> None:
    p = write(tmp_path, "version: 1\nparents:\n  eth0:\n    flags: private\n",
              b__yaml="version: 1\nparents:\n  eth0:\n    flags: bridge\n")
    expect(p, 4, 12, "flags bridge conflicts with flags private", file=tmp_path / "config.d" / "b.yaml")


def test_dropin_needs_version(tmp_path: Path) -> None:
    p = write(tmp_path, "version: 1\nparents: {}\n", a__yaml="parents: {}\n")
    expect(p, 1, 1, "missing required key 'version'", file=tmp_path / "config.d" / "a.yaml")


def test_dropin_without_parents_is_fine(tmp_path: Path) -> None:
    p = write(tmp_path, "version: 1\nparents: {}\n", a__yaml="version: 1\nprobes: [{target: 192.0.2.1}]\n")
    assert load(p).probes[0].target == ip("192.0.2.1")


def test_dropin_errors_are_positioned_in_the_dropin(tmp_path: Path) -> None:
    p = write(tmp_path, "version: 1\nparents: {}\n", a__yml="version: 1\nparents:\n  eth0:\n    mode: l9\n")
    expect(p, 4, 11, "must be one of", file=tmp_path / "config.d" / "a.yml")


def test_lexical_order_and_ignored_leftovers(tmp_path: Path) -> None:
    good = "version: 1\nparents:\n  eth{n}: {{}}\n"
    junk = "this: is: not: yaml: ["
    p = write(tmp_path, "version: 1\nparents: {}\n", **{
        "b__yaml": good.format(n=2), "a__yml": good.format(n=1), "10-x__yaml": good.format(n=0),
        "__hidden__yaml": junk, "c__yaml~": junk, "c__yaml__bak": junk, "c__yaml__dpkg-old": junk,
        "c__yaml__dpkg-dist": junk, "__c__yaml__swp": junk, "c__yaml__rpmnew": junk, "c__yaml__rpmsave": junk,
        "README": junk, "c__txt": junk, "c__dpkg-new__yaml": junk, "c__rpmorig__yaml": junk,
        "c__bak": junk, "#c__yaml#": junk,
    })
    d = tmp_path / "config.d"
    assert dropin_paths(p) == [d / "10-x.yaml", d / "a.yml", d / "b.yaml"]
    s = load(p)
    assert s.sources == (str(p), str(d / "10-x.yaml"), str(d / "a.yml"), str(d / "b.yaml"))
    assert [x.name for x in s.parents] == ["eth0", "eth1", "eth2"]


def test_missing_config_d_is_fine(tmp_path: Path) -> None:
    p = write(tmp_path, "version: 1\nparents: {}\n")
    assert dropin_paths(p) == [] and load(p).sources == (str(p),)


def test_config_d_that_is_a_file(tmp_path: Path) -> None:
    p = write(tmp_path, "version: 1\nparents: {}\n")
    (tmp_path / "config.d").write_text("x")
    (e,) = errors_of(p)
    assert e.file == str(tmp_path / "config.d") and "cannot read directory" in e.message


def test_dropin_that_is_a_directory_or_dangling_link(tmp_path: Path) -> None:
    p = write(tmp_path, "version: 1\nparents: {}\n", a__yaml="version: 1\n")
    (tmp_path / "config.d" / "b.yaml").mkdir()
    (tmp_path / "config.d" / "c.yaml").symlink_to(tmp_path / "nowhere")
    errs = errors_of(p)
    assert [(Path(e.file).name, e.line) for e in errs] == [("b.yaml", 0), ("c.yaml", 0)]


def test_errors_sorted_across_files(tmp_path: Path) -> None:
    p = write(tmp_path, "version: 1\nparents:\n  eth0: {mode: x}\n  eth1: {mode: y}\n",
              a__yaml="version: 1\nparents:\n  eth0: {flags: z}\n")
    errs = errors_of(p)
    assert [(Path(e.file).name, e.line) for e in errs] == [("a.yaml", 3), ("config.yaml", 3), ("config.yaml", 4)]


def test_main_missing_still_reports_dropins(tmp_path: Path) -> None:
    p = write(tmp_path, None, a__yaml="version: 2\n")
    errs = errors_of(p)
    assert {Path(e.file).name for e in errs} == {"config.yaml", "a.yaml"}


# ---------------------------------------------------------------- probes


def test_probe_defaults(tmp_path: Path) -> None:
    s = load(write(tmp_path, "version: 1\nparents: {}\nprobes:\n  - target: '2001:db8::1'\n"
                             "  - {target: 192.0.2.1, netns: web, tries: 20, timeout: 0.5}\n"))
    assert [(p.target, p.netns, p.tries, p.timeout) for p in s.probes] == [
        (ip("2001:db8::1"), None, 3, 1.0), (ip("192.0.2.1"), "web", 20, 0.5)]
    assert all(isinstance(p.timeout, float) for p in s.probes)


@pytest.mark.parametrize(("probe", "col", "fragment"), [
    ("{target: 192.0.2.0/24}", 14, "is not an IP address"),
    ("{target: example.org}", 14, "is not an IP address"),
    ("{target: 192.0.2.1, tries: 0}", 32, "must be between 1 and 20, not 0"),
    ("{target: 192.0.2.1, tries: 21}", 32, "must be between 1 and 20"),
    ("{target: 192.0.2.1, timeout: 0}", 34, "must be greater than 0 and at most 30, not 0"),
    ("{target: 192.0.2.1, timeout: 30.5}", 34, "must be greater than 0 and at most 30"),
    ("{target: 192.0.2.1, timeout: .nan}", 34, "must be greater than 0 and at most 30, not nan"),
    ("{target: 192.0.2.1, timeout: .inf}", 34, "must be greater than 0 and at most 30"),
    ("{target: 192.0.2.1, timeout: '1'}", 34, "must be a number"),
    ("{target: 192.0.2.1, netns: 'a/b'}", 32, "'/'"),
    ("{netns: a}", 5, "missing required key 'target'"),
])
def test_bad_probes(tmp_path: Path, probe: str, col: int, fragment: str) -> None:
    expect(write(tmp_path, f"version: 1\nparents: {{}}\nprobes:\n  - {probe}\n"), 4, col, fragment)


# ---------------------------------------------------------------- robustness


def test_unexpected_exception_becomes_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = write(tmp_path, "version: 1\nparents: {}\n")

    def boom(*args: object, **kwargs: object) -> None:
        raise ValueError("boom")

    monkeypatch.setattr(spec_mod, "_merge", boom)
    (e,) = errors_of(p)
    assert (e.file, e.line, e.col) == (str(p), 0, 0) and "internal error" in e.message and "boom" in e.message


def test_recursion_error_becomes_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = write(tmp_path, "version: 1\nparents: {}\n")

    def deep(*args: object, **kwargs: object) -> None:
        raise RecursionError

    monkeypatch.setattr(spec_mod, "_merge", deep)
    (e,) = errors_of(p)
    assert "nested too deeply" in e.message


def test_routes_that_are_the_same_kernel_route_collapse(tmp_path: Path) -> None:
    # metric unset is the kernel's 0 for IPv4: the same key, the same gateway -> one route
    assert routes_of(tmp_path, "{to: 10.0.0.0/8, via: 192.0.2.1}", "{to: 10.0.0.0/8, via: 192.0.2.1, metric: 0}",
                     "{to: 10.0.0.0/8, via: 192.0.2.1, metric: 5}") == (
        Route(net("10.0.0.0/8"), ip("192.0.2.1")), Route(net("10.0.0.0/8"), ip("192.0.2.1"), metric=5))


@pytest.mark.parametrize("parser", ["libyaml", "python"])
def test_mac_base60_with_both_parsers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, parser: str) -> None:
    if parser == "python":
        monkeypatch.setattr(spec_mod, "_LoaderClass", spec_mod._Loader)
    s = load(neigh_file(tmp_path, "12:34:56:00:00:11"))
    assert s.parents[0].neighbors[0].lladdr == "12:34:56:00:00:11"


def test_dropin_paths_accepts_str(tmp_path: Path) -> None:
    p = write(tmp_path, "version: 1\nparents: {}\n", a__yaml="version: 1\n")
    assert dropin_paths(str(p)) == [tmp_path / "config.d" / "a.yaml"]
