"""``pypi-mirror keygen``, ``export`` and ``import``.

Exit codes: 0 done (also: the bundle was applied already); 1 the bundle was refused or
the export failed (one line naming the reason and the first bad path; nothing applied);
2 usage or configuration; 3 another sync, export or import holds the store's lock.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from mirror.bundle.errors import AlreadyApplied, BundleError, UsageError
from mirror.bundle.progress import LineProgress
from mirror.bundle.volumes import MIN_VOLUME
from mirror.config import Config, SyncMode, parse_size
from mirror.core import layout
from mirror.errors import ConfigError, LockHeld, MirrorError, StorageError
from mirror.log import configure_logging, get_logger
from mirror.storage import StoreLock, open_storage
from mirror.sync.progress import human_bytes

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_LOCKED = 3

COMMANDS = ("keygen", "export", "import")

KEYGEN_HELP = "write an Ed25519 key pair for signing bundles: PATH (private) and PATH.pub"
EXPORT_HELP = (
    "write what changed since a serial (or since the last export) as a signed bundle "
    "for an offline mirror"
)
IMPORT_HELP = (
    "check a bundle (signature, volumes, every file's length and digest, TUF) and apply "
    "it to this mirror"
)

log = get_logger("mirror.bundle")


def _size(text: str) -> int:
    try:
        size = parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    if size < MIN_VOLUME:
        raise argparse.ArgumentTypeError(f"at least {MIN_VOLUME} bytes (1MiB), got {size}")
    return size


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add ``keygen``, ``export`` and ``import`` to the CLI's subparsers."""
    keygen_parser = commands.add_parser(
        "keygen", parents=[common], help=KEYGEN_HELP, description=f"{KEYGEN_HELP}."
    )
    keygen_parser.add_argument(
        "path",
        type=Path,
        metavar="PATH",
        help="where to write the private key (mode 0600); the public key goes to PATH.pub; "
        "neither may exist",
    )
    export = commands.add_parser(
        "export",
        parents=[common],
        help=EXPORT_HELP,
        description=f"{EXPORT_HELP}: files, .metadata, pages, JSON API answers, removals and "
        "yanks, and the TUF metadata when trust is on. Signed with [bundle] signing-key.",
    )
    span = export.add_mutually_exclusive_group()
    span.add_argument(
        "--since",
        type=int,
        metavar="SERIAL",
        help="export what changed after this serial (default: the serial of the last export)",
    )
    span.add_argument("--all", action="store_true", help="export everything the mirror holds")
    export.add_argument(
        "--max-size",
        type=_size,
        metavar="SIZE",
        help="write numbered volumes (OUTPUT.001.tar, ...) of at most SIZE each "
        "(e.g. 4GB, 700MiB); without it, one file OUTPUT",
    )
    export.add_argument(
        "output", type=Path, metavar="OUTPUT", help="the bundle file (or the volumes' base name)"
    )
    imp = commands.add_parser(
        "import",
        parents=[common],
        help=IMPORT_HELP,
        description=f"{IMPORT_HELP}. Nothing of a refused bundle is applied; an import "
        "interrupted part way is finished by running it again.",
    )
    imp.add_argument(
        "--allow-unsigned",
        action="store_true",
        help="accept a bundle whose signature cannot be checked because [bundle] "
        "trusted-keys is empty",
    )
    imp.add_argument(
        "bundle",
        type=Path,
        nargs="+",
        metavar="BUNDLE_OR_VOLUME",
        help="the bundle file, all of its volumes, or a directory holding them",
    )


def _fail(message: str, code: int) -> int:
    print(f"pypi-mirror: {message}", file=sys.stderr)
    return code


def run(args: argparse.Namespace, config: Config) -> int:
    if args.command == "keygen":
        return _keygen(args.path)
    progress = LineProgress(args.command)
    if progress.tty and config.log.level == "info":
        configure_logging("warning", config.log.format)  # the progress line says it
    try:
        storage = open_storage(config.storage)
    except (ConfigError, StorageError) as exc:
        return _fail(f"{exc} (configuration: {config.source})", EXIT_USAGE)
    locks: list[StoreLock] = [storage.lock(layout.BUNDLE_LOCK)]
    if args.command == "import" or config.sync.mode is SyncMode.MIRROR:
        locks.append(storage.lock(layout.SYNC_LOCK))
    taken: list[StoreLock] = []
    try:
        for lock in locks:
            try:
                lock.acquire()
            except LockHeld as exc:
                return _fail(f"{args.command} not started: {exc}", EXIT_LOCKED)
            taken.append(lock)
        if args.command == "export":
            return _export(args, config, storage, progress)
        return _import(args, config, storage, progress)
    finally:
        progress.close()
        for lock in reversed(taken):
            lock.release()


# export, import and keygen import their modules when they run: the parser (with this
# module) is built for every command, and the import side alone pulls in the keeper.


def _keygen(path: Path) -> int:
    from mirror.bundle.sign import keygen

    try:
        key_id = keygen(path)
    except FileExistsError as exc:
        return _fail(
            f"{exc.args[0] if exc.args else path} exists; not overwriting a key", EXIT_USAGE
        )
    except OSError as exc:
        return _fail(f"cannot write {path}: {exc.strerror or exc}", EXIT_USAGE)
    print(f"wrote {path} (private, keep it on the exporting host) and {path}.pub (key {key_id})")
    return EXIT_OK


def _export(args: argparse.Namespace, config: Config, storage: Any, progress: LineProgress) -> int:
    from mirror.bundle.export import ExportOptions, export_bundle

    options = ExportOptions(
        output=args.output, since=args.since, everything=args.all, max_size=args.max_size
    )
    try:
        result = asyncio.run(export_bundle(config, storage, options, progress))
    except UsageError as exc:
        return _fail(f"export: {exc}", EXIT_USAGE)
    except ConfigError as exc:
        return _fail(f"configuration error: {exc}", EXIT_USAGE)
    except FileExistsError as exc:
        return _fail(f"export: {exc.filename} exists; choose another OUTPUT", EXIT_USAGE)
    except MirrorError as exc:
        return _fail(f"export failed: {exc}", EXIT_REFUSED)
    except OSError as exc:
        where = exc.filename or options.output
        return _fail(f"export failed: {exc.strerror or exc}: {where}", EXIT_REFUSED)
    progress.close()
    names = ", ".join(p.name for p in result.volumes)
    print(
        f"pypi-mirror: exported {result.kind.value}s {result.start}..{result.end}: "
        f"{result.projects} projects, {result.entries} files ({human_bytes(result.bytes)}), "
        f"{result.removed} removed, {'signed' if result.signed else 'UNSIGNED'} -> {names}",
        file=sys.stderr,
    )
    return EXIT_OK


def _import(args: argparse.Namespace, config: Config, storage: Any, progress: LineProgress) -> int:
    from mirror.bundle.importer import ImportOptions, import_bundle

    options = ImportOptions(paths=tuple(args.bundle), allow_unsigned=args.allow_unsigned)
    try:
        result = asyncio.run(import_bundle(config, storage, options, progress))
    except AlreadyApplied as exc:
        progress.close()
        print(f"pypi-mirror: nothing to do: {exc}", file=sys.stderr)
        log.info("bundle_already_applied", reason=str(exc))
        return EXIT_OK
    except ConfigError as exc:
        return _fail(f"configuration error: {exc}", EXIT_USAGE)
    except BundleError as exc:
        log.warning("bundle_refused", reason=str(exc))
        return _fail(f"import refused: {exc}", EXIT_REFUSED)
    except StorageError as exc:
        return _fail(
            f"import stopped: {exc}; fix it (disk space, permissions), then run the same "
            "import again to finish it",
            EXIT_REFUSED,
        )
    except OSError as exc:
        return _fail(
            f"import stopped: {exc.strerror or exc} ({exc.filename or storage.describe()}); "
            "fix it, then run the same import again",
            EXIT_REFUSED,
        )
    progress.close()
    header = result.header
    print(
        f"pypi-mirror: imported bundle {header.bundle_id} ({header.describe()}): "
        f"{result.projects} projects, {result.entries} files ({human_bytes(result.bytes)}, "
        f"{result.written} new), {result.removed} removed"
        + (", finishing an interrupted import" if result.resumed else ""),
        file=sys.stderr,
    )
    return EXIT_OK
