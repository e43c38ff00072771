"""The root ``/simple/`` list in pull-through mode: streamed from upstream into the web
root, never held whole, revalidated after ``index-ttl``.

PyPI's root lists about 600,000 projects (30 MB); it is parsed incrementally and written
by ``project.root.RootWriter``, all forms committed together once the whole list arrived.
An offline mirror without an upstream list lists the projects it holds. Waits are bounded
as for pages (``cache.flights``): a held list is served when its revalidation has not
answered within ``revalidate-timeout`` (or at once while the circuit breaker is open); a
first fetch waits ``[upstream] timeout`` at most.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable

from mirror.cache.breaker import CircuitBreaker
from mirror.cache.flights import Flights
from mirror.cache.pages import CacheResult
from mirror.core import layout
from mirror.core.freshness import Freshness, decide
from mirror.core.index import PageParseError
from mirror.core.model import RootEntry
from mirror.core.names import is_valid_project_name, normalize
from mirror.core.record import PageMeta
from mirror.core.rootlist import RootHtmlParser, RootJsonParser
from mirror.errors import UpstreamError, UpstreamNotFound, UpstreamProtocolError, UpstreamTooLarge
from mirror.log import get_logger
from mirror.project.root import RootWriter, held_projects, write_root
from mirror.project.source import UPSTREAM_ACCEPT
from mirror.storage import Storage
from mirror.upstream.client import UpstreamClient, last_serial_of

log = get_logger("mirror.root")

ROOT_LIMIT = 2 * 1024**3


def _clean(entries: list[RootEntry]) -> list[RootEntry]:
    return [
        RootEntry(normalize(e.name), e.last_serial)
        for e in entries
        if is_valid_project_name(e.name)
    ]


class RootCache:
    def __init__(
        self,
        storage: Storage,
        upstream: UpstreamClient | None,
        *,
        ttl: float,
        revalidate_timeout: float = 2.0,
        miss_timeout: float = 30.0,
        breaker: CircuitBreaker | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.storage = storage
        self.upstream = upstream
        self.ttl = ttl
        self.clock = clock
        self.flights: Flights[CacheResult] = Flights(
            breaker if breaker is not None else CircuitBreaker(),
            revalidate_timeout=revalidate_timeout,
            miss_timeout=miss_timeout,
            late_is_failure=False,  # a changed list is a long download
        )

    async def _meta(self) -> PageMeta | None:
        data = await self.storage.read_bytes(layout.ROOT_META, limit=1 << 20)
        return PageMeta.load(data) if data else None

    async def ensure(self) -> CacheResult:
        present = await self.storage.exists(layout.simple_root(layout.PAGE_V1_JSON))
        if self.upstream is None:
            if not present:
                await self.build_from_local()
                return CacheResult.MISS
            return CacheResult.HIT
        meta = await self._meta()
        decision = decide(
            fetched_at=meta.fetched_at if (meta and present) else None,
            now=self.clock(),
            ttl=self.ttl,
        )
        if decision is Freshness.SERVE:
            return CacheResult.HIT
        held = meta if present else None
        key = layout.simple_root(layout.PAGE_V1_JSON)
        try:
            if not present:
                return await self.flights.fetch(key, lambda: self._refresh(None), "simple/")
            result = await self.flights.revalidate(key, lambda: self._refresh(held), "simple/")
        except UpstreamError as exc:
            if not present:
                raise
            log.warning("upstream_stale_served", project="<root>", error=str(exc))
            return CacheResult.STALE
        return CacheResult.STALE if result is None else result

    async def close(self) -> None:
        await self.flights.close()

    async def _refresh(self, meta: PageMeta | None) -> CacheResult:
        assert self.upstream is not None
        url = self.upstream.url_for("simple/")
        headers = {"If-None-Match": meta.etag} if meta and meta.etag else {}
        try:
            async with self.upstream.open_file(
                url,
                accept=UPSTREAM_ACCEPT,
                headers={"Accept-Encoding": "gzip", **headers},
                ok_statuses=(200, 304),
            ) as stream:
                response = stream.response
                if response.status == 304 and meta is not None:
                    await self._write_meta(PageMeta(self.clock(), meta.etag, meta.last_serial))
                    return CacheResult.REVALIDATED
                serial = last_serial_of(response.headers)
                is_json = "json" in response.headers.get("Content-Type", "").lower()
                parser: RootJsonParser | RootHtmlParser = (
                    RootJsonParser() if is_json else RootHtmlParser()
                )
                writer = RootWriter(self.storage, serial)
                try:
                    size = 0
                    async for chunk in stream.chunks():
                        size += len(chunk)
                        if size > ROOT_LIMIT:
                            raise UpstreamTooLarge(f"{url} is over {ROOT_LIMIT} bytes")
                        await writer.add(_clean(parser.feed(chunk)))
                    await writer.add(_clean(parser.close()))
                    await writer.commit()
                except PageParseError as exc:
                    await writer.abort()
                    raise UpstreamProtocolError(f"upstream root page is malformed: {exc}") from exc
                except BaseException:
                    await writer.abort()
                    raise
                etag = response.headers.get("ETag")
        except UpstreamNotFound as exc:
            raise UpstreamProtocolError(f"upstream has no root page at {url}") from exc
        await self._write_meta(PageMeta(self.clock(), etag, serial))
        log.info("root_list_cached", projects=writer.count, serial=serial)
        return CacheResult.REVALIDATED if meta else CacheResult.MISS

    async def _write_meta(self, meta: PageMeta) -> None:
        await self.storage.write_bytes(layout.ROOT_META, meta.dump(), durable=False)

    async def build_from_local(self) -> int:
        """Offline without an upstream root: list the projects that have pages here."""

        async def entries() -> AsyncIterator[list[RootEntry]]:
            async for batch in held_projects(self.storage):
                yield [RootEntry(name) for name, _serial in batch]

        return await write_root(self.storage, entries(), None)
