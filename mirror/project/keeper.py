"""``ProjectKeeper``: the one writer of a project's artefacts in ``web/`` and ``state/``.

Pull-through misses and revalidations, the changelog follower and the sync all come here,
so every view of a project — both page renderings, ``index.v1_html``, the JSON API,
``.metadata`` and the files — obeys the same filters, trust decision and freshness.

``update`` (one project at a time per process):

1. fetch the page — verified by TUF in the ``index`` scheme (``UpstreamSource``);
2. judge it with the core (``core.verdict``): current, unchanged, stale (keep the held
   copy; a sync retries and defers), or gone (remove everything);
3. apply the ``[sync]`` filters (an excluded project is removed without asking upstream);
4. in ``FULL`` mode (the sync) fetch every kept file and its ``.metadata``, verified, and
   the JSON API answer — before anything is listed;
5. render the pages and the record, cut the JSON API to the page;
6. delete what the page no longer lists (``PruneIntents``: recorded before step 4, so a
   writer killed at any moment leaves nothing behind that a later writer does not remove).

Files on demand (pull-through) go through ``download``/``ensure_metadata``, which locate
nothing themselves: the caller names the project and the file (``held_file``).

A page with many files is parsed, filtered, rewritten and rendered off the event loop
(``project.offload``), and its upstream form is let go as soon as the served form is made;
the page is written before its record (a record ahead of its page would make the next
revalidation keep the old page on a 304).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Generic, TypeVar

from mirror.concurrency import KeyedLocks, bounded
from mirror.core import layout
from mirror.core.filters import Filters
from mirror.core.layout import PackagePath
from mirror.core.metadata import MetadataSource
from mirror.core.model import ProjectPage
from mirror.core.names import is_wheel
from mirror.core.record import PageMeta, ProjectRecord
from mirror.core.rewrite import (
    MirroredFile,
    MirrorView,
    extracted_metadata,
    held_file,
    listed_paths,
    mirror_view,
    served_path,
    with_extracted,
)
from mirror.core.verdict import NO_PROMISE, Answer, PageVerdict, Promise, judge
from mirror.log import get_logger
from mirror.project.files import Download, FileStore
from mirror.project.intents import PruneIntents
from mirror.project.jsonapi import JsonApiStore
from mirror.project.offload import OFF_LOOP_FILES, CpuWork, wait_all
from mirror.project.pages import PageStore
from mirror.project.source import JsonAnswer, UpstreamSource
from mirror.storage import Storage

log = get_logger("mirror.project")

T = TypeVar("T")

#: Files looked up at once when a FULL update checks which it holds.
MISSING_BATCH = 32


def _discard(task: asyncio.Task[JsonAnswer]) -> None:
    """Cancel a task whose answer is no longer wanted, and drop whatever it raised."""
    task.cancel()
    task.add_done_callback(lambda done: done.cancelled() or done.exception())


class KeepMode(Enum):
    """How much of a project an update brings in."""

    # Pages (and the JSON API when asked for); files and .metadata on demand.
    INDEX = "index"
    # Also every kept file, its .metadata and the JSON API answer, before the page lists
    # them: what a full or filtered mirror (the sync) keeps.
    FULL = "full"


@dataclass(frozen=True)
class KeepResult:
    verdict: PageVerdict
    reason: str = ""
    #: The project's record after the update (None when it is gone or was never held).
    record: ProjectRecord | None = None
    files_added: int = 0
    bytes_added: int = 0
    files_removed: int = 0

    @property
    def serial(self) -> int | None:
        return self.record.meta.last_serial if self.record else None


class _Handover(Generic[T]):
    """A value passed on with its only reference, so that the receiver can let it go."""

    def __init__(self, value: T) -> None:
        self._value: T | None = value

    def peek(self) -> T:
        assert self._value is not None, "already taken"
        return self._value

    def take(self) -> T:
        value = self.peek()
        self._value = None
        return value


@dataclass(frozen=True)
class _Prepared:
    page: ProjectPage  # filtered (without its files in pull-through)
    view: MirrorView  # (ditto: no upstream form of the files in pull-through)
    record: ProjectRecord
    carried: dict[str, str]  # .metadata digests the old page advertised
    dropped: set[PackagePath]  # listed by the old page, not by the new one
    kept: int  # files the served page lists


@dataclass
class _Fetched:
    added: list[PackagePath] = dataclasses.field(default_factory=list)
    nbytes: int = 0
    extracted: dict[str, str] = dataclasses.field(default_factory=dict)


class ProjectKeeper:
    def __init__(
        self,
        storage: Storage,
        source: UpstreamSource | None,
        files: FileStore,
        filters: Filters,
        *,
        file_workers: int = 4,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.storage = storage
        self.source = source
        self.files = files
        self.filters = filters
        self.file_workers = file_workers
        self.clock = clock
        #: Large pages are parsed, filtered, rewritten and rendered off the event loop.
        self.cpu = source.cpu if source is not None else CpuWork()
        self.pages = PageStore(storage, self.cpu)
        self.intents = PruneIntents(storage, self.pages)
        self.filters_fingerprint = filters.fingerprint()
        self.json_api = JsonApiStore(storage, self.pages, source, self.filters_fingerprint)
        self._locks = KeyedLocks()
        self._background: set[asyncio.Task[None]] = set()
        self._download_slots: asyncio.Semaphore | None = None
        self._download_width = file_workers
        files.on_metadata = self._metadata_extracted

    @property
    def offline(self) -> bool:
        return self.source is None

    @property
    def signed_files_only(self) -> bool:
        return self.source is not None and self.source.signed_files_only

    def excluded(self, project: str) -> bool:
        return not self.filters.project_allowed(project)

    def share_downloads(self, slots: int) -> None:
        """FULL updates running at once (the sync's workers) share ``slots`` downloads:
        a project may use the slots others leave idle while they fetch or write pages, so
        several projects' files are in flight behind one project's page."""
        self._download_slots = asyncio.Semaphore(slots)
        self._download_width = max(slots, self.file_workers)

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        self.cpu.close()

    # -- pages ----------------------------------------------------------------------------

    async def update(
        self, project: str, promise: Promise = NO_PROMISE, *, mode: KeepMode = KeepMode.INDEX
    ) -> KeepResult:
        """Bring ``project`` to what upstream has now (at least ``promise.serial``).

        Raises UpstreamError when the upstream cannot be asked, IntegrityError when what
        it gave does not verify; the held copy then stays as it was.
        """
        if self.excluded(project):
            removed = await self.remove(project)
            return KeepResult(
                PageVerdict.GONE, "excluded by the [sync] filters", files_removed=removed
            )
        async with self._locks.hold(project):
            return await self._update(project, promise, mode)

    async def _update(self, project: str, promise: Promise, mode: KeepMode) -> KeepResult:
        assert self.source is not None, "an offline mirror does not update"
        old_page: ProjectPage | None
        if mode is KeepMode.FULL:
            # Never conditional: the page is asked for while what is held is read.
            answer, record, old_page = await asyncio.gather(
                self.source.page(project),
                self.pages.record(project),
                self.pages.served_page(project),
            )
            held = record if record is not None and old_page is not None else None
        else:
            record = await self.pages.record(project)
            held = record if record is not None and await self.pages.has_page(project) else None
            conditional = held is not None and held.filters == self.filters_fingerprint
            etag = held.meta.etag if conditional and held else None
            old_page = None
            if held is None:
                # Nothing held (a first miss, most likely): whatever page is there is read
                # while the upstream answers, not after.
                answer, old_page = await asyncio.gather(
                    self.source.page(project, etag), self.pages.served_page(project)
                )
            else:
                answer = await self.source.page(project, etag)
        judgement = judge(
            answer.answer,
            page_serial=answer.serial,
            held_serial=held.meta.last_serial if held else None,
            promise=promise,
        )
        verdict, now = judgement.verdict, self.clock()
        if verdict is PageVerdict.GONE:
            removed = await self._remove(project)
            log.info("upstream_project_missing", project=project, files=removed)
            return KeepResult(verdict, judgement.reason, files_removed=removed)
        if verdict is PageVerdict.STALE:
            log.info("upstream_page_stale", project=project, reason=judgement.reason)
            if held is not None and promise.serial is None:
                # Pull-through keeps serving its copy, and asks again after the TTL.
                held = held.refreshed(now)
                await self.pages.write_record(project, held)
            return KeepResult(verdict, judgement.reason, held)
        if verdict is PageVerdict.UNCHANGED:
            assert held is not None
            held = held.refreshed(now)
            await self.pages.write_record(project, held)
            return KeepResult(verdict, record=held)
        if mode is KeepMode.INDEX and held is not None:
            old_page = await self.pages.served_page(project)
        assert answer.page is not None
        # Handed over with their only references: _prepare lets them go once it is done
        # with them (a large page's upstream form is hundreds of megabytes).
        pages = _Handover((answer.page, old_page))
        meta = PageMeta(now, answer.etag, answer.serial)
        del answer, old_page
        return await self._apply(project, pages, promise, mode, meta)

    async def _apply(
        self,
        project: str,
        pages: _Handover[tuple[ProjectPage, ProjectPage | None]],
        promise: Promise,
        mode: KeepMode,
        meta: PageMeta,
    ) -> KeepResult:
        assert self.source is not None
        full = mode is KeepMode.FULL
        large = any(p is not None and len(p.files) >= OFF_LOOP_FILES for p in pages.peek())
        prepared = await self.cpu.run(large, self._prepare, pages, meta, full)
        view, record = prepared.view, prepared.record
        for item in view.rejected:
            log.warning(
                "upstream_link_rejected",
                project=project,
                filename=item.filename,
                url=item.url,
                reason=item.reason,
            )
        json: JsonAnswer | None = None
        json_task = None
        if full:
            # The JSON API answer comes in while the files download.
            json_task = asyncio.create_task(self.source.json_api(project))
        try:
            missing = await self._missing(view.files) if full else []
            paths = prepared.dropped | {i.path for i in missing}
            recorded = await self.intents.record(project, paths)
        except BaseException:
            if json_task is not None:
                _discard(json_task)
            raise
        fetched = _Fetched()
        if json_task is not None:
            try:
                fetched = await self._fetch_all(project, view.files, missing, prepared.carried)
                json = await json_task
            except BaseException:
                _discard(json_task)
                if recorded:
                    await self.intents.settle(project)  # what was fetched, no page lists
                raise
            checked = (
                judge(Answer.PAGE, page_serial=json.serial, held_serial=None, promise=promise)
                if json.answer is Answer.PAGE
                else None
            )
            if checked is not None and checked.verdict is PageVerdict.STALE:
                reason = f"JSON API: {checked.reason}"
                log.info("upstream_page_stale", project=project, reason=reason)
                if recorded:
                    await self.intents.settle(project)
                return KeepResult(PageVerdict.STALE, reason)
            if fetched.extracted:
                extracted = {**prepared.carried, **fetched.extracted}
                view = await self.cpu.run(large, self._view, prepared.page, extracted)
        served, kept = view.page, prepared.kept
        del prepared, view
        # The page and the JSON API answers cut to it (FULL: every file held by now) are
        # written at once: whichever lands first, neither lists what the other does not.
        # The record follows the page: a record ahead of its page would make the next
        # revalidation ask with the new page's ETag, and keep the old page on a 304.
        json_api = (
            self.json_api.cut(project, served)
            if json is None
            else self.json_api.store(
                project, None, json.answer, json.body, json.etag, served, record
            )
        )
        await wait_all(self.pages.write_page(served), json_api)
        await self.pages.write_record(project, record)
        removed = await self.intents.settle(project) if recorded else 0
        log.info(
            "project_updated",
            project=project,
            serial=meta.last_serial,
            files=kept,
            added=len(fetched.added),
            bytes=fetched.nbytes,
            removed=removed,
        )
        return KeepResult(
            PageVerdict.CURRENT,
            record=record,
            files_added=len(fetched.added),
            bytes_added=fetched.nbytes,
            files_removed=removed,
        )

    def _prepare(
        self,
        pages: _Handover[tuple[ProjectPage, ProjectPage | None]],
        meta: PageMeta,
        full: bool,
    ) -> _Prepared:
        """Everything an update computes from the upstream page and the old one (pure CPU:
        a large page's runs off the event loop). Pull-through (not ``full``) keeps only the
        served view and the record: the upstream form of a page is let go here."""
        upstream, old_page = pages.take()
        page = self.filters.apply(upstream)
        del upstream
        if page.last_serial is None and meta.last_serial is not None:
            page = dataclasses.replace(page, last_serial=meta.last_serial)
        carried = extracted_metadata(old_page) if old_page is not None else {}
        view = self._view(page, carried)
        record = ProjectRecord.for_files(
            meta,
            [(item.path, item.file.url) for item in view.files],
            filters=self.filters_fingerprint,
        )
        dropped: set[PackagePath] = set()
        if old_page is not None:
            dropped = listed_paths(old_page) - {item.path for item in view.files}
        kept = len(view.files)
        if not full:
            view = dataclasses.replace(view, files=[])
            page = dataclasses.replace(page, files=())
        return _Prepared(page, view, record, carried, dropped, kept)

    def _view(self, page: ProjectPage, extracted: dict[str, str]) -> MirrorView:
        assert self.source is not None
        return mirror_view(
            page,
            self.source.is_allowed,
            signed_files_only=self.signed_files_only,
            extracted=extracted,
        )

    async def _missing(self, items: list[MirroredFile]) -> list[MirroredFile]:
        """The files not held yet, looked up ``MISSING_BATCH`` at a time."""
        missing: list[MirroredFile] = []
        for start in range(0, len(items), MISSING_BATCH):
            batch = items[start : start + MISSING_BATCH]
            held = await asyncio.gather(*(self.storage.exists(i.path.web) for i in batch))
            missing += [item for item, present in zip(batch, held, strict=True) if not present]
        return missing

    async def _fetch_all(
        self,
        project: str,
        items: list[MirroredFile],
        missing: list[MirroredFile],
        carried: dict[str, str],
    ) -> _Fetched:
        """Every missing file and every ``.metadata`` not held, ``file_workers`` at a time,
        or as many as the shared download slots allow (``share_downloads``)."""
        fetched = _Fetched()
        to_download = {item.path for item in missing}
        slots = self._download_slots

        async def one(item: MirroredFile) -> None:
            if slots is None:
                await fetch(item)
                return
            async with slots:
                await fetch(item)

        async def fetch(item: MirroredFile) -> None:
            downloaded = item.path in to_download
            if downloaded:
                download = self.files.download(project, item, extract=False)
                await download.wait()
                fetched.added.append(item.path)
                fetched.nbytes += download.available
            if item.metadata is MetadataSource.NONE:
                return
            # A wheel just verified: its METADATA is upstream's .metadata (PEP 658), checked
            # against the page's digest; upstream's is fetched only if they differ.
            wheel = item.metadata is MetadataSource.UPSTREAM and is_wheel(item.file.filename)
            if (
                downloaded
                and wheel
                and await self.files.extract_metadata(project, item, expected=item.file)
            ):
                return
            known = item.metadata is MetadataSource.UPSTREAM or item.file.filename in carried
            if known and not downloaded and await self.storage.exists(item.path.web_metadata):
                return
            sha256 = await self.files.ensure_metadata(project, item)
            if sha256 is not None and item.metadata is MetadataSource.WHEEL:
                fetched.extracted[item.file.filename] = sha256

        width = self.file_workers if slots is None else min(len(items), self._download_width)
        await bounded(items, max(width, 1), one)
        return fetched

    async def _metadata_extracted(self, project: str, filename: str, sha256: str) -> None:
        """A pull-through download extracted a wheel's ``.metadata``: advertise it.

        Never waits for the project's lock (an update holding it may be waiting for this
        very download); then the page is re-rendered once the update is done.
        """
        if self._locks.locked(project):
            task = asyncio.create_task(self._advertise(project, filename, sha256))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            return
        await self._advertise(project, filename, sha256)

    async def _advertise(self, project: str, filename: str, sha256: str) -> None:
        async with self._locks.hold(project):
            page = await self.pages.served_page(project)
            if page is None or not any(f.filename == filename for f in page.files):
                return
            updated = with_extracted(page, filename, sha256)
            if updated != page:
                await self.pages.write_page(updated)

    # -- removal --------------------------------------------------------------------------

    async def remove(self, project: str) -> int:
        """Everything the mirror holds of ``project``; the number of files removed."""
        async with self._locks.hold(project):
            return await self._remove(project)

    async def _remove(self, project: str) -> int:
        if not await self._holds(project):
            return 0
        page = await self.pages.served_page(project)
        paths = listed_paths(page) if page is not None else set()
        recorded = await self.intents.record(project, paths)
        await self.pages.remove(project)
        return await self.intents.settle(project) if recorded else 0

    async def _holds(self, project: str) -> bool:
        for rel in (
            layout.simple_page(project, layout.PAGE_HTML),
            layout.simple_page(project, layout.PAGE_V1_JSON),
            layout.project_record(project),
            layout.json_api(project),
        ):
            if await self.storage.exists(rel):
                return True
        async for _names in self.storage.iter_names(layout.json_api_dir(project)):
            return True
        return False

    # -- files on demand ------------------------------------------------------------------

    async def held_file(self, project: str, path: PackagePath) -> MirroredFile | None:
        """The file ``path`` as the project's served page lists it, with its upstream URL."""
        page, record = await asyncio.gather(
            self.pages.served_page(project), self.pages.record(project)
        )
        if page is None or record is None:
            return None
        return held_file(page, record, path, signed_files_only=self.signed_files_only)

    def download(self, project: str, item: MirroredFile) -> Download:
        return self.files.download(project, item)

    async def ensure_metadata(self, project: str, item: MirroredFile) -> str | None:
        sha256 = await self.files.ensure_metadata(project, item)
        if sha256 is not None and item.metadata is MetadataSource.WHEEL:
            await self._metadata_extracted(project, item.file.filename, sha256)
        return sha256

    async def offline_page(self, project: str) -> ProjectPage | None:
        """The served page cut down to the files held here (offline mode)."""
        page = await self.pages.served_page(project)
        if page is None:
            return None
        kept = []
        for file in page.files:
            path = served_path(file)
            if path is not None and await self.storage.exists(path.web):
                kept.append(file)
        return dataclasses.replace(page, files=tuple(kept), versions=None)
