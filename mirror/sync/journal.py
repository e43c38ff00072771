"""Durable sync state in ``state/sync/``: what is applied, and the run in progress.

::

    state/sync/state.json       serial (everything up to it is in the mirror), cursor
                                (changelog read up to it), filters fingerprint, the
                                deferred list carried to the next run, the last run's summary
    state/sync/run/run.json     the run in progress: id, kind, target serial, entry count
    state/sync/run/todo         its plan, one PlanEntry per line, written once (atomically)
    state/sync/run/progress     append-only: "<index> d|x|f" per finished entry, fsynced
    state/sync/deferred-<id>    entries a finished run could not apply (stale or failed)

Progress is one short appended line per project, never a rewrite of the todo list, so
recording is O(1) per project. Lines are group-committed in the background, at most one
commit per ``COMMIT_INTERVAL``: each commit is the store's barrier (the directories that
the projects' renames changed are synced) and then one ``fdatasync`` of the log, so a
line never says "done" for a project whose files or pages could still be lost; a worker
does not wait for it. A run killed between two commits redoes those projects.

Resuming streams the todo and skips entries below the watermark (every entry before it
is finished) or in the small set of finished entries above it: memory stays bounded by
the workers' window.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import asdict, dataclass, field
from enum import Enum, StrEnum
from typing import Any

from mirror.core import layout
from mirror.core.changelog import PlanEntry
from mirror.core.record import opt_int
from mirror.errors import StorageError
from mirror.log import get_logger
from mirror.storage import AppendLog, Storage, read_lines

log = get_logger("mirror.sync.journal")

#: Seconds between two group commits of the progress log (at most).
COMMIT_INTERVAL = 0.05


class Outcome(Enum):
    DONE = "d"
    DEFERRED = "x"  # the upstream page lagged the promised serial
    FAILED = "f"  # a download, verification or page failed

    @property
    def carried(self) -> bool:
        return self is not Outcome.DONE


class RunKind(StrEnum):
    """Where a run's plan came from (``sync.plan``)."""

    CHANGELOG = "changelog"  # changelog_since_serial
    FULL = "full"  # list_packages_with_serial
    ROOT = "root"  # the JSON /simple/ root (no XML-RPC)


class RunResult(StrEnum):
    RUNNING = "running"
    OK = "ok"
    INCOMPLETE = "incomplete"  # some projects were carried to the next run
    FAILED = "failed"  # the run stopped (upstream unavailable); the next one resumes it
    INTERRUPTED = "interrupted"  # (status only) the process died while it was running


@dataclass(frozen=True)
class LastRun:
    id: str
    started: float
    finished: float | None = None
    result: RunResult = RunResult.RUNNING
    reason: str | None = None
    kind: RunKind | None = None
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
                serial=opt_int(raw.get("serial")),
                cursor=opt_int(raw.get("cursor")),
                filters=raw.get("filters"),
                deferred=raw.get("deferred"),
                deferred_count=int(raw.get("deferred_count", 0)),
                last_run=_last_run(last) if isinstance(last, dict) else None,
            )
        except (ValueError, TypeError, AttributeError) as exc:
            raise StorageError(
                f"{where} is damaged ({exc}); move it away to make the next sync a full one"
            ) from exc


def _last_run(raw: dict[str, Any]) -> LastRun:
    kind = raw.get("kind")
    return LastRun(
        **{
            **raw,
            "result": RunResult(raw.get("result", RunResult.RUNNING)),
            "kind": RunKind(kind) if kind else None,
        }
    )


async def load_state(storage: Storage) -> SyncState:
    data = await storage.read_bytes(layout.SYNC_STATE, limit=1 << 20)
    if data is None:
        return SyncState()
    return SyncState.load(data, f"{layout.SYNC_STATE} in {storage.describe()}")


async def save_state(storage: Storage, state: SyncState) -> None:
    await storage.write_bytes(layout.SYNC_STATE, state.dump())


@dataclass(frozen=True)
class RunMeta:
    id: str
    kind: RunKind
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
        return cls(**{**raw, "kind": RunKind(raw["kind"])})


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


def _progress_lines(lines: Iterable[str]) -> Iterable[tuple[int, Outcome]]:
    for line in lines:
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit():
            continue  # a line torn by a crash: that entry simply runs again
        try:
            outcome = Outcome(parts[1])
        except ValueError:
            continue
        yield int(parts[0]), outcome


def parse_progress(lines: Iterable[str]) -> Finished:
    finished = Finished()
    for index, outcome in _progress_lines(lines):
        finished.add(index, outcome)
    return finished


class RunJournal:
    """The plan of one run and its append-only progress."""

    def __init__(self, storage: Storage, meta: RunMeta) -> None:
        self.storage = storage
        self.meta = meta
        self._log: AppendLog | None = None
        self._committer: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._closing = asyncio.Event()
        self._failure: BaseException | None = None

    # -- creation and opening -----------------------------------------------------------

    @classmethod
    async def create(
        cls,
        storage: Storage,
        batches: AsyncIterator[list[PlanEntry]],
        make_meta: Callable[[int], RunMeta],
    ) -> RunJournal:
        """Write the plan (streamed, committed atomically), then ``run.json`` (made by
        ``make_meta`` from the entry count, once the plan is known)."""
        await discard_run(storage)
        count = await _write_entries(storage, layout.SYNC_PLAN, batches)
        meta = make_meta(count)
        await storage.write_bytes(layout.SYNC_RUN_META, meta.dump())
        return cls(storage, meta)

    @classmethod
    async def open(cls, storage: Storage) -> RunJournal | None:
        data = await storage.read_bytes(layout.SYNC_RUN_META, limit=1 << 20)
        if data is None:
            return None
        try:
            meta = RunMeta.load(data)
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("sync_journal_unreadable", path=layout.SYNC_RUN_META, error=str(exc))
            await discard_run(storage)
            return None
        if not await storage.exists(layout.SYNC_PLAN):
            await discard_run(storage)
            return None
        return cls(storage, meta)

    # -- reading --------------------------------------------------------------------------

    async def finished(self) -> Finished:
        finished = Finished()
        async for lines in read_lines(self.storage, layout.SYNC_PROGRESS):
            for index, outcome in _progress_lines(lines):
                finished.add(index, outcome)
        return finished

    async def entries(
        self, skip: Finished | None = None
    ) -> AsyncIterator[list[tuple[int, PlanEntry]]]:
        """The plan in order, in batches, without the entries in ``skip``."""
        index = 0
        async for lines in read_lines(self.storage, layout.SYNC_PLAN):
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
        """Append one finished entry; the next group commit makes it durable (``close``
        waits for the last one). Raises what made an earlier commit fail."""
        if self._failure is not None:
            raise self._failure
        if self._log is None:
            self._log = self.storage.open_append(layout.SYNC_PROGRESS)
        self._log.append(f"{index} {outcome.value}\n".encode())
        if self._committer is None:
            self._committer = asyncio.create_task(self._commit_loop(self._log))
        self._wake.set()

    async def _commit_loop(self, progress: AppendLog) -> None:
        while not self._closing.is_set():
            await self._wake.wait()
            self._wake.clear()
            if self._closing.is_set():
                return  # close() commits what is left
            try:
                await progress.sync()
            except Exception as exc:  # OSError mostly: raised to the next record()/close()
                self._failure = exc
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), COMMIT_INTERVAL)

    async def close(self) -> None:
        """Commit what is left; raises what made a commit fail."""
        committer, self._committer = self._committer, None
        if committer is not None:
            self._closing.set()
            self._wake.set()
            await committer
            self._closing.clear()
            self._wake.clear()
        progress, self._log = self._log, None
        failure, self._failure = self._failure, None
        if progress is not None:
            if failure is None:
                await progress.close()
            else:
                with contextlib.suppress(Exception):
                    await progress.close()
        if failure is not None:
            raise failure


async def discard_run(storage: Storage) -> None:
    await storage.delete_tree(layout.SYNC_RUN_DIR)


async def _write_entries(
    storage: Storage, rel: str, batches: AsyncIterator[list[PlanEntry]]
) -> int:
    writer = storage.writer(rel)
    count = 0
    try:
        async for batch in batches:
            if batch:
                await writer.write("".join(e.dump() + "\n" for e in batch).encode())
                count += len(batch)
        await writer.commit()
    finally:
        await writer.abort()
    return count


async def write_deferred(
    storage: Storage, rel: str, batches: AsyncIterator[list[PlanEntry]]
) -> int:
    return await _write_entries(storage, rel, batches)


async def read_deferred(storage: Storage, rel: str | None) -> AsyncIterator[list[PlanEntry]]:
    if rel is None:
        return
    async for lines in read_lines(storage, rel):
        batch = []
        for line in lines:
            try:
                batch.append(PlanEntry.load(line))
            except ValueError:
                log.warning("deferred_entry_unreadable", path=rel, line=line[:200])
        yield batch


async def remove_stale_deferred(storage: Storage, keep: str | None) -> None:
    """Delete deferred lists no state refers to (left by a crash between two steps)."""
    async for names in storage.iter_names(layout.SYNC_DIR):
        for name in names:
            rel = f"{layout.SYNC_DIR}/{name}"
            if name.startswith(layout.SYNC_DEFERRED_PREFIX) and rel != keep:
                await storage.delete(rel)


def summary(meta: RunMeta, **values: Any) -> LastRun:
    return LastRun(id=meta.id, started=meta.started, kind=meta.kind, target=meta.target, **values)
