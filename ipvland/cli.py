"""Command line: `ipvland validate|plan|apply|show|run|status|peers`.

Exit codes: 0 success / nothing to do, 1 error, 2 changes pending (`plan` only).
No traceback ever reaches a user: unexpected errors print one line and exit 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from ipvland import __version__
from ipvland.model import Plan, Spec

if TYPE_CHECKING:
    from ipvland.reconcile import Rollback

EXIT_OK, EXIT_ERROR, EXIT_PENDING = 0, 1, 2


def _config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", type=Path, default=None,
                   help="main config file (default: $IPVLAND_CONFIG or /etc/ipvland/config.yaml)")


def _json_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ipvland", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"ipvland {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("validate", help="check the config; exit 0 when valid, 1 with every error")
    _config_arg(p)

    p = sub.add_parser("plan", help="show the changes apply would make; exit 0 none, 2 pending, 1 error")
    _config_arg(p)
    _json_arg(p)

    p = sub.add_parser("apply", help="converge the kernel to the config; exit 0 converged, 1 otherwise")
    _config_arg(p)
    _json_arg(p)
    p.add_argument("--rollback-on-probe-failure", action="store_true",
                   help="restore the previous state when a change makes a passing probe fail")

    p = sub.add_parser("probe", help="run the config's probes now; exit 0 when all pass")
    _config_arg(p)
    _json_arg(p)

    p = sub.add_parser("show", help="print the live state ipvland owns as a config")
    _json_arg(p)
    p.add_argument("--all", action="store_true", help="also the ipvlans ipvland does not own")

    p = sub.add_parser("run", help="the daemon: keep the kernel converged")
    _config_arg(p)
    p.add_argument("--interval", type=float, default=30.0, help="periodic full resync, seconds (default 30)")
    p.add_argument("--state-dir", type=Path, default=Path("/run/ipvland"), help="status file directory")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--rollback-on-probe-failure", action="store_true",
                   help="restore the previous state when a change makes a passing probe fail; the "
                        "rolled-back config is not retried until it changes")

    p = sub.add_parser("peers", help="what a remote peer must configure to reach l3/l3s ipvlans")
    _config_arg(p)
    p.add_argument("--format", choices=["ip", "yaml"], default="ip",
                   help="ip: `ip neigh replace` lines; yaml: a config for the peer's own ipvland")
    p.add_argument("--peer-dev", default="eth0", help="the peer's NIC on the shared wire (default eth0)")

    p = sub.add_parser("status", help="show the daemon's last status")
    _json_arg(p)
    p.add_argument("--state-dir", type=Path, default=Path("/run/ipvland"), help="status file directory")

    # For systemd units: see ipvland/control.py.
    p = sub.add_parser("reload", help="make the daemon re-read its config (SIGHUP) and wait until it has; "
                       "the unit's ExecReload=")
    p.add_argument("--pid", type=int, required=True, help="the daemon's pid ($MAINPID in a unit)")
    p.add_argument("--state-dir", type=Path, default=Path("/run/ipvland"),
                   help="the daemon's status directory (default /run/ipvland)")
    p.add_argument("--timeout", type=_seconds, default=60.0, help="seconds to wait (default 60)")
    p = sub.add_parser("wait-online", help="wait until the daemon's config is converged; exit 1 on timeout "
                       "(ipvland-wait-online.service, before network-online.target)")
    p.add_argument("--state-dir", type=Path, default=Path("/run/ipvland"),
                   help="the daemon's status directory (default /run/ipvland)")
    p.add_argument("--timeout", type=_seconds, default=120.0, help="seconds to wait (default 120)")
    return parser


def _seconds(text: str) -> float:
    """A finite, positive number of seconds (nan, inf and negatives are usage errors)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value <= 86400:
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most 86400 seconds: {text!r}")
    return value


def _validate(args: argparse.Namespace) -> int:
    from ipvland import spec

    path = args.config or spec.default_config_path()
    try:
        loaded = spec.load(path)
    except spec.SpecError as e:
        for error in e.errors:
            print(error, file=sys.stderr)
        print(f"{path}: {len(e.errors)} error(s)", file=sys.stderr)
        return EXIT_ERROR
    n_devices = len(loaded.devices)
    print(f"{path}: valid: {len(loaded.parents)} parent(s), {n_devices} device(s), "
          f"{len(loaded.sources)} file(s)")
    return EXIT_OK


def _load(args: argparse.Namespace) -> Spec | None:
    """The spec, or None after printing every config error (nothing is touched then)."""
    from ipvland import spec

    path = args.config or spec.default_config_path()
    try:
        return spec.load(path)
    except spec.SpecError as e:
        for error in e.errors:
            print(error, file=sys.stderr)
        print(f"{path}: {len(e.errors)} error(s); nothing changed", file=sys.stderr)
        return None


def _print_plan(p: Plan, out: TextIO = sys.stdout) -> None:
    for change in p.changes:
        print(change.describe(), file=out)
    for problem in (*p.conflicts, *p.pending):
        print(problem.describe(), file=out)


def _plan(args: argparse.Namespace) -> int:
    from ipvland.kernel import Kernel
    from ipvland.reconcile import plan_to_json, reconcile

    loaded = _load(args)
    if loaded is None:
        return EXIT_ERROR
    with Kernel() as kernel:
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
    from ipvland.kernel import Kernel
    from ipvland.reconcile import reconcile

    loaded = _load(args)
    if loaded is None:
        return EXIT_ERROR
    with Kernel() as kernel:
        report = reconcile(loaded, kernel, rollback_on_probe_failure=args.rollback_on_probe_failure)
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

    from ipvland.kernel import Kernel
    from ipvland.observe import observe
    from ipvland.show import to_document

    with Kernel() as kernel:
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


def _run(args: argparse.Namespace) -> int:
    from ipvland import daemon

    return daemon.run(args.config, args.interval, args.state_dir, args.log_level, args.rollback_on_probe_failure)


def _status(args: argparse.Namespace) -> int:
    from ipvland import status

    return status.main(args.state_dir, args.json)


def _reload(args: argparse.Namespace) -> int:
    from ipvland import control

    return control.reload(args.pid, args.state_dir, args.timeout)


def _wait_online(args: argparse.Namespace) -> int:
    from ipvland import control

    return control.wait_online(args.state_dir, args.timeout)


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "validate": _validate,
    "plan": _plan,
    "apply": _apply,
    "show": _show,
    "peers": _peers,
    "probe": _probe,
    "run": _run,
    "status": _status,
    "reload": _reload,
    "wait-online": _wait_online,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = COMMANDS.get(args.command)
    if handler is None:
        print(f"ipvland {args.command}: not available in this build", file=sys.stderr)
        return EXIT_ERROR
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # the last line of defence: one line, never a traceback
        print(f"ipvland {args.command}: internal error: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_ERROR
