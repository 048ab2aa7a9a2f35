"""ipvland: keep this host's IPVLAN networking equal to a YAML file.

Exit codes: 0 success / nothing to do, 1 error, 2 changes pending (`plan`) or a usage error (a bad
option). No traceback ever reaches a user: unexpected errors print one line and exit 1; a closed
output pipe (`ipvland status | head -1`) ends a command quietly.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import json
import logging
import math
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from ipvland import __version__
from ipvland.model import Plan, Spec

if TYPE_CHECKING:
    from ipvland.reconcile import Rollback

EXIT_OK, EXIT_ERROR, EXIT_PENDING, EXIT_USAGE = 0, 1, 2, 2
EXIT_PIPE = 141  # 128 + SIGPIPE, what a shell shows for a tool killed by a closed pipe
DEFAULT_STATE_DIR = Path("/run/ipvland")
CAP_NET_ADMIN = 12
MAX_INTERVAL = 86400.0  # a resync less than daily is no backstop; larger values are typos
# Events repair drift at once (ENOBUFS, lost events, forces a full read of that namespace): the resync
# is a backstop for what sends no event (a sysctl written by hand). 30 s made it cost ~9 % of a core at
# N=1000 under emulation, all the time (issue 13).
DEFAULT_INTERVAL = 300.0


def _config_arg(p: argparse.ArgumentParser, stdin: bool = True) -> None:
    more = "; - reads it from standard input (no drop-ins)" if stdin else ""
    p.add_argument("-c", "--config", type=Path, default=None, metavar="PATH",
                   help=f"main config file; its drop-ins are config.d/*.yaml beside it (default: $IPVLAND_CONFIG "
                        f"or /etc/ipvland/config.yaml{more})")


def _host_arg(p: argparse.ArgumentParser) -> argparse.Action:
    return p.add_argument("--host", default=None, metavar="NAME",
                          help="this host's identity, which drop-ins' `hosts:` globs select on (default: "
                               "$IPVLAND_HOST or the hostname)")


def _json_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON instead of text (default: text)")


def _state_dir_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR, metavar="DIR",
                   help=f"the daemon's status file and lock (default: {DEFAULT_STATE_DIR})")


def number(low: float, high: float, *, integer: bool = False) -> Callable[[str], float]:
    """An argparse type for a numeric option: finite, low <= value <= high, else a usage error (exit 2).
    With integer=True the value is an int (a pid, a count), never a float."""
    def parse(text: str) -> float:
        try:
            value: float = int(text) if integer else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a{'n integer' if integer else ' number'}") from None
        if not math.isfinite(value) or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be a number from {low:g} to {high:g}, not {text!r}")
        return value
    parse.__name__ = "number"  # argparse names the type in some messages
    return parse


def _listen(text: str) -> tuple[str, int]:
    from ipvland.metrics import parse_listen

    try:
        return parse_listen(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


class _Parser(argparse.ArgumentParser):
    """Every command's --help starts with what it does; the epilog with its exit codes."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]


COMMAND_HELP = {  # name: (one line for the top-level list, what --help says, exit codes)
    "validate": ("check the config and its drop-ins",
                 "Check the config and its drop-ins, and print every error as FILE:LINE:COL: path: message "
                 "(at most 50 per file). Touches nothing, needs no root: with --hosts, every host of an "
                 "inventory (each file is parsed once; a host's own errors start with `HOST: `).",
                 "0 valid, 1 invalid"),
    "render": ("print the effective config of one host",
               "Print the config one host applies (the main file and the drop-ins whose hosts: select it, "
               "merged) as YAML that `validate` accepts, each value with the FILE:LINE it came from. "
               "Touches nothing, needs no root.",
               "0, 1 when the host's config is invalid"),
    "plan": ("show the changes apply would make",
             "Read the kernel and print the changes `apply` would make, one per line, and the conflicts (!). "
             "Changes nothing.",
             "0 nothing to do, 2 changes pending, 1 error, conflict or missing parent"),
    "apply": ("converge the kernel to the config",
              "Make the kernel equal to the config, observe again to verify, run the probes, and print what "
              "changed. Needs root (CAP_NET_ADMIN).",
              "0 converged; 1 anything failed, conflicts, pending, still differs, or a probe failed"),
    "confirm": ("keep the change a pending `apply --confirm-timeout` made",
                "Confirm the pending try of `ipvland apply --confirm-timeout`: the change is kept. Without it, "
                "the state observed before the change is restored at the deadline.",
                "0 confirmed; 1 nothing pending, or too late (the deadline passed)"),
    "show": ("print the live state ipvland owns, as a config",
             "Print the IPVLAN devices, addresses, routes and neighbors ipvland owns as a config that "
             "`validate` accepts.",
             "0, 1 on error"),
    "peers": ("what a remote peer must configure for l3/l3s ipvlans",
              "Print what a remote peer must configure to reach the l3/l3s ipvlans: `ip neigh` lines or a "
              "config for the peer's own ipvland, with the MAC read from the live parent.",
              "0, 1 when a parent is missing"),
    "probe": ("run the config's probes now",
              "Run the config's ICMP probes now and print each result.",
              "0 all passed, 1 otherwise"),
    "run": ("the daemon: keep the kernel converged",
            "The daemon: converge now, then again on every config change, netlink event of ipvland's "
            "objects and periodic resync; write the status file. One daemon per --state-dir. Needs root.",
            "0 after SIGTERM/SIGINT, 1 when it cannot start (another one runs, no privileges)"),
    "status": ("show the daemon's last status",
               "Print the daemon's last status (root and group ipvland may read it).",
               "0 running and converged, 1 otherwise (no status, stale, errors)"),
    "schema": ("print the config's JSON Schema",
               "Print the JSON Schema (draft 2020-12) of a config file, for editors and other tools.",
               "0"),
    "reload": ("make the daemon re-read its config (ExecReload=)",
               "Send SIGHUP to the daemon and wait until its status file shows the reload handled: the unit's "
               "ExecReload= (synchronous, and no /bin/kill needed).",
               "0 reloaded; 1 no such process, timeout, or the new config has errors (the old one stays)"),
    "wait-online": ("wait until the config is converged",
                    "Wait until the daemon's last reconcile converged (devices whose parent does not exist "
                    "yet do not wait, unless --strict): what ipvland-wait-online.service runs before "
                    "network-online.target, so containers and applications find their ipvlans.",
                    "0 converged, 1 timeout (the reason is printed)"),
}


def _sub(sub: argparse._SubParsersAction[_Parser], name: str) -> _Parser:
    short, long, codes = COMMAND_HELP[name]
    return sub.add_parser(name, help=short, description=long, epilog=f"exit codes: {codes}")


def build_parser() -> _Parser:
    parser = _Parser(prog="ipvland", description=__doc__.splitlines()[0],
                     epilog="`ipvland COMMAND --help` says more about each command.\n"
                            "exit codes: 0 success, 1 error, 2 a usage error (or, for plan, changes pending)")
    parser.add_argument("--version", action="version", version=f"ipvland {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    p = _sub(sub, "validate")
    _config_arg(p)
    who = p.add_mutually_exclusive_group()
    who.add_argument("--host", default=None, metavar="NAME",
                     help="validate the config of this host (default: $IPVLAND_HOST or the hostname)")
    who.add_argument("--hosts", type=Path, default=None, metavar="FILE",
                     help="validate the config of every host named in FILE (one per line; blank lines and "
                          "# comments ignored) (default: only this host)")

    p = _sub(sub, "render")
    _config_arg(p, stdin=False)
    _host_arg(p)
    p.add_argument("--json", action="store_true",
                   help="print JSON: the config and a provenance map (path -> FILE:LINE:COL) (default: YAML "
                        "with # FILE:LINE comments)")

    p = _sub(sub, "plan")
    _config_arg(p)
    _host_arg(p)
    _json_arg(p)

    p = _sub(sub, "apply")
    _config_arg(p)
    _host_arg(p)
    _json_arg(p)
    p.add_argument("--rollback-on-probe-failure", action="store_true",
                   help="restore the previous state when a change makes a passing probe fail (default: off)")
    p.add_argument("--confirm-timeout", type=number(1, 86400), default=None, metavar="S",
                   help="after applying, wait S seconds for `ipvland confirm` (or Enter on a terminal); "
                        "without it, restore the state observed before the change (default: keep at once)")
    _state_dir_arg(p)

    p = _sub(sub, "confirm")
    _state_dir_arg(p)

    p = _sub(sub, "probe")
    _config_arg(p)
    _host_arg(p)
    _json_arg(p)

    p = _sub(sub, "show")
    _json_arg(p)
    p.add_argument("--all", action="store_true",
                   help="also the ipvlans ipvland does not own (default: only its own)")

    p = _sub(sub, "run")
    _config_arg(p, stdin=False)
    _host_arg(p)
    p.add_argument("--interval", type=number(1, MAX_INTERVAL), default=DEFAULT_INTERVAL, metavar="S",
                   help=f"seconds between full resyncs, 1 to {MAX_INTERVAL:g} (default: {DEFAULT_INTERVAL:g}); "
                        "netlink events repair drift at once, the resync catches what sends none")
    _state_dir_arg(p)
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                   help="least severe messages logged (default: info)")
    p.add_argument("--rollback-on-probe-failure", action="store_true",
                   help="restore the previous state when a change makes a passing probe fail; the "
                        "rolled-back config is not retried until it changes (default: off)")
    p.add_argument("--metrics-file", type=Path, default=None, metavar="PATH",
                   help="write Prometheus metrics to PATH after every reconcile, atomically, for "
                        "node_exporter's textfile collector (default: none)")
    p.add_argument("--metrics-listen", type=_listen, default=None, metavar="ADDR:PORT",
                   help="serve Prometheus metrics over HTTP at ADDR:PORT, e.g. 127.0.0.1:9821 (default: off)")

    p = _sub(sub, "peers")
    _config_arg(p)
    _host_arg(p)
    p.add_argument("--format", choices=["ip", "yaml", "route", "frr", "bird"], default="ip",
                   help="ip: `ip neigh replace` lines; yaml: a config for the peer's own ipvland; route, frr, "
                        "bird: an upstream router's host routes to each address via this host (default: ip)")
    p.add_argument("--via", action="append", metavar="ADDR",
                   help="with route/frr/bird: this host's address to route through, one per IP version "
                        "(default: its first address of that family on the parent)")
    p.add_argument("--peer-dev", default="eth0", metavar="DEV",
                   help="the peer's NIC on the shared wire (default: eth0)")

    p = _sub(sub, "status")
    _json_arg(p)
    _state_dir_arg(p)

    _sub(sub, "schema")

    # For systemd units: see ipvland/control.py.
    p = _sub(sub, "reload")
    p.add_argument("--pid", type=number(1, 2**22, integer=True), required=True,
                   help="the daemon's pid ($MAINPID in a unit)")
    _state_dir_arg(p)
    p.add_argument("--timeout", type=number(0.1, 86400), default=60.0, metavar="S",
                   help="seconds to wait for the daemon to handle it (default: 60)")
    p = _sub(sub, "wait-online")
    _state_dir_arg(p)
    p.add_argument("--timeout", type=number(0.1, 86400), default=120.0, metavar="S",
                   help="seconds to wait (default: 120)")
    p.add_argument("--strict", action="store_true",
                   help="also wait for devices whose parent does not exist yet (default: those do not wait)")
    return parser


def _config_path(args: argparse.Namespace) -> Path:
    from ipvland import spec

    return args.config or spec.default_config_path()


def _read_config(args: argparse.Namespace) -> Spec:
    """The config named by -c (`-`: standard input); raises spec.SpecError."""
    from ipvland import spec

    if str(args.config) == "-":
        return spec.load_stream(sys.stdin.buffer)
    return spec.load(_config_path(args), host=getattr(args, "host", None))


def _validate(args: argparse.Namespace) -> int:
    if args.hosts is not None:
        return _validate_hosts(args)
    loaded = _load(args, "")
    if loaded is None:
        return EXIT_ERROR
    n_devices = len(loaded.devices)
    for_host = f" for host {args.host}" if args.host is not None else ""
    print(f"{loaded.sources[0] if loaded.sources else _config_path(args)}: valid{for_host}: {len(loaded.parents)} "
          f"parent(s), {n_devices} device(s), {len(loaded.sources)} file(s)")
    return EXIT_OK


INVENTORY_MAX_BYTES = 16 * 1024 * 1024  # 10,000 host names take 0.2 MB
_HOST_NAME = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.-]{0,251}[A-Za-z0-9_])?")


def read_inventory(path: Path) -> tuple[list[str], list[str]]:
    """Host names, one per line (blank lines and # comments ignored), and the errors of the lines
    that are not a host name. Raises OSError/UnicodeError. An error names the line, never its
    content: an inventory given by mistake (a secret file) must not be echoed."""
    from ipvland.spec import MAX_ERRORS_PER_FILE

    with open(path, "rb") as f:
        data = f.read(INVENTORY_MAX_BYTES + 1)
    if len(data) > INVENTORY_MAX_BYTES:
        return [], [f"{path}: larger than {INVENTORY_MAX_BYTES // (1024 * 1024)} MiB: not an inventory of host names"]
    names: list[str] = []
    seen: set[str] = set()
    bad: list[int] = []
    for number, line in enumerate(data.decode("utf-8").splitlines(), 1):
        name = line.split("#", 1)[0].strip()
        if not name:
            continue
        if not _HOST_NAME.fullmatch(name):
            bad.append(number)
        elif name not in seen:
            seen.add(name)
            names.append(name)
    errors = [f"{path}:{n}: not a host name (one per line: letters, digits, '-', '_' and '.', at most 253)"
              for n in bad[:MAX_ERRORS_PER_FILE]]
    if len(bad) > len(errors):
        errors.append(f"{path}: … and {len(bad) - len(errors)} more line(s) that are not a host name")
    return names, errors


def _validate_hosts(args: argparse.Namespace) -> int:
    """Every host of an inventory: the files' own errors once, each host's merge errors prefixed with it."""
    from ipvland import spec

    if str(args.config) == "-":
        print("ipvland validate: --hosts needs the config tree (-c FILE), not standard input", file=sys.stderr)
        return EXIT_USAGE
    try:
        hosts, inventory_errors = read_inventory(args.hosts)
    except UnicodeError:
        print(f"{args.hosts}: not UTF-8 text: not an inventory of host names", file=sys.stderr)
        return EXIT_ERROR
    except OSError as e:
        print(f"{args.hosts}: cannot read: {e.strerror or type(e).__name__}", file=sys.stderr)
        return EXIT_ERROR
    if inventory_errors:
        print("\n".join(inventory_errors), file=sys.stderr)
        return EXIT_ERROR
    tree = spec.load_tree(_config_path(args))
    file_errors = tree.file_errors
    for error in file_errors:
        print(error, file=sys.stderr)
    bad = 0
    for host in hosts:
        _, errors = tree.host_errors(host)
        if errors:
            bad += 1
            for error in spec.SpecError(errors).errors:
                print(f"{host}: {error}", file=sys.stderr)
    for part, matched in zip(tree.parts, tree.matches(hosts), strict=True):
        if not matched:  # a typo in a glob, or a host missing from the inventory: not an error
            print(f"{part.file}: note: its hosts: match none of the {len(hosts)} host(s) of {args.hosts}",
                  file=sys.stderr)
    where = _config_path(args)
    if file_errors or bad:
        print(f"{where}: {len(file_errors)} error(s) in the files, {bad} of {len(hosts)} host(s) with errors of "
              f"their own ({args.hosts})", file=sys.stderr)
        return EXIT_ERROR
    print(f"{where}: valid for all {len(hosts)} host(s) of {args.hosts}, {len(tree.parts)} file(s)")
    return EXIT_OK


def _render(args: argparse.Namespace) -> int:
    from ipvland import spec

    host = args.host if args.host is not None else spec.default_host()
    tree = spec.load_tree(_config_path(args))
    try:
        document, provenance = tree.render(host)
    except spec.SpecError as e:
        for error in e.errors:
            print(error, file=sys.stderr)
        print(f"{_config_path(args)}: {e.total} error(s) for host {host}", file=sys.stderr)
        return EXIT_ERROR
    if args.json:
        where = {spec.render_path(path): f"{loc[0]}:{loc[1]}:{loc[2]}" for path, loc in provenance.items()}
        print(json.dumps({"host": host, "files": tree.files_for(host), "config": document,
                          "provenance": where}, indent=2))
    else:
        print(spec.render_yaml(document, provenance, header=f"ipvland render --host {host}: the effective config, "
                                                            "each value with the FILE:LINE it came from"), end="")
    return EXIT_OK


def _load(args: argparse.Namespace, consequence: str = "; nothing changed") -> Spec | None:
    """The spec, or None after printing the config's errors (nothing is touched then)."""
    from ipvland import spec

    try:
        return _read_config(args)
    except spec.SpecError as e:
        for error in e.errors:
            print(error, file=sys.stderr)
        where = "<stdin>" if str(args.config) == "-" else _config_path(args)
        print(f"{where}: {e.total} error(s){consequence}", file=sys.stderr)
        return None


def _kernel() -> Any:
    """The kernel for plan, apply and show: where it drops ipvland's neighbor mark, with the record of
    owned entries the daemon keeps in the default state directory instead (marks.py)."""
    from ipvland import marks

    return marks.open_kernel(DEFAULT_STATE_DIR)


def _print_plan(p: Plan, out: TextIO = sys.stdout) -> None:
    for change in p.changes:
        print(change.describe(), file=out)
    for problem in (*p.conflicts, *p.pending):
        print(problem.describe(), file=out)


def _plan(args: argparse.Namespace) -> int:
    from ipvland.reconcile import plan_to_json, reconcile

    loaded = _load(args)
    if loaded is None:
        return EXIT_ERROR
    with _kernel() as kernel:
        report = reconcile(loaded, kernel, dry_run=True)
    p = report.plan
    if args.json:
        print(json.dumps(plan_to_json(p), indent=2))
    else:
        _print_plan(p)
        print(f"{len(p.changes)} change(s), {len(p.conflicts)} conflict(s), {len(p.pending)} pending")
    if p.conflicts or p.pending:  # a missing parent is an error for its devices
        return EXIT_ERROR
    return EXIT_PENDING if p.changes else EXIT_OK


def _apply(args: argparse.Namespace) -> int:
    from ipvland import confirm
    from ipvland.reconcile import reconcile, state_document

    loaded = _load(args)
    if loaded is None:
        return EXIT_ERROR
    state_dir: Path = args.state_dir
    mine: list[confirm.Try] = []

    def keep_before(before: Any) -> None:  # written before anything is applied: a kill leaves it
        t = confirm.Try(os.getpid(), time.time(), time.time() + args.confirm_timeout, state_document(before),
                        loaded.files_sha256, str(_config_path(args)), ip_forward=before.ip_forward,
                        pid_start=confirm.process_start(os.getpid()))
        confirm.write(state_dir, t)
        mine.append(t)

    with _kernel() as kernel:
        if not _no_try_pending(state_dir, kernel):
            return EXIT_ERROR
        report = reconcile(loaded, kernel, rollback_on_probe_failure=args.rollback_on_probe_failure,
                           before_apply=keep_before if args.confirm_timeout is not None else None)
        code = _print_apply(args, report)
        if mine and report.rollback is not None:  # a probe broke: already restored, nothing to confirm
            confirm.close(state_dir, mine[0], "reverted", "rolled back after a probe failed")
        elif mine:
            return _wait_for_confirm(args, kernel, mine[0], code)
    return code


def _no_try_pending(state_dir: Path, kernel: Any) -> bool:
    """Before an apply: a try whose deadline passed is reverted now (its apply died); one still pending
    blocks the apply (the revert would undo this apply too)."""
    from ipvland import confirm

    try:
        done = confirm.finish(state_dir, kernel, time.time())
        if done is not None:
            print(f"ipvland apply: {done[0].describe()}: not confirmed in time, reverted: {done[1].describe()}",
                  file=sys.stderr)
        t = confirm.pending(state_dir, time.time())
    except confirm.TryError as e:
        print(f"ipvland apply: {e}", file=sys.stderr)
        return False
    if t is not None:
        print(f"ipvland apply: {t.describe()}: `ipvland confirm` keeps it; nothing changed", file=sys.stderr)
        return False
    return True


def _wait_for_confirm(args: argparse.Namespace, kernel: Any, t: Any, code: int) -> int:
    """The change is made: wait for `ipvland confirm` (or Enter), else restore the state before it."""
    import select

    from ipvland import confirm

    t = dataclasses.replace(t, deadline=time.time() + args.confirm_timeout, applied=True)  # from now on
    confirm.write(args.state_dir, t)
    tty = sys.stdin.isatty()
    print(f"keep this change? `ipvland confirm`{' or Enter' if tty else ''} within {args.confirm_timeout:g}s, "
          f"otherwise it is reverted at {time.strftime('%H:%M:%S', time.localtime(t.deadline))}", flush=True)
    try:
        while time.time() < t.deadline:
            current = confirm.read(args.state_dir)
            if current is None or current.started != t.started:
                done = confirm.outcome(args.state_dir, t)
                if done is not None and done.outcome == "confirmed":
                    print("confirmed: the change is kept")
                    return code
                print(f"reverted by another process: {done.detail if done else 'the try is gone'}")
                return EXIT_ERROR
            wait = min(0.2, max(0.0, t.deadline - time.time()))
            if tty and select.select([sys.stdin], [], [], wait)[0]:
                sys.stdin.readline()
                confirm.confirm(args.state_dir, time.time())
                print("confirmed: the change is kept")
                return code
            if not tty:
                time.sleep(wait)
    except confirm.NothingPending:
        pass  # the deadline passed while Enter was read: revert below
    except KeyboardInterrupt:
        print("interrupted: reverting now")
        return _revert(args, kernel, force=True)
    return _revert(args, kernel, force=False)


def _revert(args: argparse.Namespace, kernel: Any, force: bool) -> int:
    from ipvland import confirm

    done = confirm.finish(args.state_dir, kernel, time.time(), force=force)
    if done is None:  # confirmed in the last instant
        print("confirmed: the change is kept")
        return EXIT_OK
    restored = done[1]
    print(f"not confirmed in time: reverted: {restored.describe()}")
    if restored.report is not None:
        for outcome in restored.report.outcomes:
            print(f"revert: {outcome.describe()}")
    for line in restored.forwarding:
        print(f"revert: {line}")
    for line in restored.forwarding_failed:
        print(f"revert: {line}", file=sys.stderr)
    return EXIT_ERROR


def _confirm(args: argparse.Namespace) -> int:
    from ipvland import confirm

    try:
        t = confirm.confirm(args.state_dir, time.time())
    except (confirm.NothingPending, confirm.TryError) as e:
        print(f"ipvland confirm: {e}", file=sys.stderr)
        return EXIT_ERROR
    print(f"confirmed: {t.config} (applied by pid {t.pid}) is kept")
    return EXIT_OK


def _print_apply(args: argparse.Namespace, report: Any) -> int:
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        for outcome in report.outcomes:
            print(outcome.describe())
        remaining = report.remaining or report.plan
        for change in remaining.changes:
            print(f"still differs: {change.describe()}")
        for problem in (*remaining.conflicts, *remaining.pending):
            print(problem.describe())
        for result in report.probes:
            print(result.describe())
        if report.rollback is not None:
            _print_rollback(report.rollback)
        applied = sum(o.ok for o in report.outcomes)
        verdict = "converged" if report.ok else "NOT converged"
        if report.rollback is not None:
            verdict = "ROLLED BACK" if report.rollback.ok else "ROLLBACK FAILED"
        print(f"{applied} change(s) applied, {len(report.failures)} failed: {verdict}")
    return EXIT_OK if report.ok else EXIT_ERROR


def _print_rollback(rollback: Rollback) -> None:
    print("rollback: a change broke " + ", ".join(p.describe() for p in rollback.broken))
    if rollback.error is not None:
        print(f"rollback: the previous state could not be planned: {rollback.error}")
    if rollback.restore is not None:
        for outcome in rollback.restore.outcomes:
            print(f"rollback: {outcome.describe()}")


def _probe(args: argparse.Namespace) -> int:
    from ipvland.probe import run_probes

    loaded = _load(args)
    if loaded is None:
        return EXIT_ERROR
    results = run_probes(loaded.probes)
    if args.json:
        print(json.dumps([{"line": r.describe(), "ok": r.ok, "rtt_ms": r.rtt_ms, "error": r.error}
                          for r in results], indent=2))
    else:
        for result in results:
            print(result.describe())
        print(f"{sum(r.ok for r in results)} of {len(results)} probe(s) passed")
    return EXIT_OK if all(r.ok for r in results) else EXIT_ERROR


def _show(args: argparse.Namespace) -> int:
    import yaml

    from ipvland.observe import observe
    from ipvland.show import to_document

    with _kernel() as kernel:
        document = to_document(observe(kernel), include_foreign=args.all)
    if args.json:
        print(json.dumps(document, indent=2))
    else:
        print(yaml.safe_dump(document, sort_keys=False, default_flow_style=False), end="")
    return EXIT_OK


def _peers(args: argparse.Namespace) -> int:
    import yaml

    from ipvland.kernel import Kernel
    from ipvland.peers import as_document, as_ip_commands, peer_neighbors

    loaded = _load(args)
    if loaded is None:
        return EXIT_ERROR
    if args.format in ("route", "frr", "bird"):
        return _upstream(args, loaded)
    with Kernel() as kernel:  # the MAC is read from the live parent, never guessed
        macs = {link.name: link.mac for link in kernel.links(None) if link.mac}
    entries, problems = peer_neighbors(loaded, macs)
    for problem in problems:
        print(f"ipvland peers: {problem}", file=sys.stderr)
    if args.format == "ip":
        print(as_ip_commands(entries, args.peer_dev), end="")
    else:
        print(yaml.safe_dump(as_document(entries, args.peer_dev), sort_keys=False), end="")
    return EXIT_ERROR if problems else EXIT_OK


def _upstream(args: argparse.Namespace, loaded: Spec) -> int:
    """`peers --format route|frr|bird`: the host routes an upstream router needs (peers.upstream_routes)."""
    import ipaddress

    from ipvland.kernel import Kernel
    from ipvland.peers import as_bird, as_frr, as_route_commands, upstream_routes

    via: dict[int, Any] = {}
    for text in args.via or []:
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            print(f"ipvland peers: --via {text}: not an IP address", file=sys.stderr)
            return EXIT_USAGE
        via[address.version] = address
    with Kernel() as kernel:  # the host's own addresses on each parent, read live
        names = {link.index: link.name for link in kernel.links(None)}
        on: dict[str, list[Any]] = {}
        for a in kernel.addresses(None):
            if a.ifindex in names and not a.address.ip.is_link_local and not a.dynamic:
                on.setdefault(names[a.ifindex], []).append(a.address.ip)
    routes, problems = upstream_routes(loaded, on, via)
    for problem in problems:
        print(f"ipvland peers: {problem}", file=sys.stderr)
    render = {"route": as_route_commands, "frr": as_frr, "bird": as_bird}[args.format]
    print(render(routes), end="")
    return EXIT_ERROR if problems else EXIT_OK


def _run(args: argparse.Namespace) -> int:
    from ipvland import daemon, lock

    if str(args.config) == "-":
        print("ipvland run: -c -: the daemon needs a file to watch", file=sys.stderr)
        return EXIT_USAGE
    if not _capable(CAP_NET_ADMIN):
        return _needs_root(args.command)
    try:
        held = lock.acquire(args.state_dir)
    except lock.AlreadyRunning as e:
        print(f"ipvland run: {e}", file=sys.stderr)
        return EXIT_ERROR
    if args.host is not None:  # the daemon loads with spec.load(), which reads the identity from there
        os.environ["IPVLAND_HOST"] = args.host
    with held:
        return daemon.run(args.config, args.interval, args.state_dir, args.log_level,
                          args.rollback_on_probe_failure, metrics_file=args.metrics_file,
                          metrics_listen=args.metrics_listen)


def _status(args: argparse.Namespace) -> int:
    from ipvland import status

    return status.main(args.state_dir, args.json)


def _reload(args: argparse.Namespace) -> int:
    from ipvland import control

    return control.reload(args.pid, args.state_dir, args.timeout)


def _wait_online(args: argparse.Namespace) -> int:
    from ipvland import control

    return control.wait_online(args.state_dir, args.timeout, strict=args.strict)


def _schema(args: argparse.Namespace) -> int:
    from importlib import resources

    print(resources.files("ipvland").joinpath("schema.json").read_text(encoding="utf-8"), end="")
    return EXIT_OK


# ---------------------------------------------------------------- privileges and failures


def _capable(cap: int) -> bool:
    """Whether this process has capability `cap` in its effective set (root normally has them all)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> cap & 1)
    except (OSError, ValueError, IndexError):
        pass
    return os.geteuid() == 0


def _needs_root(command: str, detail: object = None) -> int:
    more = f": {detail}" if detail is not None else ""
    print(f"ipvland {command}: needs root (CAP_NET_ADMIN){more}", file=sys.stderr)
    return EXIT_ERROR


def _refused(e: BaseException) -> bool:
    """A failure that means: not privileged enough (EPERM/EACCES from the kernel or a file)."""
    return getattr(e, "errno", None) in (errno.EPERM, errno.EACCES)


def _quiet_stdout() -> None:
    """After a closed pipe: send what is still buffered nowhere, so exiting prints no second error."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "validate": _validate,
    "render": _render,
    "plan": _plan,
    "apply": _apply,
    "confirm": _confirm,
    "show": _show,
    "peers": _peers,
    "probe": _probe,
    "run": _run,
    "status": _status,
    "schema": _schema,
    "reload": _reload,
    "wait-online": _wait_online,
}
NEEDS_ROOT = ("apply", "confirm")  # writes: refused up front rather than failing change by change


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = COMMANDS.get(args.command)
    if handler is None:
        print(f"ipvland {args.command}: not available in this build", file=sys.stderr)
        return EXIT_ERROR
    # The commands print every outcome themselves; apply.py also logs them, for the daemon's journal:
    # without a handler, Python's last-resort one would print each failure a second time.
    logging.getLogger("ipvland.apply").addHandler(logging.NullHandler())
    try:
        if args.command in NEEDS_ROOT and not _capable(CAP_NET_ADMIN):
            return _needs_root(args.command)
        code = handler(args)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return code
    except BrokenPipeError:
        _quiet_stdout()
        return EXIT_PIPE
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # the last line of defence: one line, never a traceback
        if _refused(e) and not _capable(CAP_NET_ADMIN):
            return _needs_root(args.command, e)
        if type(e).__name__ == "KernelError":  # the kernel's refusal, already said for people
            print(f"ipvland {args.command}: {e}", file=sys.stderr)
        else:
            print(f"ipvland {args.command}: internal error: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_ERROR
