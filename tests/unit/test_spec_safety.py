"""What a config error may show of a file (a short excerpt, never a secret), how many errors a file
may produce, interface names the kernel refuses, and a config read from a stream."""

from __future__ import annotations

import io
import re
import textwrap
from pathlib import Path

import pytest

from ipvland import spec as spec_mod
from ipvland.spec import MAX_ERRORS_PER_FILE, ConfigError, SpecError, load, load_stream, loads

# Realistic fakes (the hashes, salts and key are random, not real credentials).
SHADOW = textwrap.dedent("""\
    root:$6$Zx9KpQ2wLm$Gk3JfJ1hU3k9N0eWmPz9c7r8aQwY6sV0bN1mL2kJ3hG4fD5sA6pO7iU8yT9rE0wQ1zX2cV3bN4mL5kJ6hG7f1:19662:0:99999:7:::
    daemon:*:19662:0:99999:7:::
    bin:*:19662:0:99999:7:::
    sshd:!:19662::::::
    alice:$y$j9T$Fh2kP9qL3mN8bV5cX1zW6r$OqR7sT2uV4wX9yZ1aB3cD5eF7gH9iJ0kL2mN4oP6qR8:19700:0:99999:7:::
    """)
PASSWD = textwrap.dedent("""\
    root:x:0:0:root:/root:/bin/bash
    daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
    alice:x:1000:1000:Alice Wonder,,,:/home/alice:/bin/bash
    """)
PRIVATE_KEY = textwrap.dedent("""\
    -----BEGIN OPENSSH PRIVATE KEY-----
    b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
    QyNTUxOQAAACDx3Jq0bH9v8Hk2N7pQeW4cR1uT6yZ0aS5dF8gJ3kL9mQAAAJhK2xPzStsT
    8wAAAAtzc2gtZWQyNTUxOQAAACDx3Jq0bH9v8Hk2N7pQeW4cR1uT6yZ0aS5dF8gJ3kL9mQ
    AAAEB7mN2vX9qR4sT1uW6yZ8aB0cD2eF4gH6iJ8kL0mN2oPfHcmrRsf2/weTY3ulB5bhxH
    -----END OPENSSH PRIVATE KEY-----
    """)
RSA_KEY = textwrap.dedent("""\
    -----BEGIN RSA PRIVATE KEY-----
    Proc-Type: 4,ENCRYPTED
    DEK-Info: AES-128-CBC,5A3C9F1B2D4E6F708192A3B4C5D6E7F8

    MIIEowIBAAKCAQEAv7cX9mN2pQ4rS6tU8vW0xY2zA4bC6dE8fG0hI2jK4lM6nO8p
    Q0rS2tU4vW6xY8zA0bC2dE4fG6hI8jK0lM2nO4pQ6rS8tU0vW2xY4zA6bC8dE0f
    -----END RSA PRIVATE KEY-----
    """)
MAIN = "version: 1\nparents: {}\n"


def secrets_of(text: str) -> set[str]:
    """Every field of 4+ characters: none may appear in any error."""
    return {f for f in re.split(r"[\s:,$]+", text) if len(f) >= 4 and not f.startswith("-----")}


def all_errors(path: Path) -> str:
    """Every error message, with the directory (which may contain 'root') cut out."""
    with pytest.raises(SpecError) as info:
        load(path)
    return str(info.value).replace(str(path.parent), "DIR")


@pytest.mark.parametrize("secret", [SHADOW, PASSWD, PRIVATE_KEY, RSA_KEY],
                         ids=["shadow", "passwd", "openssh-key", "rsa-key"])
def test_a_secret_file_linked_into_config_d_shows_none_of_its_content(tmp_path: Path, secret: str) -> None:
    (tmp_path / "secret").write_text(secret)
    (tmp_path / "config.yaml").write_text(MAIN)
    (tmp_path / "config.d").mkdir()
    (tmp_path / "config.d" / "50-oops.yaml").symlink_to(tmp_path / "secret")
    out = all_errors(tmp_path / "config.yaml")
    assert "DIR/config.d/50-oops.yaml:" in out  # the error names the file
    leaked = [s for s in secrets_of(secret) if s in out]
    assert leaked == [], out


@pytest.mark.parametrize("secret", [SHADOW, PASSWD, PRIVATE_KEY], ids=["shadow", "passwd", "openssh-key"])
def test_a_secret_file_as_the_main_config_shows_none_of_its_content(tmp_path: Path, secret: str) -> None:
    (tmp_path / "secret").write_text(secret)
    (tmp_path / "config.yaml").symlink_to(tmp_path / "secret")
    out = all_errors(tmp_path / "config.yaml")
    assert "its content is not shown" in out or "YAML syntax error" in out, out
    assert [s for s in secrets_of(secret) if s in out] == [], out


def test_a_document_that_is_one_value_or_a_list_is_not_echoed() -> None:
    for text, what in (("just some text: no\n", None), ("hunter2-password\n", "a single value"),
                       ("- hunter2-password\n- other\n", "a list"), ("42\n", "a single value")):
        with pytest.raises(SpecError) as info:
            loads(text, "f.yaml")
        out = str(info.value)
        assert "hunter2" not in out and "42" not in out.replace("f.yaml", ""), out
        if what:
            assert f"not {what} (its content is not shown)" in out


def test_a_mapping_with_none_of_the_top_level_keys_is_not_a_config_and_is_not_echoed() -> None:
    with pytest.raises(SpecError) as info:
        loads("DB_PASSWORD: hunter2\nAPI_TOKEN: abc123secret\n", "env.yaml")
    (e,) = info.value.errors
    assert "not an ipvland config" in e.message and "hunter2" not in str(e) and "API_TOKEN" not in str(e)
    # a near miss of a real key is still a config with a typo, and gets its suggestion
    with pytest.raises(SpecError) as info:
        loads("verison: 1\nparents: {}\n", "typo.yaml")
    assert "unknown key 'verison' (did you mean 'version'?)" in str(info.value)


def test_keys_and_values_are_quoted_as_short_escaped_excerpts() -> None:
    long_value = "A" * 500
    with pytest.raises(SpecError) as info:
        loads(f"version: 1\nparents:\n  eth0:\n    mode: {long_value}\n", "f.yaml")
    out = str(info.value)
    assert "A" * 33 not in out and "'" + "A" * 32 + "…'" in out, out
    with pytest.raises(SpecError) as info:
        loads('version: 1\nparents:\n  eth0:\n    mode: "l2\\x1b[31m\\u202e"\n', "f.yaml")
    out = str(info.value)
    assert "\x1b" not in out and "\u202e" not in out and "\\x1b" in out and "\\u202e" in out, out


def test_an_unknown_key_that_is_no_key_name_is_not_shown_even_in_the_path() -> None:
    with pytest.raises(SpecError) as info:
        loads("version: 1\nparents: {}\nroot:$6$Zx9KpQ2wLm$Gk3JfJ1h:19662:0:99999:7::: x\n", "f.yaml")
    (e,) = info.value.errors
    assert "Zx9KpQ2w" not in str(e) and "$6$" not in str(e) and "root" not in str(e), str(e)
    assert "unknown key of" in e.message and "not shown" in e.message


def test_a_huge_integer_is_quoted_as_an_excerpt() -> None:
    digits = "9" * 6000  # beyond Python's int-to-str limit, too
    with pytest.raises(SpecError) as info:
        loads(f"version: 1\nparents:\n  eth0:\n    devices:\n      a: {{mtu: {digits}}}\n", "f.yaml")
    out = str(info.value)
    assert len(out) < 400 and "9" * 40 not in out, out


def test_errors_per_file_are_bounded_with_a_count_of_the_rest(tmp_path: Path) -> None:
    n = 20_000
    (tmp_path / "config.yaml").write_text(MAIN + "".join(f"bad{i}: 1\n" for i in range(3)))
    (tmp_path / "config.d").mkdir()
    big = tmp_path / "config.d" / "big.yaml"
    big.write_text("version: 1\n" + "".join(f"unknown{i}: x\n" for i in range(n)))
    with pytest.raises(SpecError) as info:
        load(tmp_path / "config.yaml")
    e = info.value
    assert e.total == n + 3
    of_big = [x for x in e.errors if x.file == str(big)]
    assert len(of_big) == MAX_ERRORS_PER_FILE + 1
    assert str(of_big[-1]) == (f"{big}: … and {n - MAX_ERRORS_PER_FILE} more error(s) "
                               f"(only the first {MAX_ERRORS_PER_FILE} are shown)")
    assert [x.line for x in of_big[:3]] == [2, 3, 4]  # the first ones, in file order
    assert len([x for x in e.errors if x.file == str(tmp_path / "config.yaml")]) == 3  # other files unaffected
    assert len(str(e)) < 10_000


def test_exactly_the_limit_has_no_more_line() -> None:
    errs = [ConfigError("f", i + 1, 1, "", "x") for i in range(MAX_ERRORS_PER_FILE)]
    assert SpecError(errs).errors == tuple(errs)
    more = SpecError([*errs, ConfigError("f", 999, 1, "", "y")]).errors
    assert len(more) == MAX_ERRORS_PER_FILE + 1 and str(more[-1]) == "f: … and 1 more error(s) (only the first " \
        f"{MAX_ERRORS_PER_FILE} are shown)"


@pytest.mark.parametrize("name", ["all", "default"])
def test_interface_names_the_kernel_reserves_are_refused_with_the_reason(name: str) -> None:
    for text in (f"version: 1\nparents:\n  eth0:\n    mode: l2\n    devices:\n      {name}: {{netns: web}}\n",
                 f"version: 1\nparents:\n  {name}:\n    mode: l2\n"):
        with pytest.raises(SpecError) as info:
            loads(text, "f.yaml")
        out = str(info.value)
        assert f"'{name}' cannot be an interface name" in out and f"/proc/sys/net/ipv4/conf/{name}" in out, out


def test_a_percent_in_an_interface_name_is_refused() -> None:
    with pytest.raises(SpecError) as info:
        loads("version: 1\nparents:\n  eth0:\n    mode: l2\n    devices:\n      web%d: {}\n", "f.yaml")
    assert "'%'" in str(info.value) and "eth%d" in str(info.value)


def test_names_that_merely_contain_all_or_default_are_fine() -> None:
    s = loads("version: 1\nparents:\n  eth0:\n    mode: l2\n    devices:\n      all0: {}\n      default1: {}\n")
    assert [d.name for d in s.devices] == ["all0", "default1"]


def test_the_schema_refuses_the_reserved_names_too() -> None:
    import jsonschema

    validator = jsonschema.Draft202012Validator(spec_mod.SCHEMA)
    for bad in ("all", "default", "a%d", "a/b"):
        assert not validator.is_valid({"version": 1, "parents": {bad: None}}), bad
    assert validator.is_valid({"version": 1, "parents": {"all0": None}})


def test_load_stream_reads_one_document_with_the_file_limits() -> None:
    s = load_stream(io.BytesIO(b"version: 1\nparents: {eth0: {mode: l2, devices: {a: {}}}}\n"))
    assert [d.name for d in s.devices] == ["a"] and s.sources == ("<stdin>",)
    with pytest.raises(SpecError) as info:
        load_stream(io.BytesIO(b"version: 1\nparents: {}\n\xff\n"))
    assert str(info.value).startswith("<stdin>:3:1: not valid UTF-8")
    with pytest.raises(SpecError) as info:
        load_stream(io.BytesIO(b"#" * (spec_mod.MAX_FILE_SIZE + 10)))
    assert str(info.value) == "<stdin>: file is too large (the limit is 4 MiB)"
