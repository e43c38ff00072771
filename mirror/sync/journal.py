"""Durable sync state in ``state/sync/``: what is applied, and the run in progress.

::

    state/sync/state.json       serial (everything up to it is in the mirror), cursor
                                (changelog read up to it), filters fingerprint, the
                                deferred list carried to the next run, the last run's summary
    state/sync/run/run.json     the run in progress: id, kind, target serial, entry count
    state/sync/run/todo         its plan, one PlanEntry per line, written once (atomically)
    state/sync/run/progress     append-only: "<index> d|x|f" per finished entry, fsynced
    state/sync/deferred-<id>    entries a finished run could not apply (stale or failed)

Progress is one short appended line per project (group-committed with ``fdatasync``),
never a rewrite of the todo list, so recording is O(1) per project. Resuming streams the
todo and skips entries below the watermark (every entry before it is finished) or in the
small set of finished entries above it: memory stays bounded by the workers' window.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import IO, Any

from mirror.core.changelog import PlanEntry
from mirror.errors import StorageError
from mirror.log import get_logger
from mirror.storage import FileSystemStorage

log = get_logger("mirror.sync.journal")

STATE = "state/sync/state.json"
RUN_DIR = "state/sync/run"
RUN_META = f"{RUN_DIR}/run.json"
PLAN_FILE = f"{RUN_DIR}/todo"
PROGRESS = f"{RUN_DIR}/progress"
LOCK = "state/sync/lock"
BATCH = 2000


class Outcome(Enum):
    DONE = "d"
    DEFERRED = "x"  # the upstream page lagged the promised serial
    FAILED = "f"  # a download, verification or page failed

    @property
    def carried(self) -> bool:
        return self is not Outcome.DONE


@dataclass(frozen=True)
class LastRun:
    id: str
    started: float
    finished: float | None = None
    result: str = "running"  # running, ok, incomplete, failed
    reason: str | None = None
    kind: str = ""
    target: int | None = None
    projects: int = 0
    files: int = 0
    bytes: int = 0
    removed_files: int = 0
    deferred: int = 0


@dataclass(frozen=True)
class SyncState:
    serial: int | None = None
    cursor: int | None = None
    filters: str | None = None
    deferred: str | None = None  # storage path of the carried deferred list
    deferred_count: int = 0
    last_run: LastRun | None = None

    def dump(self) -> bytes:
        return json.dumps(asdict(self), indent=1, sort_keys=True).encode() + b"\n"

    @classmethod
    def load(cls, data: bytes, where: str) -> SyncState:
        try:
            raw = json.loads(data)
            last = raw.get("last_run")
            return cls(
                serial=_opt_int(raw.get("serial")),
                cursor=_opt_int(raw.get("cursor")),
                filters=raw.get("filters"),
                deferred=raw.get("deferred"),
                deferred_count=int(raw.get("deferred_count", 0)),
                last_run=LastRun(**last) if isinstance(last, dict) else None,
            )
        except (ValueError, TypeError, AttributeError) as exc:
            raise StorageError(
                f"{where} is damaged ({exc}); move it away to make the next sync a full one"
            ) from exc


def _opt_int(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {value!r:.40}")
    return value


async def load_state(storage: FileSystemStorage) -> SyncState:
    data = await storage.read_bytes(STATE, limit=1 << 20)
    return SyncState() if data is None else SyncState.load(data, str(storage.path(STATE)))


async def save_state(storage: FileSystemStorage, state: SyncState) -> None:
    await storage.write_bytes(STATE, state.dump())


@dataclass(frozen=True)
class RunMeta:
    id: str
    kind: str  # "changelog", "full" (list_packages_with_serial) or "root" (JSON /simple/)
    target: int  # the serial the mirror is at once every entry is applied
    started_from: int  # the upstream serial when the run started
    filters: str
    count: int
    started: float
    force: bool = False

    def dump(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def load(cls, data: bytes) -> RunMeta:
        raw = json.loads(data)
        return cls(**raw)


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)


@dataclass
class Finished:
    """Which entries have an outcome: all below ``watermark``, plus those in ``above``.

    ``carried``: the last outcome was deferred or failed (for the next run). ``retry``:
    the last outcome was a failure, which a resumed run tries again (it is not "finished"
    for ``in``). Both sets are as small as the number of such entries.
    """

    watermark: int = 0
    above: set[int] = field(default_factory=set)
    carried: set[int] = field(default_factory=set)
    retry: set[int] = field(default_factory=set)

    def add(self, index: int, outcome: Outcome) -> None:
        if outcome.carried:
            self.carried.add(index)
        else:
            self.carried.discard(index)
        if outcome is Outcome.FAILED:
            self.retry.add(index)
        else:
            self.retry.discard(index)
        if index < self.watermark:
            return
        self.above.add(index)
        while self.watermark in self.above:
            self.above.remove(self.watermark)
            self.watermark += 1

    @property
    def count(self) -> int:
        return self.watermark + len(self.above) - len(self.retry)

    def __contains__(self, index: int) -> bool:
        return (index < self.watermark or index in self.above) and index not in self.retry


def parse_progress(lines: Iterable[str]) -> Finished:
    finished = Finished()
    for line in lines:
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit():
            continue  # a line torn by a crash: that entry simply runs again
        try:
            outcome = Outcome(parts[1])
        except ValueError:
            continue
        finished.add(int(parts[0]), outcome)
    return finished


class RunJournal:
    """The plan of one run and its append-only progress."""

    def __init__(self, storage: FileSystemStorage, meta: RunMeta) -> None:
        self.storage = storage
        self.meta = meta
        self._fd: int | None = None
        self._written = 0
        self._synced = 0
        self._sync_lock = asyncio.Lock()

    # -- creation and opening -----------------------------------------------------------

    @classmethod
    async def create(
        cls,
        storage: FileSystemStorage,
        batches: AsyncIterator[list[PlanEntry]],
        make_meta: Callable[[int], RunMeta],
    ) -> RunJournal:
        """Write the plan (streamed, committed atomically), then ``run.json`` (made by
        ``make_meta`` from the entry count, once the plan is known)."""
        await discard_run(storage)
        writer = storage.writer(PLAN_FILE)
        count = 0
        try:
            async for batch in batches:
                if batch:
                    await writer.write("".join(e.dump() + "\n" for e in batch).encode())
                    count += len(batch)
            await writer.commit()
        finally:
            await writer.abort()
        meta = make_meta(count)
        await storage.write_bytes(RUN_META, meta.dump())
        return cls(storage, meta)

    @classmethod
    async def open(cls, storage: FileSystemStorage) -> RunJournal | None:
        data = await storage.read_bytes(RUN_META, limit=1 << 20)
        if data is None:
            return None
        try:
            meta = RunMeta.load(data)
        except (ValueError, TypeError) as exc:
            log.warning("sync_journal_unreadable", path=RUN_META, error=str(exc))
            await discard_run(storage)
            return None
        if not await storage.exists(PLAN_FILE):
            await discard_run(storage)
            return None
        return cls(storage, meta)

    # -- reading --------------------------------------------------------------------------

    async def finished(self) -> Finished:
        path = self.storage.path(PROGRESS)

        def scan() -> Finished:
            try:
                with path.open("r", encoding="ascii", errors="replace") as handle:
                    return parse_progress(handle)
            except FileNotFoundError:
                return Finished()

        return await asyncio.get_running_loop().run_in_executor(None, scan)

    async def entries(
        self, skip: Finished | None = None
    ) -> AsyncIterator[list[tuple[int, PlanEntry]]]:
        """The plan in order, in batches, without the entries in ``skip``."""
        index = 0
        async for lines in read_lines(self.storage.path(PLAN_FILE)):
            batch = []
            for line in lines:
                if skip is None or index not in skip:
                    batch.append((index, PlanEntry.load(line)))
                index += 1
            if batch:
                yield batch

    async def carried_entries(self) -> AsyncIterator[list[PlanEntry]]:
        """The entries that ended deferred or failed (for the next run)."""
        finished = await self.finished()
        if not finished.carried:
            return
        async for batch in self.entries():
            kept = [entry for index, entry in batch if index in finished.carried]
            if kept:
                yield kept

    # -- recording ------------------------------------------------------------------------

    async def record(self, index: int, outcome: Outcome) -> None:
        """Append one finished entry; returns once it is durable (group commit)."""
        if self._fd is None:
            path = self.storage.path(PROGRESS)
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.write(self._fd, f"{index} {outcome.value}\n".encode())
        self._written += 1
        wanted = self._written
        async with self._sync_lock:
            if self._synced >= wanted:
                return
            upto = self._written
            await asyncio.get_running_loop().run_in_executor(None, os.fdatasync, self._fd)
            self._synced = upto

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


async def discard_run(storage: FileSystemStorage) -> None:
    path = storage.path(RUN_DIR)
    await asyncio.get_running_loop().run_in_executor(
        None, lambda: shutil.rmtree(path, ignore_errors=True)
    )


async def write_deferred(
    storage: FileSystemStorage, rel: str, batches: AsyncIterator[list[PlanEntry]]
) -> int:
    writer = storage.writer(rel)
    count = 0
    try:
        async for batch in batches:
            await writer.write("".join(e.dump() + "\n" for e in batch).encode())
            count += len(batch)
        await writer.commit()
    finally:
        await writer.abort()
    return count


async def read_deferred(
    storage: FileSystemStorage, rel: str | None
) -> AsyncIterator[list[PlanEntry]]:
    if rel is None:
        return
    async for lines in read_lines(storage.path(rel)):
        batch = []
        for line in lines:
            try:
                batch.append(PlanEntry.load(line))
            except ValueError:
                log.warning("deferred_entry_unreadable", path=rel, line=line[:200])
        yield batch


async def read_lines(path: Path, batch: int = BATCH) -> AsyncIterator[list[str]]:
    """The lines of a text file, a batch at a time, read off the event loop."""
    loop = asyncio.get_running_loop()
    try:
        handle: IO[str] = await loop.run_in_executor(
            None, lambda: path.open("r", encoding="utf-8", errors="replace")
        )
    except FileNotFoundError:
        return

    def take() -> list[str]:
        lines = []
        for line in handle:
            stripped = line.strip()
            if stripped:
                lines.append(stripped)
            if len(lines) >= batch:
                break
        return lines

    try:
        while lines := await loop.run_in_executor(None, take):
            yield lines
    finally:
        handle.close()


def remove_stale_deferred(storage: FileSystemStorage, keep: str | None) -> None:
    """Delete deferred lists no state refers to (left by a crash between two steps)."""
    base = storage.path("state/sync")
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(base):
            rel = f"state/sync/{entry.name}"
            if entry.name.startswith("deferred-") and rel != keep:
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


def summary(meta: RunMeta, **values: Any) -> LastRun:
    return LastRun(id=meta.id, started=meta.started, kind=meta.kind, target=meta.target, **values)
