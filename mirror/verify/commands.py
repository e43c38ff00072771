"""``pypi-mirror verify [-c CONFIG] [--repair] [--json]``.

Exit codes: 0 nothing wrong (with ``--repair``: everything found was repaired); 1 damage
found (and, with ``--repair``, not all of it repaired); 2 configuration or storage error;
3 a sync holds the store's lock (verify never runs beside a sync writing the store).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from mirror.config import Config, SyncMode
from mirror.core import layout
from mirror.errors import LockHeld, MirrorError
from mirror.log import configure_logging

if TYPE_CHECKING:
    # Imported when the command runs: the parser is built for every command.
    from mirror.storage import Storage
    from mirror.verify.report import Report

EXIT_OK = 0
EXIT_DAMAGED = 1
EXIT_CONFIG = 2
EXIT_LOCKED = 3

HELP = "check the whole store: files, .metadata, pages, JSON API, leftovers (--repair fixes)"
DESCRIPTION = (
    "Walk the whole store in bounded memory and check it: files missing or not matching "
    "their digest, .metadata not matching its page, pages that do not parse or disagree, "
    "JSON API answers listing what their page does not, files no page references, temp "
    "files of dead processes. Exit 0 when nothing is wrong, 1 when something is. Refused "
    "while a sync runs on the same store."
)
PROGRESS_INTERVAL = 0.5


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
) -> None:
    parser = commands.add_parser("verify", parents=[common], help=HELP, description=DESCRIPTION)
    parser.add_argument(
        "--repair",
        action="store_true",
        help="fix what was found: fetch missing or corrupt files and .metadata again from "
        "the upstream (verified), render broken pages again, remove unreferenced files and "
        "temp leftovers; offline, do what needs no upstream and say what could not be done",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the report as one JSON object on stdout"
    )


def _fail(message: str, code: int) -> int:
    print(f"pypi-mirror: {message}", file=sys.stderr)
    return code


def run(args: argparse.Namespace, config: Config) -> int:
    as_json: bool = args.json
    tty = sys.stderr.isatty()
    if as_json:
        level = "error"  # stdout carries the report
    elif tty and config.log.level == "info":
        level = "warning"  # the progress line and the report say it
    else:
        level = config.log.level
    configure_logging(level, config.log.format)
    from mirror.storage import open_storage

    storage = open_storage(config.storage, create=False)
    try:
        report = asyncio.run(_verify(config, storage, repair=args.repair, tty=tty))
    except KeyboardInterrupt:
        return _fail("verify interrupted", EXIT_DAMAGED)
    except LockHeld as exc:
        who = f" by pid {exc.holder}" if exc.holder else ""
        return _fail(
            f"verify not started: a sync is running on this mirror (lock {exc.lock} held{who}); "
            "run verify when it has finished",
            EXIT_LOCKED,
        )
    except _NoStore as exc:
        return _fail(f"{exc} (configuration: {config.source})", EXIT_CONFIG)
    except MirrorError as exc:
        return _fail(f"verify failed: {exc}", EXIT_CONFIG)
    except OSError as exc:
        return _fail(
            f"verify failed: storage error in {storage.describe()}: {exc}; fix it, then run "
            "verify again",
            EXIT_CONFIG,
        )
    if as_json:
        print(json.dumps(report.as_json(), sort_keys=True))
    else:
        print(report.render())
    return EXIT_OK if report.ok else EXIT_DAMAGED


class _NoStore(MirrorError):
    pass


async def _has_store(storage: Storage) -> bool:
    async for _names in storage.iter_names(layout.WEB):
        return True
    return False


async def _verify(config: Config, storage: Storage, *, repair: bool, tty: bool) -> Report:
    if not await _has_store(storage):
        raise _NoStore(
            f"no mirror at {storage.describe()}: nothing under {layout.WEB}/; check [storage] path"
        )
    from mirror.services import Purpose, open_services
    from mirror.sync.journal import load_state
    from mirror.verify.repair import Repairer
    from mirror.verify.report import Report
    from mirror.verify.walk import Verifier

    lock = storage.lock(layout.SYNC_LOCK)
    lock.acquire()
    try:
        state = await load_state(storage)
        complete = config.sync.mode is SyncMode.MIRROR or state.serial is not None
        report = Report(storage.describe(), complete, repair=repair, offline=config.serve.offline)
        async with _progress(report, tty):
            if not repair:
                return await Verifier(storage, report).run()
            purpose = Purpose.SERVE if config.serve.offline else Purpose.SYNC
            async with open_services(config, storage, purpose=purpose) as services:
                repairer = Repairer(storage, services.keeper, report)
                return await Verifier(storage, report, repairer=repairer).run()
    finally:
        lock.release()


@contextlib.asynccontextmanager
async def _progress(report: Report, tty: bool) -> AsyncIterator[None]:
    """A status line on stderr, redrawn while the walk goes on (a terminal only)."""
    if not tty:
        yield
        return

    def draw() -> None:
        sys.stderr.write("\r" + report.progress_line() + "\x1b[K")
        sys.stderr.flush()

    async def loop() -> None:
        while True:
            await asyncio.sleep(PROGRESS_INTERVAL)
            draw()

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        draw()
        sys.stderr.write("\n")
        sys.stderr.flush()
