"""``serve`` with ``[sync] interval > 0``: follow the upstream changelog in the same process.

- ``mode = "mirror"``: every interval, one ``SyncEngine`` run (skipped while a
  ``pypi-mirror sync`` holds the lock).
- ``mode = "cache"``: every interval, read the changelog since the last round and refresh
  (or drop) only the projects the pull-through cache already holds, whatever their
  ``index-ttl`` — through the page cache, so the keeper does the work and the cache's
  memory follows. Negative entries for projects that now exist are forgotten. A page still
  older than the changelog promised keeps the cursor below that serial, so the project is
  looked at again next round. The first round only records where the changelog is.
  In this mode ``interval`` defaults to 60 seconds: a pull-through cache follows the
  changelog out of the box. A round is skipped while the upstream circuit breaker is
  open (the upstream is failing; its probe finds out when it is back).

Where the upstream has no changelog (no XML-RPC, or it answers a fault), the follower
says so once (``changelog_unavailable``) and keeps asking quietly each interval; pages
are then revalidated after ``index-ttl`` only. ``changelog_available`` when it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time

from mirror.concurrency import bounded
from mirror.config import SyncMode
from mirror.core import layout
from mirror.core.changelog import PlanEntry, collapse
from mirror.core.verdict import PageVerdict, Promise
from mirror.errors import IntegrityError, MirrorError, UpstreamError
from mirror.log import get_logger
from mirror.services import Services
from mirror.sync.engine import SyncEngine, SyncLocked
from mirror.sync.xmlrpc import ChangelogClient, XmlRpcUnavailable

log = get_logger("mirror.sync.follow")


class ChangelogFollower:
    def __init__(self, services: Services) -> None:
        assert services.upstream is not None
        self.services = services
        self.config = services.config
        self.storage = services.storage
        self.changelog = ChangelogClient(services.upstream)
        self.rounds = 0
        #: The upstream's serial as last read (None before the first round).
        self.upstream_serial: int | None = None
        #: Why the upstream's changelog cannot be followed ("" while it can).
        self.unavailable = ""
        self._round_done = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self.run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def run(self) -> None:
        interval = self.config.sync.interval
        while True:
            started = time.monotonic()
            try:
                await self.round()
            except XmlRpcUnavailable as exc:
                self._unavailable(str(exc))
            except MirrorError as exc:
                log.warning("changelog_round_failed", mode=self.config.sync.mode, error=str(exc))
            except Exception:  # the follower must outlive any one bad round
                log.exception("changelog_round_crashed", mode=self.config.sync.mode)
            async with self._round_done:
                self.rounds += 1
                self._round_done.notify_all()
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))

    async def wait_rounds(self, count: int) -> None:
        """Until ``count`` rounds have finished since start (for tests and operators)."""
        async with self._round_done:
            await self._round_done.wait_for(lambda: self.rounds >= count)

    async def round(self) -> None:
        if self.config.sync.mode is SyncMode.MIRROR:
            await self._mirror_round()
        else:
            await self._cache_round()

    async def _mirror_round(self) -> None:
        try:
            result = await SyncEngine(self.services).run()
        except SyncLocked as exc:
            log.info("sync_round_skipped", reason=str(exc))
            return
        log.info(
            "sync_round_finished",
            ok=result.ok,
            serial=result.serial,
            upstream_serial=result.upstream_serial,
            reason=result.reason,
        )

    def _unavailable(self, reason: str) -> None:
        if not self.unavailable:
            log.warning(
                "changelog_unavailable",
                error=reason,
                consequence="pages are revalidated after [serve] index-ttl only",
            )
        else:
            log.debug("changelog_still_unavailable", error=reason)
        self.unavailable = reason

    async def _cache_round(self) -> None:
        if not self.services.breaker.closed:
            log.info("changelog_round_skipped", reason="the upstream circuit breaker is open")
            return
        cursor = await self._cursor()
        upstream_serial = await self.changelog.last_serial()
        self.upstream_serial = upstream_serial
        if self.unavailable:
            log.info("changelog_available", serial=upstream_serial)
            self.unavailable = ""
        if cursor is None or cursor > upstream_serial:
            await self._save_cursor(upstream_serial)
            log.info("changelog_follow_started", serial=upstream_serial)
            return
        since = cursor
        lagging: int | None = None
        while since < upstream_serial:
            events = await self.changelog.since(since)
            if not events:
                break
            newest = max(event.serial for event in events)
            if newest <= since:
                break
            stale: list[int] = []

            async def refresh(entry: PlanEntry, stale: list[int] = stale) -> None:
                if not await self._refresh_cached(entry):
                    stale.append(entry.serial)

            await bounded(collapse(events, lambda _name: True), self.config.sync.workers, refresh)
            if stale:
                low = min(stale)
                lagging = low if lagging is None else min(lagging, low)
            since = newest
        new_cursor = since if lagging is None else min(since, lagging - 1)
        await self._save_cursor(max(new_cursor, cursor))
        log.info("changelog_followed", cursor=new_cursor, upstream_serial=upstream_serial)

    async def _refresh_cached(self, entry: PlanEntry) -> bool:
        """Refresh one project if the cache holds it; False when it must be looked at
        again (its page is still older than promised, or the upstream failed)."""
        project = entry.project
        self.services.pages.forget_negative(project)
        if not await self.services.keeper.pages.has_page(project):
            return True
        try:
            # As long as it takes: the round's workers bound what is asked at once.
            result = await self.services.pages.refresh(
                project, Promise(entry.serial, entry.expect_gone), wait=math.inf
            )
        except IntegrityError as exc:
            # A page refused by TUF: keep the verified one, retry this project next round,
            # and go on with the others.
            log.warning("cached_project_refused", project=project, error=str(exc))
            return False
        except UpstreamError as exc:
            log.warning("cached_project_refresh_failed", project=project, error=str(exc))
            return False
        if result.verdict is PageVerdict.GONE:
            log.info("cached_project_dropped", project=project, files=result.files_removed)
            return True
        serial = result.serial
        if result.verdict is PageVerdict.STALE or (serial is not None and serial < entry.serial):
            log.info("upstream_page_stale", project=project, serial=serial, promised=entry.serial)
            return False
        log.info("cached_project_refreshed", project=project, serial=entry.serial)
        return True

    async def _cursor(self) -> int | None:
        data = await self.storage.read_bytes(layout.CACHE_CURSOR, limit=64)
        text = data.decode("ascii", "replace").strip() if data else ""
        return int(text) if text.isdigit() else None

    async def _save_cursor(self, serial: int) -> None:
        await self.storage.write_bytes(layout.CACHE_CURSOR, f"{serial}\n".encode(), durable=False)
