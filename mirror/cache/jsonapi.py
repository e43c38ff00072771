"""The JSON API (``/pypi/<project>/json``, ``/pypi/<project>/<version>/json``), cached."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from mirror.cache.pages import CacheResult, PageMeta
from mirror.core import layout
from mirror.core.freshness import Freshness, decide
from mirror.core.jsonapi import JsonApiError, rewrite_json_api
from mirror.errors import UpstreamError, UpstreamNotFound, UpstreamProtocolError
from mirror.log import get_logger
from mirror.storage import FileSystemStorage
from mirror.upstream.client import UpstreamClient

log = get_logger("mirror.jsonapi")


class JsonApiCache:
    def __init__(
        self,
        storage: FileSystemStorage,
        upstream: UpstreamClient | None,
        *,
        ttl: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.storage = storage
        self.upstream = upstream
        self.ttl = ttl
        self.clock = clock
        self._inflight: dict[str, asyncio.Task[CacheResult]] = {}

    @staticmethod
    def web_path(project: str, version: str | None) -> str:
        return (
            layout.json_api(project)
            if version is None
            else layout.json_api_version(project, version)
        )

    async def ensure(self, project: str, version: str | None) -> CacheResult:
        rel = self.web_path(project, version)
        present = await self.storage.exists(rel)
        if self.upstream is None:
            if present:
                return CacheResult.HIT
            raise UpstreamNotFound(rel)
        meta_rel = "state/" + rel.removeprefix("web/") + ".meta"
        data = await self.storage.read_bytes(meta_rel, limit=1 << 20)
        meta = PageMeta.load(data) if data else None
        decision = decide(
            fetched_at=meta.fetched_at if (meta and present) else None,
            now=self.clock(),
            ttl=self.ttl,
        )
        if decision is Freshness.SERVE:
            return CacheResult.HIT
        task = self._inflight.get(rel)
        if task is None:
            task = asyncio.create_task(
                self._refresh(project, version, rel, meta_rel, meta if present else None)
            )
            self._inflight[rel] = task
            task.add_done_callback(lambda _t: self._inflight.pop(rel, None))
        try:
            return await asyncio.shield(task)
        except UpstreamNotFound:
            raise
        except UpstreamError as exc:
            if not present:
                raise
            log.warning("upstream_stale_served", project=project, version=version, error=str(exc))
            return CacheResult.STALE

    async def _refresh(
        self, project: str, version: str | None, rel: str, meta_rel: str, meta: PageMeta | None
    ) -> CacheResult:
        assert self.upstream is not None
        path = f"pypi/{project}/json" if version is None else f"pypi/{project}/{version}/json"
        try:
            response = await self.upstream.get_page(
                path, accept="application/json", etag=meta.etag if meta else None
            )
        except UpstreamNotFound:
            await self.storage.delete(rel)
            await self.storage.delete(meta_rel)
            raise
        if response.status == 304 and meta is not None:
            await self.storage.write_bytes(meta_rel, PageMeta(self.clock(), meta.etag).dump())
            return CacheResult.REVALIDATED
        assert self.upstream is not None
        try:
            body = rewrite_json_api(response.body, self.upstream.is_allowed)
        except JsonApiError as exc:
            raise UpstreamProtocolError(
                f"upstream JSON API for {project} is malformed: {exc}"
            ) from exc
        await self.storage.write_bytes(rel, body)
        await self.storage.write_bytes(meta_rel, PageMeta(self.clock(), response.etag).dump())
        return CacheResult.REVALIDATED if meta else CacheResult.MISS
