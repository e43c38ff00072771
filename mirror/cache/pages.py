"""Project pages in pull-through mode: kept, served for ``index-ttl``, then revalidated.

What is the cache's own: the TTL, the negative cache (``negative-ttl``), one upstream
request per project at a time (single flight), serving the held page when the upstream
fails (stale-if-error), and the records of pages known to be held, in memory, so that a
hit costs no disk I/O before sendfile. Fetching, judging, filtering and writing a page is
the ``ProjectKeeper``'s.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from enum import Enum

from mirror.core import layout
from mirror.core.freshness import Freshness, decide, negative_is_fresh
from mirror.core.record import PageMeta, ProjectRecord
from mirror.core.verdict import NO_PROMISE, PageVerdict, Promise
from mirror.errors import TrustError, UpstreamError, UpstreamNotFound
from mirror.log import get_logger
from mirror.project.keeper import KeepResult, ProjectKeeper

log = get_logger("mirror.pages")

SERVED_RECORDS = 50_000


class CacheResult(Enum):
    """What the cache did for a request (the access line's ``cache`` field)."""

    HIT = "hit"
    MISS = "miss"
    STALE = "stale"
    REVALIDATED = "revalidated"
    NEGATIVE = "negative"
    CLIENT_GONE = "miss-client-gone"


class PageCache:
    def __init__(
        self,
        keeper: ProjectKeeper,
        *,
        ttl: float,
        negative_ttl: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.keeper = keeper
        self.storage = keeper.storage
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self.clock = clock
        self._inflight: dict[str, asyncio.Task[KeepResult]] = {}
        # Records of pages known to be held. Only this process writes the pages it serves
        # in pull-through mode; a sync beside it runs with mode = "mirror", where freshness
        # is the sync's business, not the TTL's.
        self._served: OrderedDict[str, ProjectRecord] = OrderedDict()
        # Whoever changed the project here (a refresh, the sync in this process), its
        # record is read again: a served page's serial header never lags its bytes.
        keeper.pages.watchers.append(self._forget)

    def _forget(self, project: str) -> None:
        self._served.pop(project, None)

    @property
    def offline(self) -> bool:
        return self.keeper.offline

    def _remember(self, project: str, record: ProjectRecord) -> None:
        self._served[project] = record
        self._served.move_to_end(project)
        while len(self._served) > SERVED_RECORDS:
            self._served.popitem(last=False)

    async def served_record(self, project: str) -> ProjectRecord | None:
        """The record of a page known to be held (memory first: the hot path of a hit)."""
        record = self._served.get(project)
        return record if record is not None else await self.keeper.pages.record(project)

    def _fresh(self, record: ProjectRecord) -> bool:
        decision = decide(fetched_at=record.meta.fetched_at, now=self.clock(), ttl=self.ttl)
        return decision is Freshness.SERVE

    async def ensure(self, project: str) -> CacheResult:
        """Make the project's pages current enough to serve.

        Raises UpstreamNotFound when upstream has no such project (or the filters exclude
        it), and other UpstreamErrors when nothing usable is held and upstream cannot be
        reached.
        """
        if self.keeper.excluded(project):
            await self.keeper.remove(project)
            raise UpstreamNotFound(f"simple/{project}/ (excluded by the [sync] filters)")
        known = self._served.get(project)
        if known is not None and (self.offline or self._fresh(known)):
            return CacheResult.HIT
        record = await self.keeper.pages.record(project)
        has_page = await self.keeper.pages.has_page(project)
        if self.offline:
            if not has_page:
                raise UpstreamNotFound(f"simple/{project}/")
            self._remember(project, record or ProjectRecord(PageMeta(fetched_at=0.0)))
            return CacheResult.HIT
        held = record if has_page else None
        if held is not None:
            self._remember(project, held)
            if self._fresh(held):
                return CacheResult.HIT
        elif await self._negative_is_fresh(project):
            raise UpstreamNotFound(f"simple/{project}/")
        try:
            result = await self.refresh(project)
        except (UpstreamError, TrustError) as exc:
            if held is None or isinstance(exc, UpstreamNotFound):
                raise
            # The page held (and verified) before stays served.
            event = "trust_stale_served" if isinstance(exc, TrustError) else "upstream_stale_served"
            log.warning(event, project=project, error=str(exc))
            return CacheResult.STALE
        if result.verdict is PageVerdict.GONE:
            raise UpstreamNotFound(f"simple/{project}/")
        if held is None and result.verdict is PageVerdict.CURRENT:
            return CacheResult.MISS
        return CacheResult.REVALIDATED

    async def refresh(self, project: str, promise: Promise = NO_PROMISE) -> KeepResult:
        """Fetch or revalidate now; concurrent callers share one upstream request."""
        task = self._inflight.get(project)
        if task is None:
            task = asyncio.create_task(self._refresh(project, promise))
            self._inflight[project] = task
            task.add_done_callback(lambda _t: self._inflight.pop(project, None))
        return await asyncio.shield(task)

    async def _refresh(self, project: str, promise: Promise) -> KeepResult:
        result = await self.keeper.update(project, promise)
        if result.verdict is PageVerdict.GONE:
            self._served.pop(project, None)
            if not self.keeper.excluded(project):
                await self.storage.write_bytes(layout.state_negative(project), b"", durable=False)
        elif result.record is not None:
            self._remember(project, result.record)
        return result

    async def may_refresh_for_unknown_file(self, project: str) -> bool:
        """A file not on the held page may be new; ask upstream at most once per
        ``negative-ttl`` so that requests for made-up files cannot hammer it."""
        if self.offline:
            return False
        record = await self.keeper.pages.record(project)
        return record is None or self.clock() - record.meta.fetched_at >= self.negative_ttl

    async def _negative_is_fresh(self, project: str) -> bool:
        info = await self.storage.stat(layout.state_negative(project))
        return negative_is_fresh(
            recorded_at=info.mtime if info else None, now=self.clock(), ttl=self.negative_ttl
        )
