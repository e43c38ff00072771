"""Project pages in pull-through mode: fetched once, kept, revalidated after ``index-ttl``.

The upstream page as parsed (with upstream URLs) is kept in ``state/pages/``; what clients
get is rendered into ``web/simple/<project>/`` with URLs pointing at the mirror.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from urllib.parse import urljoin

from mirror.core import layout
from mirror.core.freshness import Freshness, decide, negative_is_fresh
from mirror.core.index import (
    PageParseError,
    parse_project_html,
    parse_project_json,
    render_project_html,
    render_project_json,
)
from mirror.core.model import ProjectPage
from mirror.core.names import is_wheel
from mirror.core.rewrite import PAGE_TO_PACKAGES, mirrored_files, rewrite_page
from mirror.errors import (
    StorageError,
    TrustError,
    UpstreamError,
    UpstreamNotFound,
    UpstreamProtocolError,
)
from mirror.log import get_logger
from mirror.storage import FileSystemStorage
from mirror.trust.base import Trust
from mirror.upstream.client import PageResponse, UpstreamClient

log = get_logger("mirror.pages")

UPSTREAM_ACCEPT = (
    "application/vnd.pypi.simple.v1+json, "
    "application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01"
)
PAGE_FILES = ("index.html", "index.v1_html", "index.v1_json")
GZIP_MIN_SIZE = 1024
SERVED_META_ENTRIES = 50_000


class CacheResult(Enum):
    HIT = "hit"
    MISS = "miss"
    STALE = "stale"
    REVALIDATED = "revalidated"


@dataclass(frozen=True)
class PageMeta:
    fetched_at: float
    etag: str | None = None
    last_serial: int | None = None

    def dump(self) -> bytes:
        return json.dumps(dataclasses.asdict(self)).encode()

    @classmethod
    def load(cls, data: bytes) -> PageMeta | None:
        try:
            raw = json.loads(data)
            return cls(
                fetched_at=float(raw["fetched_at"]),
                etag=raw.get("etag"),
                last_serial=raw.get("last_serial"),
            )
        except (ValueError, KeyError, TypeError):
            return None


def parse_upstream_page(body: bytes, content_type: str, project: str, page_url: str) -> ProjectPage:
    """Either format into the model, with every file URL made absolute."""
    if "json" in content_type.lower():
        page = parse_project_json(body)
    else:
        page = parse_project_html(body, project, page_url)
    files = tuple(dataclasses.replace(f, url=urljoin(page_url, f.url)) for f in page.files)
    return dataclasses.replace(page, files=files)


def gzip_bytes(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=6, mtime=0)


class PageCache:
    def __init__(
        self,
        storage: FileSystemStorage,
        upstream: UpstreamClient | None,
        *,
        ttl: float,
        negative_ttl: float,
        clock: Callable[[], float] = time.time,
        trust: Trust | None = None,
        page_filter: Callable[[ProjectPage], ProjectPage | None] | None = None,
    ) -> None:
        self.trust = trust
        # [sync] mode = "mirror": what the sync's filters keep (None: project excluded).
        self.page_filter = page_filter
        self.storage = storage
        self.upstream = upstream
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self.clock = clock
        self._inflight: dict[str, asyncio.Task[CacheResult]] = {}
        # Meta of pages known to be on disk, so that a hit costs no disk I/O before sendfile.
        # Only this process writes pages it serves in pull-through mode; a sync beside it runs
        # with mode = "mirror", where freshness is the sync's business, not the TTL's.
        self._served: OrderedDict[str, PageMeta] = OrderedDict()

    @property
    def offline(self) -> bool:
        return self.upstream is None

    def is_allowed(self, url: str) -> bool:
        return self.upstream is not None and self.upstream.is_allowed(url)

    async def meta(self, project: str) -> PageMeta | None:
        data = await self.storage.read_bytes(layout.state_page(project) + ".meta", limit=1 << 20)
        return PageMeta.load(data) if data else None

    async def has_page(self, project: str) -> bool:
        return await self.storage.exists(layout.simple_page(project, "index.v1_json"))

    def _remember(self, project: str, meta: PageMeta) -> None:
        self._served[project] = meta
        self._served.move_to_end(project)
        while len(self._served) > SERVED_META_ENTRIES:
            self._served.popitem(last=False)

    async def served_meta(self, project: str) -> PageMeta | None:
        """The meta of a page known to be on disk (memory first: the hot path of a hit)."""
        meta = self._served.get(project)
        return meta if meta is not None else await self.meta(project)

    async def ensure(self, project: str) -> CacheResult:
        """Make the project's pages current enough to serve.

        Raises UpstreamNotFound when upstream has no such project, and other UpstreamErrors
        when nothing usable is cached and upstream cannot be reached.
        """
        known = self._served.get(project)
        if known is not None and (
            self.offline
            or decide(fetched_at=known.fetched_at, now=self.clock(), ttl=self.ttl)
            is Freshness.SERVE
        ):
            return CacheResult.HIT
        meta = await self.meta(project)
        has_page = meta is not None and await self.has_page(project)
        if self.offline:
            if await self.has_page(project):
                self._remember(project, meta or PageMeta(fetched_at=0.0))
                return CacheResult.HIT
            raise UpstreamNotFound(f"simple/{project}/")
        if meta is not None and has_page:
            self._remember(project, meta)
        decision = decide(
            fetched_at=meta.fetched_at if (meta and has_page) else None,
            now=self.clock(),
            ttl=self.ttl,
        )
        if decision is Freshness.SERVE:
            return CacheResult.HIT
        if not has_page and await self._negative_is_fresh(project):
            raise UpstreamNotFound(f"simple/{project}/")
        try:
            return await self.refresh(project)
        except UpstreamNotFound:
            raise
        except UpstreamError as exc:
            if not has_page:
                raise
            log.warning("upstream_stale_served", project=project, error=str(exc))
            return CacheResult.STALE
        except TrustError as exc:
            if not has_page:
                raise
            # The page verified before stays served; the new one was refused.
            log.warning("trust_stale_served", project=project, error=str(exc))
            return CacheResult.STALE

    async def refresh(self, project: str) -> CacheResult:
        """Fetch or revalidate now; concurrent callers share one upstream request."""
        task = self._inflight.get(project)
        if task is None:
            task = asyncio.create_task(self._refresh(project))
            self._inflight[project] = task
            task.add_done_callback(lambda _t: self._inflight.pop(project, None))
        return await asyncio.shield(task)

    async def may_refresh_for_unknown_file(self, project: str) -> bool:
        """A file not on the cached page may be new; ask upstream at most once per
        ``negative-ttl`` so that requests for made-up files cannot hammer it."""
        if self.offline:
            return False
        meta = await self.meta(project)
        return meta is None or self.clock() - meta.fetched_at >= self.negative_ttl

    async def _negative_is_fresh(self, project: str) -> bool:
        info = await self.storage.stat(layout.state_negative(project))
        return negative_is_fresh(
            recorded_at=info.mtime if info else None, now=self.clock(), ttl=self.negative_ttl
        )

    async def _refresh(self, project: str) -> CacheResult:
        assert self.upstream is not None
        meta = await self.meta(project)
        has_page = meta is not None and await self.has_page(project)
        etag = meta.etag if (meta and has_page) else None
        try:
            response = await self._fetch(project, etag)
        except UpstreamNotFound:
            await self.forget(project)
            await self.storage.write_bytes(layout.state_negative(project), b"")
            log.info("upstream_project_missing", project=project)
            raise
        now = self.clock()
        if response.status == 304 and meta is not None:
            await self._write_meta(project, dataclasses.replace(meta, fetched_at=now))
            return CacheResult.REVALIDATED
        try:
            page = parse_upstream_page(response.body, response.content_type, project, response.url)
        except PageParseError as exc:
            raise UpstreamProtocolError(f"upstream page for {project} is malformed: {exc}") from exc
        if page.name != project:
            raise UpstreamProtocolError(
                f"upstream answered simple/{project}/ with the page of {page.name!r}"
            )
        if self.page_filter is not None:
            filtered = self.page_filter(page)
            if filtered is None:
                await self.forget(project)
                raise UpstreamNotFound(f"simple/{project}/ (excluded by the [sync] filters)")
            page = filtered
        serial = response.last_serial if response.last_serial is not None else page.last_serial
        if meta and meta.last_serial and serial is not None and serial < meta.last_serial:
            log.warning(
                "upstream_page_lagging",
                project=project,
                serial=serial,
                have_serial=meta.last_serial,
            )
            await self._write_meta(project, dataclasses.replace(meta, fetched_at=now))
            return CacheResult.REVALIDATED
        await self.store(
            project,
            page,
            PageMeta(fetched_at=now, etag=response.etag, last_serial=serial),
        )
        await self.storage.delete(layout.state_negative(project))
        return CacheResult.REVALIDATED if has_page else CacheResult.MISS

    async def fetch(self, project: str, etag: str | None = None) -> PageResponse:
        """The upstream page as it is now (the sync's way in; stores nothing)."""
        return await self._fetch(project, etag)

    async def _fetch(self, project: str, etag: str | None) -> PageResponse:
        """The upstream page; in the ``index`` trust scheme, the page TUF verified."""
        assert self.upstream is not None
        if self.trust is not None and self.trust.scheme == "index":
            trusted = await self.trust.index_page(project)
            return PageResponse(200, trusted.body, trusted.content_type, None, None, trusted.url)
        return await self.upstream.get_page(f"simple/{project}/", accept=UPSTREAM_ACCEPT, etag=etag)

    async def _write_meta(self, project: str, meta: PageMeta) -> None:
        await self.storage.write_bytes(layout.state_page(project) + ".meta", meta.dump())
        if project in self._served:
            self._remember(project, meta)

    async def upstream_page(self, project: str) -> ProjectPage | None:
        """The upstream page as last fetched (upstream URLs), or None."""
        data = await self.storage.read_bytes(layout.state_page(project))
        if data is None:
            return None
        try:
            return parse_project_json(data)
        except PageParseError:
            log.warning("state_page_unreadable", project=project)
            return None

    async def store(self, project: str, page: ProjectPage, meta: PageMeta) -> None:
        await self.storage.write_bytes(layout.state_page(project), render_project_json(page))
        await self._write_meta(project, meta)
        await self.render(project, page)

    async def render(self, project: str, page: ProjectPage | None = None) -> None:
        """Write the mirror's pages for ``project`` from its upstream page."""
        if page is None:
            page = await self.upstream_page(project)
            if page is None:
                return
        local_metadata = await self._local_metadata(page)
        mirrored, rejected = rewrite_page(page, self.is_allowed, local_metadata)
        for item in rejected:
            log.warning(
                "upstream_link_rejected",
                project=project,
                filename=item.filename,
                url=item.url,
                reason=item.reason,
            )
        html = render_project_html(mirrored)
        bodies = {
            "index.html": html,
            "index.v1_html": html,
            "index.v1_json": render_project_json(mirrored),
        }
        for name, body in bodies.items():
            await self._write_page(layout.simple_page(project, name), body)

    async def _write_page(self, rel: str, body: bytes) -> None:
        if len(body) >= GZIP_MIN_SIZE:
            compressed = await asyncio.get_running_loop().run_in_executor(None, gzip_bytes, body)
            await self.storage.write_bytes(rel + ".gz", compressed)
        else:
            await self.storage.delete(rel + ".gz")
        await self.storage.write_bytes(rel, body)

    async def _local_metadata(self, page: ProjectPage) -> dict[str, str]:
        """sha256 of ``.metadata`` files the mirror extracted itself, by filename."""
        wanted = [
            item
            for item in mirrored_files(page, self.is_allowed)[0]
            if is_wheel(item.file.filename) and not item.file.core_metadata
        ]
        if not wanted:
            return {}

        def scan() -> dict[str, str]:
            found: dict[str, str] = {}
            for item in wanted:
                try:
                    data = self.storage.path(item.path.web_metadata).read_bytes()
                except OSError:
                    continue
                found[item.file.filename] = hashlib.sha256(data).hexdigest()
            return found

        return await asyncio.get_running_loop().run_in_executor(None, scan)

    async def forget(self, project: str) -> None:
        """Drop a project's pages (upstream no longer has it)."""
        self._served.pop(project, None)
        for name in PAGE_FILES:
            await self.storage.delete(layout.simple_page(project, name))
            await self.storage.delete(layout.simple_page(project, name) + ".gz")
        await self.storage.delete(layout.state_page(project))
        await self.storage.delete(layout.state_page(project) + ".meta")

    async def local_page(self, project: str) -> ProjectPage | None:
        """The served page cut down to the files held locally (offline mode)."""
        data = await self.storage.read_bytes(layout.simple_page(project, "index.v1_json"))
        if data is None:
            return None
        try:
            page = parse_project_json(data)
        except PageParseError:
            log.warning("web_page_unreadable", project=project)
            return None
        kept = []
        for file in page.files:
            url = file.url.split("#", 1)[0]
            if not url.startswith(PAGE_TO_PACKAGES):
                continue
            rel = "web/packages/" + url[len(PAGE_TO_PACKAGES) :]
            try:
                if await self.storage.exists(rel):
                    kept.append(file)
            except StorageError:
                continue
        return dataclasses.replace(page, files=tuple(kept), versions=None)
