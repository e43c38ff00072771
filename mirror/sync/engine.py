"""The sync engine: plan → journal → workers → finalize. One run per call, resumable.

A run is planned (``sync.plan``) into the journal (``sync.journal``), then ``workers``
projects are applied at a time (``sync.project``), each finished entry recorded durably.
When every entry is finished the root pages are rebuilt from ``web/`` and the state moves:
``serial`` to the run's target, or to just below the lowest serial a deferred or failed
project still needs; those entries are carried to the next run. A killed run is resumed
first by the next call, which then plans a fresh run up to the current upstream serial.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mirror.concurrency import KeyedLocks
from mirror.config import SyncConfig
from mirror.core import layout
from mirror.core.changelog import PlanEntry
from mirror.core.filters import Filters
from mirror.errors import LockHeld, MirrorError, StorageError
from mirror.log import get_logger
from mirror.project.root import rebuild_root
from mirror.storage import Storage
from mirror.sync.journal import (
    Outcome,
    RunJournal,
    RunKind,
    RunMeta,
    RunResult,
    SyncState,
    discard_run,
    load_state,
    new_run_id,
    read_deferred,
    remove_stale_deferred,
    save_state,
    summary,
    write_deferred,
)
from mirror.sync.plan import PlanTarget, changelog_plan, full_plan, root_list, xmlrpc_list
from mirror.sync.progress import Progress
from mirror.sync.project import ProjectResult, ProjectSyncer
from mirror.sync.xmlrpc import ChangelogClient, XmlRpcUnavailable

if TYPE_CHECKING:
    from mirror.services import Services

log = get_logger("mirror.sync")


class SyncLocked(MirrorError):
    """Another sync holds the lock of this mirror."""


def sync_lock_error(storage: Storage, exc: LockHeld) -> SyncLocked:
    who = f" by pid {exc.holder}" if exc.holder else ""
    return SyncLocked(
        f"another sync is running on this mirror (lock {exc.lock} held{who}); "
        "wait for it to finish or stop it, then run sync again"
    )


def first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error to report from a failed task group: its first MirrorError, else the group."""
    for leaf in _leaves(group):
        if isinstance(leaf, MirrorError):
            return leaf
        if isinstance(leaf, OSError):
            return StorageError(f"storage error: {leaf}; fix it, then run sync again to resume")
    return group


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


@dataclass(frozen=True)
class SyncResult:
    ok: bool
    serial: int | None
    upstream_serial: int | None
    reason: str | None = None
    projects: int = 0
    files: int = 0
    bytes: int = 0
    removed: int = 0
    deferred: int = 0
    failed: int = 0


@dataclass
class _Execution:
    """What one pass over a journal did."""

    aborted: str | None = None
    first_deferred: str | None = None
    first_failed: str | None = None


class SyncEngine:
    def __init__(
        self,
        services: Services,
        *,
        progress: Progress | None = None,
        stale_backoff: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        assert services.upstream is not None, "a sync needs the upstream"
        self.storage = services.storage
        self.upstream = services.upstream
        self.config: SyncConfig = services.config.sync
        self.filters: Filters = services.keeper.filters
        self.progress = progress or Progress()
        self.clock = clock
        self.changelog = ChangelogClient(self.upstream)
        self.syncer = ProjectSyncer(
            services.keeper,
            stale_retries=self.config.stale_retries,
            stale_backoff=stale_backoff,
        )
        config = self.config
        # The workers' projects share their download slots: files of several projects are
        # in flight while others fetch their pages or write them.
        services.keeper.share_downloads(config.workers * config.file_workers)
        # After this many projects in a row failed with the upstream unreachable, the run
        # stops (its journal stays, the next sync resumes) instead of failing them all.
        self.outage_threshold = max(10, 2 * config.workers)

    async def run(self, *, locked: bool = False) -> SyncResult:
        """One sync; raises SyncLocked at once if another holds this mirror's lock.

        ``locked``: the caller already holds it (the command line takes it before opening
        the storage, whose start-up clean-up must not touch a running sync's temp files).
        """
        if locked:
            return await self._run_locked()
        lock = self.storage.lock(layout.SYNC_LOCK)
        try:
            lock.acquire()
        except LockHeld as exc:
            raise sync_lock_error(self.storage, exc) from exc
        try:
            return await self._run_locked()
        finally:
            lock.release()

    async def _run_locked(self) -> SyncResult:
        await self.syncer.keeper.intents.replay()
        fingerprint = self.filters.fingerprint()
        state = await load_state(self.storage)
        journal = await RunJournal.open(self.storage)
        if journal is not None:
            last = state.last_run
            if last is not None and last.id == journal.meta.id and last.finished is not None:
                await discard_run(self.storage)  # finalized; only the clean-up was missed
                journal = None
            elif journal.meta.filters != fingerprint:
                log.warning("sync_run_abandoned", run=journal.meta.id, reason="filters changed")
                await discard_run(self.storage)
                journal = None
        if journal is not None:
            log.info(
                "sync_resuming",
                run=journal.meta.id,
                kind=journal.meta.kind,
                target=journal.meta.target,
                entries=journal.meta.count,
            )
            execution = await self._execute(journal, state)
            state = await load_state(self.storage)
            if execution.aborted:
                return self._result(state, journal.meta.started_from, execution)
        journal = await self._plan(state, fingerprint)
        state = await load_state(self.storage)
        execution = await self._execute(journal, state)
        state = await load_state(self.storage)
        return self._result(state, journal.meta.started_from, execution)

    def _result(self, state: SyncState, started_from: int, execution: _Execution) -> SyncResult:
        p = self.progress
        reached = state.serial is not None and state.serial >= started_from
        reason = None
        if execution.aborted:
            reason = execution.aborted
        elif not reached:
            reason = (
                state.last_run.reason
                if state.last_run and state.last_run.reason
                else f"the mirror is at serial {state.serial}, upstream at {started_from}"
            )
        return SyncResult(
            ok=reached and not execution.aborted,
            serial=state.serial,
            upstream_serial=started_from,
            reason=reason,
            projects=p.done,
            files=p.files,
            bytes=p.bytes,
            removed=p.removed,
            deferred=p.deferred,
            failed=p.failed,
        )

    # -- planning -------------------------------------------------------------------------

    async def _plan(self, state: SyncState, fingerprint: str) -> RunJournal:
        full = state.cursor is None or state.filters != fingerprint
        force = state.filters is not None and state.filters != fingerprint
        target = PlanTarget(serial=0)
        carried: dict[str, PlanEntry] = {}
        async for batch in read_deferred(self.storage, state.deferred):
            for entry in batch:
                carried[entry.project] = entry
        upstream_serial: int | None
        try:
            upstream_serial = await self.changelog.last_serial()
        except XmlRpcUnavailable as exc:
            log.warning("xmlrpc_unavailable", error=str(exc), fallback="JSON /simple/ root")
            upstream_serial = None
        batches: AsyncIterator[list[PlanEntry]]
        if upstream_serial is not None and not full:
            assert state.cursor is not None
            kind = RunKind.CHANGELOG
            batches = changelog_plan(
                self.changelog, self.filters, state.cursor, upstream_serial, target, carried
            )
        elif upstream_serial is not None:
            kind = RunKind.FULL
            target.serial = upstream_serial
            listing = xmlrpc_list(self.changelog)
            batches = full_plan(self.storage, listing, self.filters, force=force, target=target)
        else:
            kind = RunKind.ROOT
            listing = root_list(self.upstream, target)
            batches = full_plan(self.storage, listing, self.filters, force=force, target=target)
        run_id = new_run_id()
        started = self.clock()
        log.info("sync_planning", run=run_id, kind=kind, cursor=state.cursor, force=force)

        def make_meta(count: int) -> RunMeta:
            return RunMeta(
                id=run_id,
                kind=kind,
                target=target.serial,
                started_from=upstream_serial if upstream_serial is not None else target.serial,
                filters=fingerprint,
                count=count,
                started=started,
                force=force,
            )

        journal = await RunJournal.create(self.storage, batches, make_meta)
        log.info(
            "sync_planned",
            run=run_id,
            kind=kind,
            target=journal.meta.target,
            entries=journal.meta.count,
            listed=target.listed,
        )
        await save_state(self.storage, dataclasses.replace(state, last_run=summary(journal.meta)))
        return journal

    # -- execution ------------------------------------------------------------------------

    async def _execute(self, journal: RunJournal, state: SyncState) -> _Execution:
        finished = await journal.finished()
        p = self.progress
        p.total += journal.meta.count
        p.done += finished.count
        execution = _Execution()
        workers = self.config.workers
        queue: asyncio.Queue[tuple[int, PlanEntry] | None] = asyncio.Queue(maxsize=2 * workers)
        in_order = KeyedLocks()
        unavailable_in_a_row = 0

        async def produce() -> None:
            async for batch in journal.entries(skip=finished):
                if execution.aborted:
                    break
                for item in batch:
                    await queue.put(item)
            for _ in range(workers):
                await queue.put(None)

        async def apply(entry: PlanEntry) -> ProjectResult:
            # The same project twice in a plan: one at a time, in order.
            async with in_order.hold(entry.project):
                return await self.syncer.apply(entry)

        async def consume() -> None:
            nonlocal unavailable_in_a_row
            while (item := await queue.get()) is not None:
                if execution.aborted:
                    continue
                index, entry = item
                result = await apply(entry)
                # Failures are retried when the run resumes; deferrals wait for the next run.
                await journal.record(index, result.outcome)
                self._count(result, execution)
                unavailable_in_a_row = unavailable_in_a_row + 1 if result.unavailable else 0
                if unavailable_in_a_row >= self.outage_threshold and not execution.aborted:
                    execution.aborted = (
                        f"upstream unavailable ({result.reason}); "
                        "run sync again to resume where this run stopped"
                    )

        try:
            # Renames become durable at the journal's group commits, which come before
            # the journal says "done" (see sync.journal), not one directory sync per file.
            with self.storage.deferred_durability():
                async with asyncio.TaskGroup() as group:
                    group.create_task(produce())
                    for _ in range(workers):
                        group.create_task(consume())
        except ExceptionGroup as group:
            # A worker hit something no project can work around (storage): one clear error.
            raise first_error(group) from group
        finally:
            await journal.close()
        if execution.aborted:
            log.error("sync_aborted", run=journal.meta.id, reason=execution.aborted)
            last = summary(
                journal.meta,
                finished=self.clock(),
                result=RunResult.FAILED,
                reason=execution.aborted,
                **self._totals(),
            )
            await save_state(self.storage, dataclasses.replace(state, last_run=last))
            return execution
        await self._finalize(journal, state, execution)
        return execution

    def _count(self, result: ProjectResult, execution: _Execution) -> None:
        p = self.progress
        p.done += 1
        p.files += result.files_added
        p.bytes += result.bytes_added
        p.removed += result.files_removed
        if result.outcome is Outcome.DEFERRED:
            p.deferred += 1
            execution.first_deferred = execution.first_deferred or (
                f"{result.project}: {result.reason}"
            )
        elif result.outcome is Outcome.FAILED:
            p.failed += 1
            execution.first_failed = execution.first_failed or f"{result.project}: {result.reason}"

    def _totals(self) -> dict[str, int]:
        p = self.progress
        return {
            "projects": p.done,
            "files": p.files,
            "bytes": p.bytes,
            "removed_files": p.removed,
            "deferred": p.deferred + p.failed,
        }

    async def _finalize(self, journal: RunJournal, state: SyncState, execution: _Execution) -> None:
        meta = journal.meta
        lowest: int | None = None

        async def carried() -> AsyncIterator[list[PlanEntry]]:
            nonlocal lowest
            async for batch in journal.carried_entries():
                low = min(entry.serial for entry in batch)
                lowest = low if lowest is None else min(lowest, low)
                yield batch

        rel = layout.sync_deferred(meta.id)
        count = await write_deferred(self.storage, rel, carried())
        serial = meta.target
        if count == 0:
            await self.storage.delete(rel)
        elif lowest is not None:
            serial = max(min(meta.target, lowest - 1), 0)
        if meta.count or not await self.storage.exists(layout.simple_root(layout.PAGE_V1_JSON)):
            projects = await rebuild_root(self.storage, serial)
            log.info("root_rebuilt", projects=projects, serial=serial)
        reason = None
        if count:
            details = "; ".join(
                text
                for text in (
                    execution.first_deferred and f"stale page ({execution.first_deferred})",
                    execution.first_failed and f"failed ({execution.first_failed})",
                )
                if text
            )
            reason = (
                f"{count} project(s) not applied and carried to the next run, first: "
                f"{details or 'from an earlier pass'}; run sync again later"
            )
        new_state = SyncState(
            serial=serial,
            cursor=meta.target,
            filters=meta.filters,
            deferred=rel if count else None,
            deferred_count=count,
            last_run=summary(
                meta,
                finished=self.clock(),
                result=RunResult.OK if count == 0 else RunResult.INCOMPLETE,
                reason=reason,
                **self._totals(),
            ),
        )
        await save_state(self.storage, new_state)
        await remove_stale_deferred(self.storage, new_state.deferred)
        await discard_run(self.storage)
        log.info(
            "sync_run_finished",
            run=meta.id,
            kind=meta.kind,
            serial=serial,
            target=meta.target,
            carried=count,
        )
