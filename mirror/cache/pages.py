"""Project pages in pull-through mode: kept, served for ``index-ttl``, then revalidated.

What is the cache's own: the TTL, the negative cache (``negative-ttl``), one upstream
request per project at a time (single flight), bounded waits on it (a stale page is served
when its revalidation has not answered within ``revalidate-timeout``, and the revalidation
goes on in the background: ``cache.flights``), serving the held page when the upstream
fails (stale-if-error) or the circuit breaker is open (``cache.breaker``), and the records
of pages known to be held, in memory, so that a hit costs no disk I/O before sendfile.
Fetching, judging, filtering and writing a page is the ``ProjectKeeper``'s.

The negative cache ("the upstream has no such project") is held in memory, bounded
(``NEGATIVE_ENTRIES``, oldest first, and nothing older than ``negative-ttl``): an entry
only saves one upstream request per name and ``negative-ttl``, so losing it on a restart
costs one request, while a file per unknown name grew without bound. Several workers each
keep their own; a page held on disk always wins over a negative entry.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from enum import Enum

from mirror.cache.breaker import CircuitBreaker
from mirror.cache.flights import Flights
from mirror.core.freshness import Freshness, decide, negative_is_fresh
from mirror.core.record import PageMeta, ProjectRecord
from mirror.core.verdict import NO_PROMISE, PageVerdict, Promise
from mirror.errors import TrustError, UpstreamError, UpstreamNotFound
from mirror.log import get_logger
from mirror.project.keeper import KeepResult, ProjectKeeper

log = get_logger("mirror.pages")

SERVED_RECORDS = 50_000
#: Names remembered as unknown upstream, at most.
NEGATIVE_ENTRIES = 10_000


class CacheResult(Enum):
    """What the cache did for a request (the access line's ``cache`` field)."""

    HIT = "hit"
    MISS = "miss"
    STALE = "stale"
    REVALIDATED = "revalidated"
    NEGATIVE = "negative"
    CLIENT_GONE = "miss-client-gone"

    @property
    def from_store(self) -> bool:
        """Answered with what the mirror held (a hit, for hit rates)."""
        return self in (CacheResult.HIT, CacheResult.STALE, CacheResult.REVALIDATED)


class PageCache:
    def __init__(
        self,
        keeper: ProjectKeeper,
        *,
        ttl: float,
        negative_ttl: float,
        revalidate_timeout: float = 2.0,
        miss_timeout: float = 30.0,
        breaker: CircuitBreaker | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.keeper = keeper
        self.storage = keeper.storage
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self.clock = clock
        self.breaker = breaker if breaker is not None else CircuitBreaker()
        self.flights: Flights[KeepResult] = Flights(
            self.breaker, revalidate_timeout=revalidate_timeout, miss_timeout=miss_timeout
        )
        # Name → when the upstream said it has no such project (oldest first).
        self._negative: OrderedDict[str, float] = OrderedDict()
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

    def known_held(self, project: str) -> bool:
        """Is ``project``'s page known (in memory) to be held?"""
        return project in self._served

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
        record, has_page = await asyncio.gather(
            self.keeper.pages.record(project), self.keeper.pages.has_page(project)
        )
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
            return await self._revalidate(project)
        if self._negative_is_fresh(project):
            raise UpstreamNotFound(f"simple/{project}/")
        result = await self.refresh(project)
        if result.verdict is PageVerdict.GONE:
            raise UpstreamNotFound(f"simple/{project}/")
        if result.verdict is PageVerdict.CURRENT:
            return CacheResult.MISS
        return CacheResult.REVALIDATED

    async def _revalidate(self, project: str) -> CacheResult:
        """A held page past its TTL: revalidated within ``revalidate-timeout``, or served
        as held (the revalidation, if any, goes on and serves the next request)."""
        try:
            result = await self.flights.revalidate(
                project, lambda: self._refresh(project, NO_PROMISE), f"simple/{project}/"
            )
        except (UpstreamError, TrustError) as exc:
            if isinstance(exc, UpstreamNotFound):
                raise
            # The page held (and verified) before stays served.
            event = "trust_stale_served" if isinstance(exc, TrustError) else "upstream_stale_served"
            log.warning(event, project=project, error=str(exc))
            return CacheResult.STALE
        if result is None:
            return CacheResult.STALE
        if result.verdict is PageVerdict.GONE:
            raise UpstreamNotFound(f"simple/{project}/")
        return CacheResult.REVALIDATED

    async def refresh(
        self, project: str, promise: Promise = NO_PROMISE, *, wait: float | None = None
    ) -> KeepResult:
        """Fetch or revalidate now; concurrent callers share one upstream request.

        Waits ``wait`` seconds at most (default: ``[upstream] timeout``; ``math.inf``:
        as long as it takes), then raises UpstreamTimeout while the request goes on.
        """
        operation = lambda: self._refresh(project, promise)  # noqa: E731
        if wait is not None and math.isinf(wait):
            return await self.flights.wait(project, operation)
        return await self.flights.fetch(project, operation, f"simple/{project}/", wait)

    async def _refresh(self, project: str, promise: Promise) -> KeepResult:
        result = await self.keeper.update(project, promise)
        if result.verdict is PageVerdict.GONE:
            self._served.pop(project, None)
            if not self.keeper.excluded(project):
                self._note_negative(project)
        else:
            self.forget_negative(project)
            if result.record is not None:
                self._remember(project, result.record)
        return result

    async def close(self) -> None:
        """Cancel the refreshes in flight (the app is stopping)."""
        await self.flights.close()

    async def may_refresh_for_unknown_file(self, project: str) -> bool:
        """A file not on the held page may be new; ask upstream at most once per
        ``negative-ttl`` so that requests for made-up files cannot hammer it."""
        if self.offline:
            return False
        record = await self.keeper.pages.record(project)
        return record is None or self.clock() - record.meta.fetched_at >= self.negative_ttl

    # -- the negative cache ------------------------------------------------------------

    def _negative_is_fresh(self, project: str) -> bool:
        recorded_at = self._negative.get(project)
        if negative_is_fresh(recorded_at=recorded_at, now=self.clock(), ttl=self.negative_ttl):
            return True
        if recorded_at is not None:
            del self._negative[project]
        return False

    def _note_negative(self, project: str) -> None:
        now = self.clock()
        self._negative.pop(project, None)
        self._negative[project] = now
        # Oldest first: drop what expired, then what is over the bound.
        while self._negative:
            name, recorded_at = next(iter(self._negative.items()))
            if len(self._negative) <= NEGATIVE_ENTRIES and negative_is_fresh(
                recorded_at=recorded_at, now=now, ttl=self.negative_ttl
            ):
                break
            del self._negative[name]

    def forget_negative(self, project: str) -> None:
        """The upstream has ``project`` now (the changelog said so, or a page came)."""
        self._negative.pop(project, None)

    @property
    def negative_entries(self) -> int:
        return len(self._negative)
