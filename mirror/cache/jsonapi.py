"""The JSON API (``/pypi/<project>/json``, ``/pypi/<project>/<version>/json``), cached.

An answer is as fresh as its project's page: it is used while it was cut to the page as
held now, and fetched again (conditionally) after the page was. What it lists is what the
page lists (``project.jsonapi.JsonApiStore.refresh``). Waits are bounded as for pages
(``cache.flights``): a held answer is served when its refresh has not answered within
``revalidate-timeout``, or at once when the page itself was just served stale or the
circuit breaker is open.
"""

from __future__ import annotations

from collections.abc import Awaitable

from mirror.cache.flights import Flights
from mirror.cache.pages import CacheResult, PageCache
from mirror.core import layout
from mirror.errors import UpstreamError, UpstreamNotFound
from mirror.log import get_logger
from mirror.project.jsonapi import JsonResult

log = get_logger("mirror.jsonapi")


class JsonApiCache:
    def __init__(self, pages: PageCache) -> None:
        self.pages = pages
        self.keeper = pages.keeper
        self.flights: Flights[JsonResult] = Flights(
            pages.breaker,
            revalidate_timeout=pages.flights.revalidate_timeout,
            miss_timeout=pages.flights.miss_timeout,
        )

    async def ensure(self, project: str, version: str | None) -> CacheResult:
        """Make the answer servable from ``layout.json_api_rel(project, version)``.

        Raises UpstreamNotFound when the project or version is unknown or not kept.
        """
        page_result = await self.pages.ensure(project)
        rel = layout.json_api_rel(project, version)
        present = await self.keeper.storage.exists(rel)
        if self.pages.offline:
            if present:
                return CacheResult.HIT
            raise UpstreamNotFound(rel)
        record = await self.pages.served_record(project)
        if record is None:
            raise UpstreamNotFound(rel)
        meta = await self.keeper.pages.json_meta(project, version)
        if (
            present
            and meta is not None
            and meta.page_fetched_at == record.meta.fetched_at
            and meta.filters == self.keeper.filters_fingerprint
        ):
            return CacheResult.HIT

        def operation() -> Awaitable[JsonResult]:
            return self.keeper.json_api.refresh(project, version, record)

        what = f"pypi/{project}/{version + '/' if version else ''}json"
        try:
            if not present:
                result = await self.flights.fetch(rel, operation, what)
            elif page_result is CacheResult.STALE:
                # The upstream failed (or is slow) for this project's page just now.
                return CacheResult.STALE
            else:
                answer = await self.flights.revalidate(rel, operation, what)
                if answer is None:
                    return CacheResult.STALE
                result = answer
        except UpstreamNotFound:
            raise
        except UpstreamError as exc:
            if not present:
                raise
            log.warning("upstream_stale_served", project=project, version=version, error=str(exc))
            return CacheResult.STALE
        return CacheResult.MISS if result is JsonResult.MISS else CacheResult.REVALIDATED

    async def close(self) -> None:
        await self.flights.close()
