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
    from ipshift.plan import all_plans, sysctl_warnings
    from ipshift.report import check_dict, check_text

    snapshot = read_snapshot()
    plans = all_plans(config, snapshot)
    warnings = sysctl_warnings(config, snapshot)
    if args.json:
        print(json.dumps(check_dict(args.config, args.netns, plans, warnings, snapshot), indent=2))
    else:
        print(check_text(config, args.config, args.netns, plans, warnings, snapshot, verbose=not args.brief))
    return 0 if all(p.complete for p in plans) else 1


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
    return parser


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
    sys.exit(main())
