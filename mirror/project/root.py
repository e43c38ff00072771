"""The root ``/simple/`` list in the web root, and the projects the web root holds.

The root pages (``index.html``, its hard link ``index.v1_html``, ``index.v1_json``, each
with a gzip sibling) are written from a stream of entries — the upstream's list (pull-
through) or the projects held here (the sync, an offline mirror) — and committed together
at the end, so neither the pages nor the whole list are ever in memory.

A project is held when ``web/simple/<project>/index.html`` exists; its serial is the
``<!--SERIAL n-->`` trailer of that page, read from the file's tail (no page is parsed).
"""

from __future__ import annotations

import asyncio
import re
import time
import zlib
from collections.abc import AsyncIterator

from mirror.core import layout
from mirror.core.model import RootEntry
from mirror.core.names import is_valid_project_name, normalize
from mirror.core.record import PageMeta
from mirror.core.rootlist import RootRenderer
from mirror.sorting import ExternalSorter, Record
from mirror.storage import Storage

_SERIAL_TAIL_RE = re.compile(rb"<!--SERIAL (\d{1,18})-->\s*$")
_TAIL = 96


class _PairWriter:
    """A page and its gzip sibling, written together."""

    def __init__(self, storage: Storage, rel: str) -> None:
        self.plain = storage.writer(rel)
        self.packed = storage.writer(rel + layout.GZIP_SUFFIX)
        self._zlib = zlib.compressobj(6, zlib.DEFLATED, 31)

    async def write(self, data: bytes) -> None:
        if data:
            await self.plain.write(data)
            await self.packed.write(self._zlib.compress(data))

    async def finish(self) -> None:
        """The last bytes written (then only renames are left)."""
        await self.packed.write(self._zlib.flush())

    async def commit(self) -> None:
        await self.packed.commit()
        await self.plain.commit()

    async def abort(self) -> None:
        await self.plain.abort()
        await self.packed.abort()


class RootWriter:
    """Writes the root pages from a stream of entries."""

    def __init__(self, storage: Storage, last_serial: int | None) -> None:
        self.storage = storage
        self.renderer = RootRenderer()
        self.html = _PairWriter(storage, layout.simple_root(layout.PAGE_HTML))
        self.json = _PairWriter(storage, layout.simple_root(layout.PAGE_V1_JSON))
        self.last_serial = last_serial
        self.count = 0
        self._seen_head = False

    async def _head(self) -> None:
        if not self._seen_head:
            self._seen_head = True
            await self.html.write(self.renderer.html_head())
            await self.json.write(self.renderer.json_head(self.last_serial))

    async def add(self, entries: list[RootEntry]) -> None:
        await self._head()
        if not entries:
            return
        parts = []
        for entry in entries:
            parts.append(self.renderer.json_entry(entry, self.count == 0))
            self.count += 1
        await self.html.write(b"".join(self.renderer.html_entry(e) for e in entries))
        await self.json.write(b"".join(parts))

    async def commit(self) -> None:
        await self._head()
        await self.html.write(self.renderer.html_tail())
        await self.json.write(self.renderer.json_tail())
        # Every byte of both pages is written before either is renamed into place: a
        # full disk leaves the old root list whole.
        await self.json.finish()
        await self.html.finish()
        await self.json.commit()
        await self.html.commit()
        html = layout.simple_root(layout.PAGE_HTML)
        v1_html = layout.simple_root(layout.PAGE_V1_HTML)
        await self.storage.link(html + layout.GZIP_SUFFIX, v1_html + layout.GZIP_SUFFIX)
        await self.storage.link(html, v1_html)

    async def abort(self) -> None:
        await self.json.abort()
        await self.html.abort()


def serial_of(tail: bytes) -> int | None:
    """The serial in a rendered page's trailer (its last bytes), or None."""
    match = _SERIAL_TAIL_RE.search(tail)
    return int(match.group(1)) if match else None


async def held_projects(storage: Storage) -> AsyncIterator[list[Record]]:
    """(project, serial) for every project the web root holds, unordered, in batches."""
    async for names in storage.iter_names(layout.WEB_SIMPLE):
        projects = [n for n in names if is_valid_project_name(n) and normalize(n) == n]
        tails = await asyncio.gather(
            *(storage.read_tail(layout.simple_page(p, layout.PAGE_HTML), _TAIL) for p in projects)
        )
        batch = [(p, serial_of(t)) for p, t in zip(projects, tails, strict=True) if t is not None]
        if batch:
            yield batch


async def write_root(
    storage: Storage, entries: AsyncIterator[list[RootEntry]], serial: int | None
) -> int:
    """Write the root pages from ``entries``; the number of projects listed."""
    writer = RootWriter(storage, serial)
    try:
        async for batch in entries:
            await writer.add(batch)
        await writer.commit()
    except BaseException:
        await writer.abort()
        raise
    return writer.count


async def rebuild_root(storage: Storage, serial: int | None) -> int:
    """Write the root pages listing the projects held here, sorted by name; pull-through
    then serves this list as fresh instead of fetching the upstream's."""
    async with ExternalSorter(storage.scratch_dir()) as sorter:
        async for batch in held_projects(storage):
            await sorter.add(batch)

        async def entries() -> AsyncIterator[list[RootEntry]]:
            async for records in sorter.sorted():
                yield [RootEntry(name, value) for name, value in records]

        count = await write_root(storage, entries(), serial)
    meta = PageMeta(time.time(), None, serial)
    await storage.write_bytes(layout.ROOT_META, meta.dump(), durable=False)
    return count
