"""What the mirror holds, read from ``web/`` (the truth): projects and their serials, and
the root pages rebuilt from them.

A project is held when ``web/simple/<project>/index.html`` exists; its serial is the
``<!--SERIAL n-->`` trailer of that page (read from the file's tail, so no page is parsed).
The root pages are rebuilt by scanning ``web/simple/`` and sorting externally, so neither
the pages nor the whole list are ever in memory.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

from mirror.cache.pages import PageMeta
from mirror.cache.root import RootWriter
from mirror.core.model import RootEntry
from mirror.core.names import is_valid_project_name, normalize
from mirror.storage import FileSystemStorage
from mirror.sync.sorting import ExternalSorter, Record

_SERIAL_TAIL_RE = re.compile(rb"<!--SERIAL (\d{1,18})-->\s*$")
_TAIL = 96
BATCH = 1000
ROOT_META = "state/root.meta"


def read_serial(page: Path) -> int | None:
    """The serial in a rendered page's trailer, or None (blocking)."""
    try:
        with page.open("rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - _TAIL))
            tail = handle.read()
    except OSError:
        return None
    match = _SERIAL_TAIL_RE.search(tail)
    return int(match.group(1)) if match else None


async def local_projects(storage: FileSystemStorage) -> AsyncIterator[list[Record]]:
    """(project, serial) for every project the web root holds, unordered, in batches."""
    base = storage.path("web/simple")
    loop = asyncio.get_running_loop()
    try:
        entries = await loop.run_in_executor(None, os.scandir, base)
    except FileNotFoundError:
        return

    def take() -> list[Record]:
        found: list[Record] = []
        for entry in entries:
            name = entry.name
            if not entry.is_dir(follow_symlinks=False) or not is_valid_project_name(name):
                continue
            if normalize(name) != name:
                continue
            page = Path(entry.path) / "index.html"
            if page.is_file():
                found.append((name, read_serial(page)))
                if len(found) >= BATCH:
                    break
        return found

    try:
        while batch := await loop.run_in_executor(None, take):
            yield batch
    finally:
        entries.close()


async def rebuild_root(storage: FileSystemStorage, serial: int | None) -> int:
    """Write ``web/simple/index.html``, ``index.v1_html``, ``index.v1_json`` from ``web/``."""
    async with ExternalSorter(storage.path("tmp")) as sorter:
        async for batch in local_projects(storage):
            await sorter.add(batch)
        writer = RootWriter(storage, serial)
        try:
            async for records in sorter.sorted():
                await writer.add([RootEntry(name, value) for name, value in records])
            await writer.commit()
        except BaseException:
            await writer.abort()
            raise
    # The pull-through root cache serves this list as fresh instead of fetching upstream's.
    await storage.write_bytes(ROOT_META, PageMeta(time.time(), None, serial).dump())
    return writer.count
