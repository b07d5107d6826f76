"""The ``ipshift`` command line: check | run | status | failover | failback | demo.

Exit status: 0 success; 1 a check found stranded addresses (or an operation
failed); 2 bad input (configuration, arguments, a namespace that does not
exist) -- always one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence

from ipshift.config import DEFAULT_CONFIG_PATH, ConfigError, load_config


class UsageError(Exception):
    """Bad input that is not a configuration file problem (exit 2)."""


def _enter(netns: str | None) -> None:
    if netns:
        from ipshift.kernel.netns import NetnsError, enter_netns

        try:
            enter_netns(netns)
        except NetnsError as exc:
            raise UsageError(str(exc)) from None


def cmd_check(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    _enter(args.netns)
    from ipshift.kernel.snapshot import read_snapshot
    from ipshift.plan import all_plans
    from ipshift.policy import sysctl_warnings
    from ipshift.report import check_dict, check_text

    snapshot = read_snapshot()
    plans = all_plans(config, snapshot)
    warnings = sysctl_warnings(config, snapshot)
    if args.json:
        print(json.dumps(check_dict(args.config, args.netns, plans, warnings, snapshot), indent=2))
    else:
        print(check_text(config, args.config, args.netns, plans, warnings, snapshot, verbose=not args.brief))
    return 0 if all(p.complete for p in plans) else 1


def _socket_path(args: argparse.Namespace, configured: str | None = None) -> str:
    """--socket, else the configured one; under --netns NAME the default gets the namespace's name."""
    from ipshift.config import DEFAULT_SOCKET_PATH

    if getattr(args, "socket", None):
        return str(args.socket)
    if configured and configured != DEFAULT_SOCKET_PATH:
        return configured
    if args.netns:
        return f"/run/ipshift/ipshift-{args.netns}.sock"
    return DEFAULT_SOCKET_PATH


def _setup_logging(fmt: str, verbose: bool) -> None:
    import logging

    from ipshift.logs import JsonFormatter

    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.getLogger("pyroute2").setLevel(logging.WARNING)


def cmd_run(args: argparse.Namespace) -> int:
    import asyncio

    config = load_config(args.config)
    if "state_dir" not in config.model_fields_set and args.netns:
        config = config.model_copy(update={"state_dir": f"/var/lib/ipshift/netns-{args.netns}"})
    _enter(args.netns)
    _setup_logging(args.log_format, args.verbose)
    from ipshift.daemon import Daemon

    from ipshift.lock import AlreadyRunning

    daemon = Daemon(config, args.config, socket_path=_socket_path(args, config.socket),
                    kill_at=os.environ.get("IPSHIFT_TEST_KILL_AT") or None)
    try:
        return asyncio.run(daemon.run())
    except AlreadyRunning as exc:
        print(str(exc), file=sys.stderr)
        return 1


def _ask(args: argparse.Namespace, req: dict[str, object]) -> dict[str, object]:
    from ipshift.control import request

    path = _socket_path(args)
    try:
        return request(path, req)
    except FileNotFoundError:
        raise UsageError(f"ipshift: no daemon is listening on {path} (is `ipshift run` running?)") from None
    except ConnectionRefusedError:
        raise UsageError(f"ipshift: no daemon is listening on {path} (stale socket)") from None


def cmd_status(args: argparse.Namespace) -> int:
    from ipshift.report import status_text

    # the text shows the last five records; --json gives every kept one unless --records says otherwise
    last = args.records if args.records is not None else (None if args.json else 5)
    answer = _ask(args, {"cmd": "status", **({"records": last} if last else {})})
    status = answer.get("status", {})
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        print(status_text(status))  # type: ignore[arg-type]
    return 0


def _cmd_move(args: argparse.Namespace, cmd: str) -> int:
    from ipshift.report import record_text

    answer = _ask(args, {"cmd": cmd, "nic": args.nic})
    if args.json:
        print(json.dumps(answer, indent=2))
    else:
        if answer.get("error"):
            print(f"ipshift {cmd} {args.nic}: {answer['error']}", file=sys.stderr)
        for rec in answer.get("records", []):  # type: ignore[attr-defined]
            print(record_text(rec))
        if not answer.get("records") and not answer.get("error"):
            print(f"ipshift {cmd} {args.nic}: nothing to move")
    return 0 if answer.get("ok") else 1


def cmd_failover(args: argparse.Namespace) -> int:
    return _cmd_move(args, "failover")


def cmd_failback(args: argparse.Namespace) -> int:
    return _cmd_move(args, "failback")


def cmd_demo(args: argparse.Namespace) -> int:
    from ipshift.demo import run_demo

    return run_demo()


def _common(p: argparse.ArgumentParser, *, config: bool = True) -> None:
    if config:
        p.add_argument("-c", "--config", default=os.environ.get("IPSHIFT_CONFIG", DEFAULT_CONFIG_PATH),
                       help=f"configuration file (default {DEFAULT_CONFIG_PATH})")
    p.add_argument("--netns", metavar="NAME", help="work inside network namespace NAME (as `ip netns exec`)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ipshift", description="Move a failed NIC's IP addresses to a surviving NIC.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("check", help="what would happen if each NIC failed now")
    _common(p)
    p.add_argument("--json", action="store_true", help="machine-readable output (see README)")
    p.add_argument("--brief", action="store_true", help="no per-step listing")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("run", help="the failover daemon (foreground)")
    _common(p)
    p.add_argument("--socket", help="control socket (default /run/ipshift/ipshift.sock; "
                                    "/run/ipshift/ipshift-NAME.sock under --netns NAME)")
    p.add_argument("--log-format", choices=("text", "json"), default="text")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("status", help="ask the running daemon where everything is")
    _common(p, config=False)
    p.add_argument("--socket")
    p.add_argument("--json", action="store_true")
    p.add_argument("--records", type=int, metavar="N",
                   help="only the last N failover records (default: 5 in text, every kept one with --json)")
    p.set_defaults(func=cmd_status)

    for name, func, text in (("failover", cmd_failover, "move a NIC's addresses away (maintenance)"),
                             ("failback", cmd_failback, "bring a NIC's addresses home")):
        p = sub.add_parser(name, help=text)
        p.add_argument("nic")
        _common(p, config=False)
        p.add_argument("--socket")
        p.add_argument("--json", action="store_true")
        p.set_defaults(func=func)

    p = sub.add_parser("demo", help="failover on a built-in namespace lab, with the client-observed outage")
    p.set_defaults(func=cmd_demo, netns=None)
    return parser


def console() -> None:
    """The ``ipshift`` command: :func:`main` in a process of its own."""
    from ipshift.kernel import load_pyroute2_lean

    load_pyroute2_lean()  # before anything imports pyroute2: the daemon needs a small part of it
    sys.exit(main())


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed its one-line usage error
        return int(exc.code) if isinstance(exc.code, int) else 2
    try:
        result: int = args.func(args)
        return result
    except (ConfigError, UsageError) as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, not a traceback
        if args.debug:
            raise
        print(f"ipshift: internal error: {type(exc).__name__}: {exc} (run with --debug for details)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    console()
