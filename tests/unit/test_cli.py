"""The CLI a person meets: help, option checks, stdin, closed pipes, privileges, exit codes, no traceback.

Commands that read the kernel run as real processes in a fresh network namespace (`unshare --net`),
so they never see or change this host's network. The tests that need root (unshare, setpriv) say so.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from ipvland import cli, spec, status
from ipvland.kernel import KernelError

ROOT = Path(__file__).resolve().parents[2]
ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                               reason="needs root and unshare(1)")
EMPTY = "version: 1\nparents: {}\n"
ONE_DEVICE = textwrap.dedent("""\
    version: 1
    parents:
      lab0:
        mode: l3s
        devices:
          web0: {addresses: [192.0.2.10/24]}
    """)


def ipvland(*args: str, stdin: str | None = None, netns: bool = True, user: str | None = None,
            stdout: int | None = None, prefix: tuple[str, ...] = (), timeout: float = 60
            ) -> subprocess.CompletedProcess[str]:
    """`python -m ipvland ARGS` as a real process: in a fresh network namespace, optionally as `user`."""
    cmd: list[str] = [*prefix]
    if netns:
        cmd += ["unshare", "--net"]
    if user is not None:
        cmd += ["setpriv", f"--reuid={user}", f"--regid={user if user != 'nobody' else 'nogroup'}",
                "--clear-groups", "--inh-caps=-all"]
    cmd += [sys.executable, "-m", "ipvland", *args]
    return subprocess.run(cmd, input=stdin, text=True, timeout=timeout, cwd=ROOT,
                          stdout=stdout if stdout is not None else subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.fixture
def config(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "config.yaml"
    path.write_text(EMPTY)
    yield path


# ---------------------------------------------------------------- help


def subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def test_the_top_level_help_lists_every_command() -> None:
    text = cli.build_parser().format_help()
    assert set(subparsers()) == set(cli.COMMANDS)
    for name, (short, _, _) in cli.COMMAND_HELP.items():
        assert re.search(rf"\n +{name}\s+{re.escape(short)}\n", text), name  # each with its one-line summary


def test_every_subcommand_says_what_it_does_and_every_option_has_help_and_its_default() -> None:
    for name, parser in subparsers().items():
        text = parser.format_help()
        assert parser.description and " ".join(parser.description.split()) in " ".join(text.split()), name
        assert "exit codes:" in text, name
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"{name} {action.option_strings}: no help"
            if action.default not in (None, False):
                shown = f"{action.default:g}" if isinstance(action.default, float) else str(action.default)
                assert f"(default: {shown})" in action.help, \
                    f"{name} {action.option_strings}: default {action.default!r} not shown"
    for name in ("run", "status"):
        assert "(default: /run/ipvland)" in " ".join(subparsers()[name].format_help().split())


def test_help_exits_0_for_every_command() -> None:
    for name in cli.COMMANDS:
        r = ipvland(name, "--help", netns=False)
        assert r.returncode == 0 and "exit codes:" in r.stdout and r.stderr == "", name


# ---------------------------------------------------------------- options


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "-1", "0", "0.5", "1e9", "86401", "abc", ""])
def test_a_bad_interval_is_a_usage_error(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["run", "--interval", value])
    assert info.value.code == cli.EXIT_USAGE == 2
    assert "--interval" in capsys.readouterr().err


def test_every_numeric_option_is_checked() -> None:
    """Each option whose type is a number goes through cli.number (finite, within a range)."""
    numeric = [(name, a.option_strings) for name, p in subparsers().items() for a in p._actions
               if a.type is float or a.type is int]
    assert numeric == []  # plain float/int would accept nan, inf and anything
    assert subparsers()["run"]._option_string_actions["--interval"].type.__name__ == "number"


def test_good_intervals_parse() -> None:
    parser = cli.build_parser()
    assert parser.parse_args(["run", "--interval", "1"]).interval == 1.0
    assert parser.parse_args(["run", "--interval", "86400"]).interval == 86400.0
    assert parser.parse_args(["run"]).interval == 300.0


def test_a_nan_interval_exits_2_at_once_as_a_process() -> None:
    r = ipvland("run", "--interval", "nan", netns=False, timeout=20)
    assert r.returncode == 2 and "must be a number from 1 to 86400, not 'nan'" in r.stderr


# ---------------------------------------------------------------- validate, stdin, file errors


def test_validate_reads_stdin() -> None:
    r = ipvland("validate", "-c", "-", stdin=ONE_DEVICE, netns=False)
    assert (r.returncode, r.stdout) == (0, "<stdin>: valid: 1 parent(s), 1 device(s), 1 file(s)\n"), r.stderr
    r = ipvland("validate", "-c", "-", stdin="version: 1\nparents: {eth0: {mode: l4}}\n", netns=False)
    assert r.returncode == 1
    assert r.stderr.splitlines() == ["<stdin>:2:24: parents.eth0.mode: must be one of l2, l3, l3s, not 'l4'",
                                     "<stdin>: 1 error(s)"]


def test_run_refuses_stdin() -> None:
    assert cli.main(["run", "-c", "-"]) == cli.EXIT_USAGE


def test_file_level_errors_have_no_fake_position(tmp_path: Path) -> None:
    r = ipvland("validate", "-c", str(tmp_path / "missing.yaml"), netns=False)
    assert r.returncode == 1
    assert r.stderr.splitlines()[0] == f"{tmp_path / 'missing.yaml'}: cannot read: No such file or directory"
    assert ":0:0" not in r.stderr


def test_validate_counts_every_error_but_prints_at_most_50_per_file(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(EMPTY + "".join(f"junk{i}: 1\n" for i in range(500)))
    r = ipvland("validate", "-c", str(path), netns=False)
    lines = r.stderr.splitlines()
    assert r.returncode == 1 and len(lines) == 52
    assert lines[-2] == f"{path}: … and 450 more error(s) (only the first 50 are shown)"
    assert lines[-1] == f"{path}: 500 error(s)"


def test_the_schema_command_prints_the_packaged_schema() -> None:
    r = ipvland("schema", netns=False)
    assert r.returncode == 0 and json.loads(r.stdout) == spec.SCHEMA
    assert r.stdout == (ROOT / "ipvland" / "schema.json").read_text()


def test_pyproject_uses_the_spdx_license_string() -> None:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert meta["project"]["license"] == "MIT"  # not the deprecated {text = ...} table
    assert "schema.json" in meta["tool"]["setuptools"]["package-data"]["ipvland"]


# ---------------------------------------------------------------- closed pipes


def closed_pipe_run(*args: str, netns: bool = True) -> subprocess.CompletedProcess[str]:
    """Run with stdout a pipe whose reader is already gone: the first write gets EPIPE."""
    read, write = os.pipe()
    os.close(read)
    try:
        return ipvland(*args, netns=netns, stdout=write)
    finally:
        os.close(write)


@ROOT_ONLY
def test_every_command_exits_quietly_on_a_closed_pipe(config: Path, tmp_path: Path) -> None:
    status.write(tmp_path / "state", {"schema": status.SCHEMA, "pid": os.getpid(), "last_reconcile": None})
    commands = [("validate", "-c", str(config)), ("plan", "-c", str(config)), ("apply", "-c", str(config)),
                ("show",), ("probe", "-c", str(config)), ("status", "--state-dir", str(tmp_path / "state")),
                ("schema",)]
    for args in commands:
        r = closed_pipe_run(*args)
        assert (r.returncode, r.stderr) == (cli.EXIT_PIPE, ""), (args, r.stderr)
    r = closed_pipe_run("validate", "--help")  # argparse ignores the error itself
    assert (r.returncode, r.stderr) == (0, "")


# ---------------------------------------------------------------- failures, privileges, the kernel


def test_a_kernel_without_ipvlan_is_named_as_such() -> None:
    e = KernelError("create link ipvtmp-d4b64230 netns web", 95, "Operation not supported: Unknown device type")
    assert str(e) == "this kernel lacks IPVLAN (modprobe ipvlan): Operation not supported: Unknown device type " \
                     "(ENOTSUP)"
    other = KernelError("create link ipvtmp-1", 95, "Operation not supported")
    assert str(other).startswith("create link ipvtmp-1: ")


def lab(tmp_path: Path, body: str) -> Path:
    """A shell script for `unshare --net sh SCRIPT`: a veth lab0 (up), then `body`."""
    script = tmp_path / "lab.sh"
    script.write_text("set -e\nip link add lab0 type veth peer name lab0p\nip link set lab0 up\n" + body)
    return script


@ROOT_ONLY
def test_apply_on_a_kernel_without_ipvlan_says_so_and_prints_each_failure_once(tmp_path: Path) -> None:
    probe = subprocess.run(["unshare", "--net", "sh", "-c", "ip link add l type dummy 2>/dev/null; "
                            "ip link add lab0 type veth peer name p && ip link add i link lab0 type ipvlan"],
                           capture_output=True, text=True)
    if probe.returncode == 0:
        pytest.skip("this kernel has IPVLAN: its absence cannot be seen here (the message is unit-tested above)")
    (tmp_path / "c.yaml").write_text(ONE_DEVICE)
    script = lab(tmp_path, f"exec {sys.executable} -m ipvland apply -c {tmp_path / 'c.yaml'}\n")
    r = subprocess.run(["unshare", "--net", "sh", str(script)], capture_output=True, text=True, cwd=ROOT)
    out = r.stdout + r.stderr
    assert r.returncode == 1
    assert "+ link web0 ipvlan l3s on lab0: FAILED: this kernel lacks IPVLAN (modprobe ipvlan)" in r.stdout, out
    assert "ipvtmp-" not in out
    assert out.count("FAILED") == 1, out  # not again on stderr through the logger
    assert out.count("skipped: link web0 was not created") == 2, out


@ROOT_ONLY
def test_plan_exit_codes_on_a_real_kernel(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(ONE_DEVICE)
    (tmp_path / "empty.yaml").write_text(EMPTY)
    (tmp_path / "missing-parent.yaml").write_text(ONE_DEVICE.replace("lab0", "nope0"))
    codes = {}
    for name in ("c", "empty", "missing-parent"):
        script = lab(tmp_path, f"exec {sys.executable} -m ipvland plan -c {tmp_path / name}.yaml\n")
        r = subprocess.run(["unshare", "--net", "sh", str(script)], capture_output=True, text=True, cwd=ROOT)
        assert "Traceback" not in r.stderr
        codes[name] = r.returncode
    assert codes == {"c": 2, "empty": 0, "missing-parent": 1}


@ROOT_ONLY
def test_an_unprivileged_user_is_told_that_root_is_needed(public_dir: Path) -> None:
    """As nobody, with a named namespace present (reading it needs setns: EPERM)."""
    tmp_path = public_dir
    (tmp_path / "c.yaml").write_text(ONE_DEVICE.replace("{addresses", "{netns: web, addresses"))
    (tmp_path / "c.yaml").chmod(0o644)
    body = "mount -t tmpfs none /run\nip netns add web\n"
    for args in (("show",), ("plan", "-c", str(tmp_path / "c.yaml")), ("apply", "-c", str(tmp_path / "c.yaml")),
                 ("run", "-c", str(tmp_path / "c.yaml"), "--state-dir", str(tmp_path / "state"))):
        body += (f"setpriv --reuid=nobody --regid=nogroup --clear-groups --inh-caps=-all "
                 f"{sys.executable} -m ipvland {' '.join(args)} || echo \"rc=$?\"\n")
    script = lab(tmp_path, body)
    r = subprocess.run(["unshare", "--net", "--mount", "--propagation", "private", "sh", str(script)],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    lines = r.stderr.splitlines()
    assert lines == [
        "ipvland show: needs root (CAP_NET_ADMIN): list links netns web: Operation not permitted (EPERM)",
        "ipvland plan: needs root (CAP_NET_ADMIN): list links netns web: Operation not permitted (EPERM)",
        "ipvland apply: needs root (CAP_NET_ADMIN)",
        "ipvland run: needs root (CAP_NET_ADMIN)",
    ], r.stderr
    assert r.stdout.split() == ["rc=1"] * 4
    assert not (tmp_path / "state").exists()  # refused before touching anything


def test_an_unexpected_error_is_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def boom(args: argparse.Namespace) -> int:
        raise ValueError("boom")

    monkeypatch.setitem(cli.COMMANDS, "schema", boom)
    assert cli.main(["schema"]) == 1
    assert capsys.readouterr().err == "ipvland schema: internal error: ValueError: boom\n"


@ROOT_ONLY
def test_no_command_prints_a_traceback_on_bad_input(tmp_path: Path) -> None:
    """The README's promise, over every command and the bad inputs a person tries first."""
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"version: 1\nparents: {eth0: {mode: l2, devices: {all: {mtu: .nan}}}}\n\xff")
    directory = tmp_path / "dir.yaml"
    directory.mkdir()
    cases = [[c, "-c", str(p)] for c in ("validate", "plan", "apply", "peers", "probe")
             for p in (bad, directory, tmp_path / "missing.yaml")]
    cases += [["status", "--state-dir", str(tmp_path / "none")], ["status", "--state-dir", str(bad)],
              ["show", "--all"], ["run", "--interval", "inf"], ["run", "-c", str(tmp_path / "x"), "--log-level", "x"],
              ["nosuchcommand"], []]
    for args in cases:
        r = ipvland(*args, timeout=60)
        assert "Traceback" not in r.stderr and "internal error" not in r.stderr, (args, r.stderr)
        assert r.returncode in (0, 1, 2), (args, r.returncode)
