"""``pypi-mirror sync`` (``pypi-mirror status`` is ``mirror.status``).

Exit codes of ``sync``: 0 the mirror reached the upstream serial the run started from;
1 it did not (a one-line reason on stderr: deferred or failed projects, upstream
unavailable); 2 configuration or storage error; 3 another sync holds the lock.
"""

from __future__ import annotations

import asyncio
import sys

from mirror.config import Config
from mirror.core import layout
from mirror.errors import ConfigError, LockHeld, MirrorError, StorageError
from mirror.log import configure_logging, get_logger
from mirror.services import Purpose, filters_from_config, open_services
from mirror.storage import Storage, open_storage
from mirror.sync.diffs import recording
from mirror.sync.engine import SyncEngine, SyncResult, sync_lock_error
from mirror.sync.progress import Progress, ProgressReporter, human_bytes

EXIT_OK = 0
EXIT_INCOMPLETE = 1
EXIT_CONFIG = 2
EXIT_LOCKED = 3

log = get_logger("mirror.cli")


def _fail(message: str, code: int) -> int:
    print(f"pypi-mirror: {message}", file=sys.stderr)
    return code


def run_sync(config: Config) -> int:
    tty = sys.stderr.isatty()
    if tty and config.log.level == "info":
        # The progress line replaces per-project log lines; warnings still show.
        configure_logging("warning", config.log.format)
    try:
        filters_from_config(config)
        storage = open_storage(config.storage)
    except ConfigError as exc:
        return _fail(f"configuration error: {exc}", EXIT_CONFIG)
    except StorageError as exc:
        return _fail(f"{exc} (configuration: {config.origin})", EXIT_CONFIG)
    lock = storage.lock(layout.SYNC_LOCK)
    try:
        lock.acquire()
    except LockHeld as exc:
        return _fail(f"sync not started: {sync_lock_error(storage, exc)}", EXIT_LOCKED)
    except OSError as exc:
        return _fail(
            f"storage path {storage.describe()} is not usable: {exc.strerror or exc} "
            f"(configuration: {config.origin})",
            EXIT_CONFIG,
        )
    try:
        progress = Progress()
        try:
            result = asyncio.run(_sync(config, storage, progress, tty))
        except KeyboardInterrupt:
            return _fail("sync interrupted; run sync again to resume", EXIT_INCOMPLETE)
        except MirrorError as exc:
            return _fail(f"sync failed: {exc}", EXIT_INCOMPLETE)
        except OSError as exc:
            return _fail(
                f"sync failed: storage error in {storage.describe()}: {exc}; "
                "fix it (disk space, permissions), then run sync again to resume",
                EXIT_INCOMPLETE,
            )
    finally:
        lock.release()
    summary = (
        f"serial {result.serial} (upstream {result.upstream_serial}): "
        f"{result.projects} projects, +{result.files} files ({human_bytes(result.bytes)}), "
        f"-{result.removed} files"
    )
    if tty:
        print(f"pypi-mirror: synced to {summary}", file=sys.stderr)
    log.info(
        "sync_finished",
        ok=result.ok,
        serial=result.serial,
        upstream_serial=result.upstream_serial,
        projects=result.projects,
        files=result.files,
        bytes=result.bytes,
        removed=result.removed,
        deferred=result.deferred,
        failed=result.failed,
    )
    if result.ok:
        return EXIT_OK
    return _fail(f"sync incomplete: {result.reason}", EXIT_INCOMPLETE)


async def _sync(config: Config, storage: Storage, progress: Progress, tty: bool) -> SyncResult:
    reporter = ProgressReporter(progress, sys.stderr, tty=tty)
    # [sync] diff-file: what the run wrote or removed under web/ is listed when it ends.
    async with (
        recording(storage, config.sync) as store,
        open_services(config, store, purpose=Purpose.SYNC) as services,
    ):
        engine = SyncEngine(services, progress=progress)
        reporter.start()
        try:
            return await engine.run(locked=True)
        finally:
            await reporter.stop()
