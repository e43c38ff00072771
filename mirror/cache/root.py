"""The root ``/simple/`` list: streamed from upstream into the web root, never held whole.

PyPI's root lists about 600,000 projects (30 MB); it is parsed incrementally and written
straight into ``web/simple/index.html``, ``index.v1_html`` and ``index.v1_json`` (and
their ``.gz`` siblings), all committed together once the whole list arrived.
"""

from __future__ import annotations

import asyncio
import os
import time
import zlib
from collections.abc import AsyncIterator, Callable

from mirror.cache.pages import UPSTREAM_ACCEPT, CacheResult, PageMeta
from mirror.core import layout
from mirror.core.freshness import Freshness, decide
from mirror.core.index import PageParseError
from mirror.core.model import RootEntry
from mirror.core.names import is_valid_project_name, normalize
from mirror.core.rootlist import RootHtmlParser, RootJsonParser, RootRenderer
from mirror.errors import UpstreamError, UpstreamNotFound, UpstreamProtocolError, UpstreamTooLarge
from mirror.log import get_logger
from mirror.storage import FileSystemStorage
from mirror.upstream.client import UpstreamClient, last_serial_of

log = get_logger("mirror.root")

ROOT_LIMIT = 2 * 1024**3
ROOT_FILES = ("index.html", "index.v1_html", "index.v1_json")


class _PairWriter:
    """A page and its gzip sibling, written together."""

    def __init__(self, storage: FileSystemStorage, rel: str) -> None:
        self.plain = storage.writer(rel)
        self.packed = storage.writer(rel + ".gz")
        self._zlib = zlib.compressobj(6, zlib.DEFLATED, 31)

    async def write(self, data: bytes) -> None:
        if data:
            await self.plain.write(data)
            await self.packed.write(self._zlib.compress(data))

    async def commit(self) -> None:
        await self.packed.write(self._zlib.flush())
        await self.packed.commit()
        await self.plain.commit()

    async def abort(self) -> None:
        await self.plain.abort()
        await self.packed.abort()


class RootWriter:
    """Writes the three root pages from a stream of entries."""

    def __init__(self, storage: FileSystemStorage, last_serial: int | None) -> None:
        self.renderer = RootRenderer()
        self.html = _PairWriter(storage, layout.simple_root("index.html"))
        self.v1_html = _PairWriter(storage, layout.simple_root("index.v1_html"))
        self.json = _PairWriter(storage, layout.simple_root("index.v1_json"))
        self.last_serial = last_serial
        self.count = 0
        self._seen_head = False

    async def _head(self) -> None:
        if not self._seen_head:
            self._seen_head = True
            head = self.renderer.html_head()
            await self.html.write(head)
            await self.v1_html.write(head)
            await self.json.write(self.renderer.json_head(self.last_serial))

    async def add(self, entries: list[RootEntry]) -> None:
        await self._head()
        if not entries:
            return
        html = b"".join(self.renderer.html_entry(e) for e in entries)
        parts = []
        for entry in entries:
            parts.append(self.renderer.json_entry(entry, self.count == 0))
            self.count += 1
        await self.html.write(html)
        await self.v1_html.write(html)
        await self.json.write(b"".join(parts))

    async def commit(self) -> None:
        await self._head()
        tail = self.renderer.html_tail()
        await self.html.write(tail)
        await self.v1_html.write(tail)
        await self.json.write(self.renderer.json_tail())
        for writer in (self.json, self.v1_html, self.html):
            await writer.commit()

    async def abort(self) -> None:
        for writer in (self.json, self.v1_html, self.html):
            await writer.abort()


def _clean(entries: list[RootEntry]) -> list[RootEntry]:
    return [
        RootEntry(normalize(e.name), e.last_serial)
        for e in entries
        if is_valid_project_name(e.name)
    ]


class RootCache:
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
        self._inflight: asyncio.Task[CacheResult] | None = None

    async def _meta(self) -> PageMeta | None:
        data = await self.storage.read_bytes("state/root.meta", limit=1 << 20)
        return PageMeta.load(data) if data else None

    async def ensure(self) -> CacheResult:
        present = await self.storage.exists(layout.simple_root("index.v1_json"))
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
        if self._inflight is None:
            self._inflight = asyncio.create_task(self._refresh(meta if present else None))
            self._inflight.add_done_callback(lambda _t: setattr(self, "_inflight", None))
        try:
            return await asyncio.shield(self._inflight)
        except UpstreamError as exc:
            if not present:
                raise
            log.warning("upstream_stale_served", project="<root>", error=str(exc))
            return CacheResult.STALE

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
        await self.storage.write_bytes("state/root.meta", meta.dump())

    async def build_from_local(self) -> int:
        """Offline without an upstream root: list the projects that have pages here."""
        writer = RootWriter(self.storage, None)
        try:
            async for batch in self._local_projects():
                await writer.add(batch)
            await writer.commit()
        except BaseException:
            await writer.abort()
            raise
        return writer.count

    async def _local_projects(self) -> AsyncIterator[list[RootEntry]]:
        base = self.storage.path("web/simple")
        loop = asyncio.get_running_loop()
        try:
            entries = await loop.run_in_executor(None, os.scandir, base)
        except FileNotFoundError:
            return

        def batch() -> list[RootEntry]:
            found: list[RootEntry] = []
            for entry in entries:
                if entry.is_dir() and os.path.exists(os.path.join(entry.path, "index.v1_json")):
                    found.append(RootEntry(entry.name))
                    if len(found) >= 1000:
                        break
            return found

        try:
            while found := await loop.run_in_executor(None, batch):
                yield found
        finally:
            entries.close()
