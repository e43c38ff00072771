"""A project's served pages, its record and its JSON API answers, as stored.

The served page is kept in two renderings, ``index.html`` (PEP 503) and ``index.v1_json``
(PEP 691), each with a gzip sibling for clients (and nginx's ``gzip_static``) that accept
it; ``index.v1_html`` is the same bytes as ``index.html``, so it is a hard link (and so is
its ``.gz``). The JSON rendering is also what the mirror reads back: it is the model
without loss. Beside them in ``state/`` the ``ProjectRecord`` says when the page was
fetched and where upstream serves its files.
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Callable

from mirror.core import layout
from mirror.core.index import (
    PageParseError,
    parse_project_json,
    render_project_html,
    render_project_json,
)
from mirror.core.model import ProjectPage
from mirror.core.record import JsonApiMeta, ProjectRecord
from mirror.log import get_logger
from mirror.storage import Storage

log = get_logger("mirror.pages")

GZIP_MIN_SIZE = 1024
RECORD_LIMIT = 64 * 1024**2
META_LIMIT = 1 << 20


def gzip_bytes(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=6, mtime=0)


Rendering = tuple[bytes, bytes | None]


def _render(page: ProjectPage) -> tuple[Rendering, Rendering]:
    """The JSON and HTML renderings with their gzip forms (CPU: run off the event loop)."""

    def form(body: bytes) -> Rendering:
        return body, gzip_bytes(body) if len(body) >= GZIP_MIN_SIZE else None

    return form(render_project_json(page)), form(render_project_html(page))


class PageStore:
    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        #: Told the name of every project whose page, record or JSON API changed here:
        #: what keeps them in memory (the page cache, the hot pages) forgets them.
        self.watchers: list[Callable[[str], None]] = []

    def _changed(self, project: str) -> None:
        for watcher in self.watchers:
            watcher(project)

    # -- the served page ------------------------------------------------------------------

    async def has_page(self, project: str) -> bool:
        return await self.storage.exists(layout.simple_page(project, layout.PAGE_V1_JSON))

    async def served_page(self, project: str) -> ProjectPage | None:
        """The page as served (links into packages/), or None."""
        data = await self.storage.read_bytes(layout.simple_page(project, layout.PAGE_V1_JSON))
        if data is None:
            return None
        try:
            return parse_project_json(data)
        except PageParseError as exc:
            log.warning("web_page_unreadable", project=project, error=str(exc))
            return None

    async def write_page(self, page: ProjectPage) -> None:
        """Both renderings and their gzip forms (written side by side), then the links."""
        project = page.name
        forms = await asyncio.get_running_loop().run_in_executor(None, _render, page)
        html = layout.simple_page(project, layout.PAGE_HTML)
        v1_html = layout.simple_page(project, layout.PAGE_V1_HTML)
        json = layout.simple_page(project, layout.PAGE_V1_JSON)
        await asyncio.gather(
            *(
                self._write(rel, body, packed)
                for rel, (body, packed) in ((json, forms[0]), (html, forms[1]))
            )
        )
        if forms[1][1] is None:
            links = [
                self.storage.link(html, v1_html),
                self.storage.delete(v1_html + layout.GZIP_SUFFIX),
            ]
        else:
            gz = layout.GZIP_SUFFIX
            links = [self.storage.link(html, v1_html), self.storage.link(html + gz, v1_html + gz)]
        await asyncio.gather(*links)
        self._changed(project)

    async def _write(self, rel: str, body: bytes, packed: bytes | None) -> None:
        """``body`` and its gzip sibling (None: too small to be worth it, none is kept)."""
        sibling = rel + layout.GZIP_SUFFIX
        if packed is None:
            await asyncio.gather(self.storage.delete(sibling), self.storage.write_bytes(rel, body))
        else:
            await asyncio.gather(
                self.storage.write_bytes(sibling, packed), self.storage.write_bytes(rel, body)
            )

    # -- the record -----------------------------------------------------------------------

    async def record(self, project: str) -> ProjectRecord | None:
        data = await self.storage.read_bytes(layout.project_record(project), limit=RECORD_LIMIT)
        if data is None:
            return None
        record = ProjectRecord.load(data)
        if record is None:
            log.warning("project_record_unreadable", project=project)
        return record

    async def write_record(self, project: str, record: ProjectRecord) -> None:
        await self.storage.write_bytes(layout.project_record(project), record.dump(), durable=False)
        self._changed(project)

    # -- the JSON API ---------------------------------------------------------------------

    async def json_meta(self, project: str, version: str | None) -> JsonApiMeta | None:
        data = await self.storage.read_bytes(
            layout.json_api_meta(project, version), limit=META_LIMIT
        )
        return JsonApiMeta.load(data) if data else None

    async def write_json(
        self, project: str, version: str | None, body: bytes, meta: JsonApiMeta
    ) -> None:
        await self.storage.write_bytes(layout.json_api_rel(project, version), body)
        await self.storage.write_bytes(
            layout.json_api_meta(project, version), meta.dump(), durable=False
        )

    async def write_json_meta(self, project: str, version: str | None, meta: JsonApiMeta) -> None:
        await self.storage.write_bytes(
            layout.json_api_meta(project, version), meta.dump(), durable=False
        )

    async def remove_json(self, project: str, version: str | None) -> None:
        await self.storage.delete(layout.json_api_rel(project, version))
        await self.storage.delete(layout.json_api_meta(project, version))

    # -- everything -----------------------------------------------------------------------

    async def remove(self, project: str) -> None:
        """The project's pages (every form), record and JSON API answers."""
        for name in layout.PAGE_FILES:
            rel = layout.simple_page(project, name)
            await self.storage.delete(rel + layout.GZIP_SUFFIX)
            await self.storage.delete(rel)
        await self.storage.delete_tree(layout.json_api_dir(project))
        await self.storage.delete_tree(layout.json_api_meta_dir(project))
        await self.storage.delete(layout.project_record(project))
        self._changed(project)
