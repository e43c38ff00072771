"""``pypi-mirror COMMAND [-c CONFIG]`` (``-c`` may also come before the command)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from mirror.config import Config, load_config
from mirror.errors import ConfigError
from mirror.log import configure_logging

EXIT_CONFIG = 2


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-c",
        "--config",
        type=Path,
        default=argparse.SUPPRESS,
        help="configuration file (TOML); without it the embedded defaults apply",
    )
    parser = argparse.ArgumentParser(
        prog="pypi-mirror",
        description="A PyPI mirror and verifying pull-through cache.",
        parents=[common],
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve_parser = commands.add_parser(
        "serve", parents=[common], help="run the daemon (Simple API, files, JSON API)"
    )
    # Set by the supervisor for the processes it starts ([serve] workers > 1).
    serve_parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    # ... with the supervisor's PID: a worker stops when it is gone.
    serve_parser.add_argument("--supervisor", type=int, default=None, help=argparse.SUPPRESS)
    commands.add_parser(
        "sync",
        parents=[common],
        help="one changelog sync of a full or filtered mirror ([sync] section); "
        "exit 0 when the mirror reached the upstream serial",
    )
    status = commands.add_parser(
        "status", parents=[common], help="serial, lag, projects, files, bytes, last run"
    )
    status.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def _load(args: argparse.Namespace) -> Config:
    config = load_config(getattr(args, "config", None))
    if args.command in ("serve", "sync"):
        from mirror.services import filters_from_config

        filters_from_config(config)  # a bad [sync] filter entry is a configuration error
    return config


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = _load(args)
    except ConfigError as exc:
        print(f"pypi-mirror: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(config.log.level, config.log.format)
    if args.command == "serve":
        from mirror.server.run import serve

        return serve(config, worker=args.worker, supervisor=args.supervisor)
    if args.command == "sync":
        from mirror.sync.commands import run_sync

        return run_sync(config)
    if args.command == "status":
        from mirror.sync.commands import run_status

        return run_status(config, as_json=args.json)
    raise AssertionError(args.command)
