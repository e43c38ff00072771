"""Keep ``web/packages`` under ``[cache] max-size`` by evicting least-recently-used files.

Reads set a file's atime (``Storage.touch_access``); eviction walks the tree once and keeps
only as many candidates in memory as it needs to remove, so memory does not grow with the
size of the cache. A file with a reader is skipped, and a wheel's ``.metadata`` goes with it.

The evictor runs in the primary ``serve`` process whatever ``[cache] max-size`` says: its
first walk is the one that makes the cache's size known (``cache.usage``); with no
max-size it evicts nothing and only looks at the total each interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import time
from collections import OrderedDict
from collections.abc import Callable

from mirror.cache.usage import CacheUsage
from mirror.core import layout
from mirror.log import get_logger
from mirror.metrics import Metrics
from mirror.storage import FileInfo, Storage

#: Seconds within which a file read again is not touched again (at most), and how many
#: files' last touch is remembered.
TOUCH_EVERY = 60.0
TOUCHED_ENTRIES = 100_000

log = get_logger("mirror.eviction")


class _OldestSet:
    """The oldest files seen so far, just enough of them to free ``excess`` bytes."""

    def __init__(self, excess: int) -> None:
        self.excess = excess
        self._heap: list[tuple[float, str, int]] = []  # (-atime, rel, size): newest on top
        self._bytes = 0

    def offer(self, info: FileInfo) -> None:
        heapq.heappush(self._heap, (-info.atime, info.rel, info.size))
        self._bytes += info.size
        while self._heap and self._bytes - self._heap[0][2] >= self.excess:
            _, _, size = heapq.heappop(self._heap)
            self._bytes -= size

    def oldest_first(self) -> list[tuple[str, int]]:
        return [(rel, size) for _, rel, size in sorted(self._heap, reverse=True)]


class Evictor:
    def __init__(
        self,
        storage: Storage,
        max_size: int,
        metrics: Metrics,
        in_use: Callable[[str], bool],
        usage: CacheUsage,
        interval: float = 60.0,
    ) -> None:
        self.storage = storage
        self.max_size = max_size
        self.metrics = metrics
        self.in_use = in_use
        self.usage = usage
        self.interval = interval
        self.on_evict: Callable[[str], None] = lambda _rel: None
        #: A file read again within this many seconds keeps the access time it has: the
        #: order eviction needs is no finer than its own interval.
        self.touch_every = min(TOUCH_EVERY, interval)
        self._touched: OrderedDict[str, float] = OrderedDict()
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        usage.on_added = self._added

    def wants_touch(self, rel: str) -> bool:
        """Should this read of ``rel`` set its access time (``Storage.touch_access``)?
        Only where files are evicted, and at most once per ``touch_every`` per file."""
        if not self.max_size:
            return False
        now = time.monotonic()
        last = self._touched.get(rel)
        if last is not None and now - last < self.touch_every:
            return False
        self._touched[rel] = now
        self._touched.move_to_end(rel)
        while len(self._touched) > TOUCHED_ENTRIES:
            self._touched.popitem(last=False)
        return True

    @property
    def total(self) -> int | None:
        """Bytes held (all processes), None until the first walk finished."""
        current = self.usage.current()
        return None if current is None else current.bytes

    def _added(self) -> None:
        if self.max_size and (self.total or 0) > self.max_size:
            self._wake.set()

    async def run(self) -> None:
        await self.usage.measure()
        while True:
            total = self.total
            if self.max_size and total is not None and total > self.max_size:
                await self.evict()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
            self._wake.clear()

    async def evict(self) -> int:
        """Remove LRU files until the cache is under max-size. Returns the bytes freed."""
        async with self._lock:
            return await self._evict()

    async def _evict(self) -> int:
        measured = await self.usage.measure()
        excess = measured.bytes - self.max_size
        if excess <= 0:
            return 0
        oldest = _OldestSet(excess)
        async for info in self.storage.iter_files(layout.WEB_PACKAGES):
            if not info.rel.endswith(layout.METADATA_SUFFIX):
                oldest.offer(info)
        freed = 0
        for rel, size in oldest.oldest_first():
            if freed >= excess:
                break
            if self.in_use(rel):
                log.info("eviction_skipped_in_use", file=rel)
                continue
            if not await self.storage.delete(rel):
                continue
            self.usage.removed(rel, size)
            self.on_evict(rel)
            freed += size
            self.metrics.evicted_files.inc()
            sidecar_rel = layout.metadata_rel(rel)
            sidecar = await self.storage.stat(sidecar_rel)
            if sidecar and await self.storage.delete(sidecar_rel):
                self.usage.removed(sidecar_rel, sidecar.size)
                freed += sidecar.size
            log.info("file_evicted", file=rel, size=size)
        return freed
