"""Project pages held in memory, ready to send: a warm page costs no disk I/O.

Each rendering (``index.html``, ``index.v1_html``, ``index.v1_json``) is read once per
change with its gzip form made from the same bytes (so both encodings always agree) and
its strong ETag computed once. Memory is bounded (least recently used out first); a page
larger than ``max_entry`` is not held (it is sent from disk).

Changes made in this process drop the project's entries at once (``forget``, wired to
``PageStore.watchers``); changes made by another process on the same store (a ``sync``,
another ``serve`` worker) are seen within ``recheck`` seconds: an entry older than that is
compared with the file's size and mtime (one ``stat``) before it is used again.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from mirror.core import layout
from mirror.storage import FileInfo, Storage

GZIP_LEVEL = 6


@dataclass(frozen=True)
class PageBytes:
    plain: bytes
    packed: bytes
    etag: str  # of the plain bytes
    packed_etag: str
    size: int
    mtime: float

    @property
    def weight(self) -> int:
        return len(self.plain) + len(self.packed)


def _render(data: bytes, info: FileInfo) -> PageBytes:
    digest = hashlib.sha256(data).hexdigest()[:32]
    packed = gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0)
    return PageBytes(data, packed, f'"{digest}"', f'"{digest}-gz"', info.size, info.mtime)


class HotPages:
    def __init__(
        self,
        storage: Storage,
        *,
        max_bytes: int,
        max_entry: int = 4 * 1024**2,
        recheck: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.storage = storage
        self.max_bytes = max_bytes
        self.max_entry = max_entry
        self.recheck = recheck
        self.clock = clock
        self._entries: OrderedDict[str, tuple[PageBytes, float]] = OrderedDict()
        self._bytes = 0
        self._loading: dict[str, asyncio.Task[PageBytes | None]] = {}

    def forget(self, project: str) -> None:
        for name in layout.PAGE_FILES:
            self._drop(layout.simple_page(project, name))

    def _drop(self, rel: str) -> None:
        entry = self._entries.pop(rel, None)
        if entry is not None:
            self._bytes -= entry[0].weight

    async def get(self, rel: str) -> PageBytes | None:
        """The page at ``rel`` as it is stored now, or None (missing, or too large to hold)."""
        entry = self._entries.get(rel)
        now = self.clock()
        if entry is not None:
            page, checked = entry
            if now - checked < self.recheck:
                self._entries.move_to_end(rel)
                return page
            info = await self.storage.stat(rel)
            if info is not None and (info.size, info.mtime) == (page.size, page.mtime):
                self._entries[rel] = (page, now)
                self._entries.move_to_end(rel)
                return page
            self._drop(rel)
        task = self._loading.get(rel)
        if task is None:
            task = asyncio.create_task(self._load(rel))
            self._loading[rel] = task
            task.add_done_callback(lambda _t: self._loading.pop(rel, None))
        return await asyncio.shield(task)

    async def _load(self, rel: str) -> PageBytes | None:
        info = await self.storage.stat(rel)
        if info is None or info.size > self.max_entry or self.max_bytes <= 0:
            return None
        data = await self.storage.read_bytes(rel, limit=self.max_entry)
        if data is None:
            return None
        if len(data) != info.size:  # replaced between the stat and the read: stat again
            info = await self.storage.stat(rel)
            if info is None or len(data) != info.size:
                return None
        page = await asyncio.get_running_loop().run_in_executor(None, _render, data, info)
        self._drop(rel)
        self._entries[rel] = (page, self.clock())
        self._bytes += page.weight
        while self._bytes > self.max_bytes and self._entries:
            _, (old, _checked) = self._entries.popitem(last=False)
            self._bytes -= old.weight
        return page
