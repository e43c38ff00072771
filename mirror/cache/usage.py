"""The size of ``web/packages`` (bytes, and distribution files), always known and never
walked per request.

- One walk of the tree in the background when ``serve`` starts, by the primary process
  (the only one, or worker 0), in the evictor's loop (``cache.eviction``); every
  eviction pass walks again and so corrects the count as a side effect.
- Then every process counts what it changes itself: ``FileStore`` reports each file and
  ``.metadata`` it committed (``added``), eviction and the prune of files no page lists
  any more (``PruneIntents``) each one they deleted (``removed``).

Several workers (``server.workers``): the count is kept in prometheus-client's
multiprocess files, which every worker can read. Each process owns a *share*, the
``pypi_mirror_cache_bytes`` and ``pypi_mirror_cache_files`` gauges in mode ``sum``: a
worker's share is what it committed minus what it deleted since it started; the primary's
is, after a walk, what the walk found minus the other shares at the end of the walk, plus
its own changes since. So the sum of the shares is the total, whichever worker adds them
up (``/health``, ``/metrics``, ``/``), and a dead worker's share stays counted (mode
``sum``, not ``livesum``): the files it stored are still there. Until the first walk has
finished (``pypi_mirror_cache_measured_timestamp_seconds`` is 0), the total is unknown:
``/health`` says ``null``, ``/metrics`` shows only what was changed since start-up.

What this does not see until the next walk (the next start, or eviction pass): changes
made during a walk on a store that takes over ``REWALK_WITHIN`` to walk (on a smaller one
a walk that overlapped changes is done again), a file downloaded twice by two processes
that could not share the download, and what a separate ``pypi-mirror sync`` process
(cron, beside ``serve``) stores or removes — ``pypi-mirror status`` counts from the tree.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from mirror.core import layout
from mirror.log import get_logger
from mirror.metrics import MULTIPROC_DIR_ENV, Metrics, sample_key
from mirror.storage import Storage

log = get_logger("mirror.usage")

#: How long a read of the other workers' shares is reused (``current``).
SHARES_TTL = 1.0
#: A walk that overlapped changes is done again (after ``REWALK_PAUSE`` seconds) while
#: the walks so far took at most this long (seconds).
REWALK_WITHIN = 10.0
REWALK_PAUSE = 0.1

BYTES = sample_key("pypi_mirror_cache_bytes")
FILES = sample_key("pypi_mirror_cache_files")
MEASURED = sample_key("pypi_mirror_cache_measured_timestamp_seconds")


@dataclass(frozen=True)
class Usage:
    bytes: int
    files: int


class CacheUsage:
    def __init__(
        self, storage: Storage, metrics: Metrics, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.storage = storage
        self.metrics = metrics
        self.clock = clock
        #: Told after each addition (the evictor wakes when the total is over max-size).
        self.on_added: Callable[[], None] = lambda: None
        self._bytes = 0  # this process's share
        self._files = 0
        self._changes = 0  # changes this process reported (a walk overlapping one is redone)
        self._measured = 0.0
        self._read: tuple[float, Usage | None] | None = None
        self._shared = bool(os.environ.get(MULTIPROC_DIR_ENV))

    # -- what writers report ------------------------------------------------------------

    def added(self, rel: str, size: int) -> None:
        """A file (or ``.metadata``) of ``size`` bytes was committed at ``rel``."""
        self._change(size, 0 if rel.endswith(layout.METADATA_SUFFIX) else 1)
        self.on_added()

    def removed(self, rel: str, size: int) -> None:
        """The file at ``rel`` (``size`` bytes) was deleted."""
        self._change(-size, 0 if rel.endswith(layout.METADATA_SUFFIX) else -1)

    def _change(self, size: int, files: int) -> None:
        self._changes += 1
        self._bytes += size
        self._files += files
        self.metrics.cache_bytes.set(self._bytes)
        self.metrics.cache_files.set(self._files)
        if self._read is not None:  # what was read is off by this much now
            at, usage = self._read
            if usage is not None:
                self._read = (at, Usage(usage.bytes + size, usage.files + files))

    # -- the walk -----------------------------------------------------------------------

    async def measure(self) -> Usage:
        """Walk ``web/packages`` and make the total what the walk found.

        A change made during a walk may or may not be in what it found (it depends on
        where in the tree it lands), so a walk that overlapped changes, in any process,
        is done again — while the walks took ``REWALK_WITHIN`` at most: on a store where
        one walk takes longer, the last is kept and the next eviction pass corrects it."""
        started = self.clock()
        while True:
            others_before, own_before = self._others(), self._changes
            found = await self._walk()
            others = self._others()
            overlapped = others != others_before or self._changes != own_before
            if not overlapped or self.clock() - started > REWALK_WITHIN:
                break
            log.debug("cache_measure_repeated")
            await asyncio.sleep(REWALK_PAUSE)  # let a burst of downloads pass
        self._bytes = found.bytes - others.bytes
        self._files = found.files - others.files
        self._measured = time.time()
        self.metrics.cache_bytes.set(self._bytes)
        self.metrics.cache_files.set(self._files)
        self.metrics.cache_measured.set(self._measured)
        self._read = None
        log.debug(
            "cache_measured",
            bytes=found.bytes,
            files=found.files,
            seconds=round(self.clock() - started, 3),
        )
        return found

    async def _walk(self) -> Usage:
        walked_bytes = 0
        walked_files = 0
        async for info in self.storage.iter_files(layout.WEB_PACKAGES):
            walked_bytes += info.size
            if not info.rel.endswith(layout.METADATA_SUFFIX):
                walked_files += 1
        return Usage(walked_bytes, walked_files)

    # -- what readers ask ---------------------------------------------------------------

    def current(self) -> Usage | None:
        """The total over all processes; None until a walk has finished. A read of the
        other workers' shares is reused for ``SHARES_TTL`` (this one's changes are added
        at once)."""
        if not self._shared:
            return Usage(self._bytes, self._files) if self._measured else None
        now = self.clock()
        if self._read is None or now - self._read[0] >= SHARES_TTL:
            values = self.metrics.values("gauge_sum_", "gauge_max_")
            usage = None
            if values.get(MEASURED, 0.0) > 0:
                usage = Usage(int(values.get(BYTES, 0)), int(values.get(FILES, 0)))
            self._read = (now, usage)
        return self._read[1]

    def _others(self) -> Usage:
        """The other processes' shares (their sum, read from the metrics files)."""
        if not self._shared:
            return Usage(0, 0)
        values = self.metrics.values("gauge_sum_")
        return Usage(
            int(values.get(BYTES, 0)) - self._bytes, int(values.get(FILES, 0)) - self._files
        )
