"""``pypi-mirror COMMAND [-c CONFIG]`` (``-c`` may also come before the command)."""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
from collections.abc import Sequence
from pathlib import Path

from mirror.config import Config, load_config
from mirror.errors import ConfigError
from mirror.log import configure_logging

EXIT_CONFIG = 2

SERVE_HELP = "run the daemon: the Simple API, files and the JSON API, cached from upstream"
SYNC_HELP = (
    "run one changelog sync of a full or filtered mirror ([sync] section); "
    "exit 0 when the mirror reached the upstream serial"
)
STATUS_HELP = (
    "show where the configuration came from and what the mirror holds: a pull-through "
    "cache's size, hit rate and upstream state, or a mirror's serial, lag and last sync"
)


def _sentence(help_text: str) -> str:
    """A command's ``--help`` description from its one-line help."""
    return f"{help_text[:1].upper()}{help_text[1:]}."


def version() -> str:
    try:
        return importlib.metadata.version("pypi-mirror")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree
        from mirror import __version__

        return __version__


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-c",
        "--config",
        type=Path,
        default=argparse.SUPPRESS,
        help="configuration file (TOML); without it the embedded defaults apply; "
        "PYPI_MIRROR_<SECTION>_<KEY> environment variables override either",
    )
    parser = argparse.ArgumentParser(
        prog="pypi-mirror",
        description="A PyPI mirror and verifying pull-through cache.",
        parents=[common],
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {version()}", help="show the version"
    )
    commands = parser.add_subparsers(
        dest="command",
        required=True,
        metavar="COMMAND",
        title="commands",
        help="what to do; 'pypi-mirror COMMAND --help' describes each",
    )
    serve_parser = commands.add_parser(
        "serve", parents=[common], help=SERVE_HELP, description=_sentence(SERVE_HELP)
    )
    # Set by the supervisor for the processes it starts ([serve] workers > 1).
    serve_parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    # ... with the supervisor's PID: a worker stops when it is gone.
    serve_parser.add_argument("--supervisor", type=int, default=None, help=argparse.SUPPRESS)
    commands.add_parser("sync", parents=[common], help=SYNC_HELP, description=_sentence(SYNC_HELP))
    status = commands.add_parser(
        "status", parents=[common], help=STATUS_HELP, description=_sentence(STATUS_HELP)
    )
    status.add_argument(
        "--json", action="store_true", help="print the same report as one JSON object"
    )
    from mirror.verify import commands as verify_commands

    verify_commands.register(commands, common)
    from mirror.bundle import commands as bundle_commands

    bundle_commands.register(commands, common)
    return parser


def _load(args: argparse.Namespace) -> Config:
    config = load_config(getattr(args, "config", None))
    if args.command in ("serve", "sync", "verify"):
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
        from mirror.status import run_status

        return run_status(config, as_json=args.json)
    if args.command == "verify":
        from mirror.verify import commands as verify_commands

        return verify_commands.run(args, config)
    if args.command in ("keygen", "export", "import"):
        from mirror.bundle import commands as bundle_commands

        return bundle_commands.run(args, config)
    raise AssertionError(args.command)
