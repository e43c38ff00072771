"""Stored files held in memory, ready to send: a warm project page or small file costs no
disk I/O.

A file is read once per change and prepared once (a page: its gzip form made from the same
bytes, so both encodings always agree, and a strong ETag of its content; a distribution
file: the ETag and Last-Modified that ``web.FileResponse`` gives it, so conditional
requests agree whichever path answers). Memory is bounded (least recently used out
first); a file larger than ``max_entry`` is not held (it is sent from disk).

Changes made in this process drop the project's page entries at once (``forget``, wired
to ``PageStore.watchers``); changes made by another process on the same store (a
``sync``, another ``serve`` worker, eviction) are seen within ``recheck`` seconds: an
entry older than that is compared with the file's size and mtime (one ``stat``) before it
is used again.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate

from mirror.core import layout
from mirror.errors import StorageError
from mirror.storage import FileInfo, Storage

GZIP_LEVEL = 6
#: Distribution files up to this size are held in memory (larger ones: sendfile).
FILE_ENTRY_LIMIT = 1024**2
#: An entry smaller than this is prepared (gzip, ETag) on the event loop.
PREPARE_INLINE = 64 * 1024


@dataclass(frozen=True)
class HeldBytes:
    plain: bytes
    etag: str  # of the plain bytes
    size: int
    mtime: float
    packed: bytes | None = None  # gzip of ``plain``, for pages
    packed_etag: str | None = None
    last_modified: str | None = None

    @property
    def weight(self) -> int:
        return len(self.plain) + len(self.packed or b"")


def page_bytes(data: bytes, info: FileInfo) -> HeldBytes:
    digest = hashlib.sha256(data).hexdigest()[:32]
    packed = gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0)
    return HeldBytes(data, f'"{digest}"', info.size, info.mtime, packed, f'"{digest}-gz"')


def file_bytes(data: bytes, info: FileInfo) -> HeldBytes:
    """A distribution file, with the validators ``web.FileResponse`` would send."""
    etag = f'"{info.mtime_ns:x}-{info.size:x}"'
    last_modified = formatdate(math.ceil(info.mtime), usegmt=True)  # as aiohttp rounds it
    return HeldBytes(data, etag, info.size, info.mtime, last_modified=last_modified)


class HotBytes:
    def __init__(
        self,
        storage: Storage,
        prepare: Callable[[bytes, FileInfo], HeldBytes],
        *,
        max_bytes: int,
        max_entry: int = 4 * 1024**2,
        recheck: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.storage = storage
        self.prepare = prepare
        self.max_bytes = max_bytes
        self.max_entry = max_entry
        self.recheck = recheck
        self.clock = clock
        self._entries: OrderedDict[str, tuple[HeldBytes, float]] = OrderedDict()
        self._bytes = 0
        self._loading: dict[str, asyncio.Task[HeldBytes | None]] = {}

    def forget_project(self, project: str) -> None:
        """Drop the renderings of ``project``'s page (it was just written here)."""
        for name in layout.PAGE_FILES:
            self.forget(layout.simple_page(project, name))

    def forget(self, rel: str) -> None:
        entry = self._entries.pop(rel, None)
        if entry is not None:
            self._bytes -= entry[0].weight

    async def get(self, rel: str) -> HeldBytes | None:
        """The file at ``rel`` as it is stored now, or None (missing, or too large to hold)."""
        if self.max_bytes <= 0:
            return None
        entry = self._entries.get(rel)
        now = self.clock()
        if entry is not None:
            held, checked = entry
            if now - checked < self.recheck:
                self._entries.move_to_end(rel)
                return held
            info = await self.storage.stat(rel)
            if info is not None and (info.size, info.mtime) == (held.size, held.mtime):
                self._entries[rel] = (held, now)
                self._entries.move_to_end(rel)
                return held
            self.forget(rel)
        task = self._loading.get(rel)
        if task is None:
            task = asyncio.create_task(self._load(rel))
            self._loading[rel] = task
            task.add_done_callback(lambda _t: self._loading.pop(rel, None))
        return await asyncio.shield(task)

    async def _load(self, rel: str) -> HeldBytes | None:
        try:
            found = await self.storage.read_with_info(rel, limit=self.max_entry)
        except StorageError:  # larger than an entry may be
            return None
        if found is None:
            return None
        data, info = found
        if len(data) < PREPARE_INLINE:  # (a gzip of a few KB costs less than a thread hop)
            held = self.prepare(data, info)
        else:
            held = await asyncio.get_running_loop().run_in_executor(None, self.prepare, data, info)
        self.forget(rel)
        self._entries[rel] = (held, self.clock())
        self._bytes += held.weight
        while self._bytes > self.max_bytes and self._entries:
            _, (old, _checked) = self._entries.popitem(last=False)
            self._bytes -= old.weight
        return held
