"""A project's served pages, its record and its JSON API answers, as stored.

The served page is kept in two renderings, ``index.html`` (PEP 503) and ``index.v1_json``
(PEP 691), each with a gzip sibling for clients (and nginx's ``gzip_static``) that accept
it; ``index.v1_html`` is the same bytes as ``index.html``, so it is a hard link (and so is
its ``.gz``). The JSON rendering is also what the mirror reads back: it is the model
without loss. Beside them in ``state/`` the ``ProjectRecord`` says when the page was
fetched and where upstream serves its files.

A page is written whole or not at all: both renderings and their gzip forms go to temp
files before any is renamed into place (a full disk leaves the old page, or none, never
an ``index.html`` without its ``index.v1_json``). A large page is parsed and rendered off
the event loop (``project.offload``), in pieces that are written as they are made.
"""

from __future__ import annotations

import asyncio
import gzip
import zlib
from collections.abc import Awaitable, Callable

from mirror.core import layout
from mirror.core.index import (
    PageParseError,
    parse_project_json,
    render_project_html_pieces,
    render_project_json_pieces,
)
from mirror.core.model import ProjectPage
from mirror.core.record import JsonApiMeta, ProjectRecord
from mirror.log import get_logger
from mirror.project.offload import OFF_LOOP_BYTES, OFF_LOOP_FILES, CpuWork, wait_all
from mirror.storage import AtomicWriter, Storage

log = get_logger("mirror.pages")

GZIP_MIN_SIZE = 1024
RECORD_LIMIT = 64 * 1024**2
META_LIMIT = 1 << 20


def gzip_bytes(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=6, mtime=0)


def _gzip_pieces(pieces: list[bytes]) -> bytes:
    """The gzip form of the bytes of ``pieces`` (the bytes ``gzip_bytes`` gives them
    joined), made without joining them."""
    packer = zlib.compressobj(6, zlib.DEFLATED, 31)  # 31: a gzip header, as gzip_bytes
    out = [packer.compress(piece) for piece in pieces]
    out.append(packer.flush())
    return b"".join(out)


#: A rendering in pieces (never joined: a large page's would be a second copy), and its
#: gzip form (None when too small to be worth it).
Rendering = tuple[list[bytes], bytes | None]
#: Bytes per write of a rendering's pieces.
WRITE_CHUNK = 4 * 1024**2


def _render_form(render: Callable[[ProjectPage], list[bytes]], page: ProjectPage) -> Rendering:
    """One rendering with its gzip form (CPU: a large page's is made off the event loop)."""
    pieces = render(page)
    size = sum(len(piece) for piece in pieces)
    return pieces, _gzip_pieces(pieces) if size >= GZIP_MIN_SIZE else None


class PageStore:
    def __init__(self, storage: Storage, cpu: CpuWork | None = None) -> None:
        self.storage = storage
        self.cpu = cpu if cpu is not None else CpuWork()
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
            return await self.cpu.run(len(data) >= OFF_LOOP_BYTES, parse_project_json, data)
        except PageParseError as exc:
            log.warning("web_page_unreadable", project=project, error=str(exc))
            return None

    async def write_page(self, page: ProjectPage) -> None:
        """Both renderings and their gzip forms, then ``index.v1_html``'s links.

        Every byte goes to temp files before any of them is renamed into place, so a
        full disk fails the write with nothing changed: never an ``index.html`` without
        its ``index.v1_json``, or a new one beside an old one. A large page is rendered
        off the event loop, one rendering at a time (only one is in memory at once).
        """
        project = page.name
        large = len(page.files) >= OFF_LOOP_FILES
        html = layout.simple_page(project, layout.PAGE_HTML)
        v1_html = layout.simple_page(project, layout.PAGE_V1_HTML)
        json = layout.simple_page(project, layout.PAGE_V1_JSON)
        gz = layout.GZIP_SUFFIX
        if not large:
            await self._write_small_page(page, json, html, v1_html)
            self._changed(project)
            return
        staged: list[AtomicWriter] = []
        unpacked: list[str] = []  # renderings too small for a gzip sibling
        try:
            renderers = ((json, render_project_json_pieces), (html, render_project_html_pieces))
            for rel, render in renderers:
                pieces, packed = await self.cpu.run(large, _render_form, render, page)
                parts = [(rel, pieces)]
                del pieces
                if packed is None:
                    unpacked.append(rel)
                else:
                    parts.append((rel + gz, [packed]))
                del packed
                writers = [self.storage.writer(part) for part, _ in parts]
                staged += writers
                await wait_all(
                    *(_write(w, chunks) for w, (_, chunks) in zip(writers, parts, strict=True))
                )
                del parts
            await wait_all(*(writer.commit() for writer in staged))
        finally:
            await asyncio.gather(*(writer.abort() for writer in staged))
        await asyncio.gather(*(self.storage.delete(rel + gz) for rel in unpacked))
        links: list[Awaitable[object]] = [self.storage.link(html, v1_html)]
        if html in unpacked:
            links.append(self.storage.delete(v1_html + gz))
        else:
            links.append(self.storage.link(html + gz, v1_html + gz))
        await asyncio.gather(*links)
        self._changed(project)

    async def _write_small_page(
        self, page: ProjectPage, json: str, html: str, v1_html: str
    ) -> None:
        """``write_page`` of a page rendered at once: every form in one storage step (a
        page miss waits on it)."""
        gz = layout.GZIP_SUFFIX
        files: list[tuple[str, bytes]] = []
        deletes: list[str] = []
        for rel, render in ((json, render_project_json_pieces), (html, render_project_html_pieces)):
            pieces, packed = _render_form(render, page)
            files.append((rel, b"".join(pieces)))
            if packed is None:
                deletes.append(rel + gz)
            else:
                files.append((rel + gz, packed))
        links = [(html, v1_html)]
        if html + gz in deletes:
            deletes.append(v1_html + gz)
        else:
            links.append((html + gz, v1_html + gz))
        await self.storage.write_set(files, links=links, deletes=deletes)

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


async def _write(writer: AtomicWriter, pieces: list[bytes]) -> None:
    """Write ``pieces`` (handed over: each is let go once written), joined into writes
    of about ``WRITE_CHUNK`` bytes."""
    pieces.reverse()
    while pieces:
        batch: list[bytes] = []
        size = 0
        while pieces and size < WRITE_CHUNK:
            batch.append(pieces.pop())
            size += len(batch[-1])
        await writer.write(b"".join(batch))
