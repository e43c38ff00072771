"""One plan entry applied: the project brought to the serial the changelog promised.

The work is the ``ProjectKeeper``'s (``KeepMode.FULL``: every kept file and ``.metadata``
fetched and verified before the page lists them); what is the sync's own is retrying a
page that lags the promised serial (a lagging CDN), with backoff, then deferring it to the
next run, and turning failures into the entry's outcome.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from mirror.core.changelog import EntryKind, PlanEntry
from mirror.core.verdict import PageVerdict, Promise
from mirror.errors import IntegrityError, StorageError, UpstreamError, UpstreamUnavailable
from mirror.log import get_logger
from mirror.project.keeper import KeepMode, KeepResult, ProjectKeeper
from mirror.sync.journal import Outcome

log = get_logger("mirror.sync.project")


@dataclass(frozen=True)
class ProjectResult:
    project: str
    outcome: Outcome
    serial: int | None = None
    files_added: int = 0
    bytes_added: int = 0
    files_removed: int = 0
    reason: str | None = None
    # The failure was the upstream being unreachable (the engine stops after a run of them).
    unavailable: bool = False


class ProjectSyncer:
    def __init__(
        self,
        keeper: ProjectKeeper,
        *,
        stale_retries: int = 3,
        stale_backoff: float = 1.0,
    ) -> None:
        self.keeper = keeper
        self.stale_retries = stale_retries
        self.stale_backoff = stale_backoff

    async def apply(self, entry: PlanEntry) -> ProjectResult:
        try:
            if entry.kind is EntryKind.DROP:
                removed = await self.keeper.remove(entry.project)
                if removed:
                    log.info("project_dropped", project=entry.project, files=removed)
                return ProjectResult(entry.project, Outcome.DONE, files_removed=removed)
            return await self._sync(entry)
        except OSError as exc:
            raise StorageError(
                f"storage error while syncing {entry.project}: {exc}; "
                "fix it (disk space, permissions), then run sync again to resume"
            ) from exc
        except (UpstreamError, IntegrityError) as exc:
            log.warning("project_failed", project=entry.project, error=str(exc))
            return ProjectResult(
                entry.project,
                Outcome.FAILED,
                reason=str(exc),
                unavailable=isinstance(exc, UpstreamUnavailable),
            )

    async def _sync(self, entry: PlanEntry) -> ProjectResult:
        promise = Promise(entry.serial, entry.expect_gone)
        result = KeepResult(PageVerdict.STALE, "not fetched")
        for attempt in range(self.stale_retries + 1):
            if attempt:
                await asyncio.sleep(self.stale_backoff * 2 ** (attempt - 1))
            result = await self.keeper.update(entry.project, promise, mode=KeepMode.FULL)
            if result.verdict is not PageVerdict.STALE:
                break
        if result.verdict is PageVerdict.STALE:
            log.warning("project_deferred", project=entry.project, reason=result.reason)
            return ProjectResult(entry.project, Outcome.DEFERRED, reason=result.reason)
        if result.verdict is PageVerdict.GONE:
            log.info("project_removed", project=entry.project, files=result.files_removed)
        return ProjectResult(
            entry.project,
            Outcome.DONE,
            serial=result.serial,
            files_added=result.files_added,
            bytes_added=result.bytes_added,
            files_removed=result.files_removed,
        )
