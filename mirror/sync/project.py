"""One project brought to the serial the plan promised: fetch, filter, download, commit.

The page is fetched (and the JSON API), checked against the promised serial (a lagging
CDN is retried with backoff, then deferred), cut down by the filters, every kept file
downloaded and verified exactly as the pull-through cache does (``FileCache``), and only
then are the pages rendered (``PageCache.store``) and the files no longer listed removed.
A failure leaves the project's previous pages and files as they were.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from mirror.cache.files import FileCache, Located
from mirror.cache.pages import PageCache, PageMeta, parse_upstream_page
from mirror.core import layout
from mirror.core.changelog import EntryKind, PlanEntry
from mirror.core.filters import Filters, filter_json_api
from mirror.core.index import PageParseError
from mirror.core.jsonapi import JsonApiError, rewrite_json_api
from mirror.core.layout import PackagePath
from mirror.core.model import ProjectPage
from mirror.core.names import is_wheel
from mirror.core.rewrite import MirroredFile, mirrored_files
from mirror.errors import (
    IntegrityError,
    MirrorError,
    StorageError,
    UpstreamError,
    UpstreamNotFound,
    UpstreamProtocolError,
    UpstreamUnavailable,
)
from mirror.log import get_logger
from mirror.storage import FileSystemStorage
from mirror.sync.journal import Outcome
from mirror.sync.prune import Pruner, json_meta
from mirror.upstream.client import PageResponse, UpstreamClient

log = get_logger("mirror.sync.project")

T = TypeVar("T")


@dataclass(frozen=True)
class ProjectResult:
    project: str
    outcome: Outcome
    serial: int | None = None
    files_added: int = 0
    bytes_added: int = 0
    files_removed: int = 0
    reason: str | None = None
    # The failure was the upstream being unreachable (the engine stops after a run of them).
    unavailable: bool = False


@dataclass(frozen=True)
class _Fetched:
    response: PageResponse
    page: ProjectPage
    serial: int | None
    json: PageResponse | None


@dataclass(frozen=True)
class _Stale:
    reason: str


@dataclass(frozen=True)
class _Gone:
    pass


class ProjectSyncer:
    def __init__(
        self,
        storage: FileSystemStorage,
        upstream: UpstreamClient,
        pages: PageCache,
        files: FileCache,
        filters: Filters,
        *,
        file_workers: int = 4,
        stale_retries: int = 3,
        stale_backoff: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.storage = storage
        self.upstream = upstream
        self.pages = pages
        self.files = files
        self.filters = filters
        self.file_workers = file_workers
        self.stale_retries = stale_retries
        self.stale_backoff = stale_backoff
        self.clock = clock
        self.pruner = Pruner(storage, pages)

    async def apply(self, entry: PlanEntry) -> ProjectResult:
        try:
            if entry.kind is EntryKind.DROP:
                removed = await self.pruner.remove_project(entry.project)
                if removed:
                    log.info("project_dropped", project=entry.project, files=removed)
                return ProjectResult(entry.project, Outcome.DONE, files_removed=removed)
            return await self._sync(entry)
        except OSError as exc:
            raise StorageError(
                f"storage error while syncing {entry.project}: {exc}; "
                "fix it (disk space, permissions), then run sync again to resume"
            ) from exc
        except (UpstreamError, IntegrityError) as exc:
            log.warning("project_failed", project=entry.project, error=str(exc))
            return ProjectResult(
                entry.project,
                Outcome.FAILED,
                reason=str(exc),
                unavailable=isinstance(exc, UpstreamUnavailable),
            )

    async def _sync(self, entry: PlanEntry) -> ProjectResult:
        fetched: _Fetched | _Stale | _Gone = _Stale("not fetched")
        for attempt in range(self.stale_retries + 1):
            if attempt:
                await asyncio.sleep(self.stale_backoff * 2 ** (attempt - 1))
            fetched = await self._fetch(entry)
            if not isinstance(fetched, _Stale):
                break
            log.info(
                "upstream_page_stale",
                project=entry.project,
                attempt=attempt + 1,
                reason=fetched.reason,
            )
        if isinstance(fetched, _Stale):
            log.warning("project_deferred", project=entry.project, reason=fetched.reason)
            return ProjectResult(entry.project, Outcome.DEFERRED, reason=fetched.reason)
        if isinstance(fetched, _Gone):
            removed = await self.pruner.remove_project(entry.project)
            log.info("project_removed", project=entry.project, files=removed)
            return ProjectResult(entry.project, Outcome.DONE, files_removed=removed)
        return await self._commit(entry.project, fetched)

    async def _fetch(self, entry: PlanEntry) -> _Fetched | _Stale | _Gone:
        project = entry.project
        try:
            response = await self.pages.fetch(project)
        except UpstreamNotFound:
            if entry.expect_gone:
                return _Gone()
            return _Stale(f"upstream has no page yet, the changelog promised serial {entry.serial}")
        try:
            page = parse_upstream_page(response.body, response.content_type, project, response.url)
        except PageParseError as exc:
            raise UpstreamProtocolError(f"upstream page for {project} is malformed: {exc}") from exc
        if page.name != project:
            raise UpstreamProtocolError(
                f"upstream answered simple/{project}/ with the page of {page.name!r}"
            )
        serial = response.last_serial if response.last_serial is not None else page.last_serial
        if serial is not None and serial < entry.serial:
            return _Stale(f"page serial {serial} is below the promised {entry.serial}")
        try:
            json = await self.upstream.get_page(f"pypi/{project}/json", accept="application/json")
        except UpstreamNotFound:
            json = None
        if json is not None and json.last_serial is not None and json.last_serial < entry.serial:
            return _Stale(
                f"JSON API serial {json.last_serial} is below the promised {entry.serial}"
            )
        return _Fetched(response, page, serial, json)

    async def _commit(self, project: str, fetched: _Fetched) -> ProjectResult:
        kept = self.filters.apply(fetched.page)
        items, _rejected = mirrored_files(kept, self.pages.is_allowed)
        old = await self.pruner.web_listed(project)
        added, nbytes = await self._download_all(project, items, old)
        gone = old - {item.path for item in items}
        await self.pruner.intend(project, gone)
        now = self.clock()
        response = fetched.response
        await self.pages.store(
            project,
            kept,
            PageMeta(now, etag=response.etag, last_serial=fetched.serial),
        )
        await self._write_json(project, kept, fetched.json, now)
        await self.storage.delete(layout.state_negative(project))
        removed = await self.pruner.execute(project, gone)
        log.info(
            "project_synced",
            project=project,
            serial=fetched.serial,
            files=len(items),
            added=added,
            bytes=nbytes,
            removed=removed,
        )
        return ProjectResult(
            project,
            Outcome.DONE,
            serial=fetched.serial,
            files_added=added,
            bytes_added=nbytes,
            files_removed=removed,
        )

    async def _download_all(
        self, project: str, items: list[MirroredFile], listed: set[PackagePath]
    ) -> tuple[int, int]:
        """Every missing file (and ``.metadata``), ``file_workers`` at a time.

        On a failure the files this call added are removed again (no page lists them) and
        the first error is raised.
        """
        added: list[PackagePath] = []
        nbytes = 0
        trust = self.files.trust
        signed_files_only = trust is not None and trust.scheme == "files"

        async def one(item: MirroredFile) -> None:
            nonlocal nbytes
            located = Located(project, item)
            if not await self.storage.exists(item.path.web):
                await self.files.download(located, render=False).wait()
                info = await self.storage.stat(item.path.web)
                added.append(item.path)
                nbytes += info.size if info else 0
            if not await self.storage.exists(item.path.web_metadata):
                if item.file.core_metadata and not signed_files_only:
                    await self.files.ensure_metadata(located)
                elif is_wheel(item.file.filename):
                    # Also in the TUF "files" scheme, where only the wheel itself is signed.
                    await self.files.extract_metadata(located, render=False)

        try:
            await bounded(items, self.file_workers, one)
        except MirrorError:
            for path in added:
                if path not in listed:
                    await self.storage.delete(path.web)
                    await self.storage.delete(path.web_metadata)
            raise
        return len(added), nbytes

    async def _write_json(
        self, project: str, kept: ProjectPage, json: PageResponse | None, now: float
    ) -> None:
        rel = layout.json_api(project)
        if json is None:
            await self.storage.delete(rel)
            await self.storage.delete(json_meta(project))
            return
        try:
            body = filter_json_api(rewrite_json_api(json.body, self.upstream.is_allowed), kept)
        except (JsonApiError, ValueError) as exc:
            log.warning("upstream_json_malformed", project=project, error=str(exc))
            return
        await self.storage.write_bytes(rel, body)
        await self.storage.write_bytes(json_meta(project), PageMeta(now, json.etag).dump())


def _as_storage_error(exc: Exception) -> MirrorError:
    if isinstance(exc, OSError):
        return StorageError(f"storage error: {exc}; fix it (disk space, permissions) and run again")
    return MirrorError(f"unexpected error: {exc!r}")


async def bounded(items: Iterable[T], workers: int, fn: Callable[[T], Awaitable[None]]) -> None:
    """Run ``fn`` over ``items`` with at most ``workers`` at once; stop taking new items
    after the first error, let the running ones finish, then raise that error."""
    iterator = iter(items)
    errors: list[BaseException] = []

    async def worker() -> None:
        for item in iterator:
            if errors:
                return
            try:
                await fn(item)
            except Exception as exc:  # one error stops the batch; the caller reports it
                errors.append(exc if isinstance(exc, MirrorError) else _as_storage_error(exc))
                return

    async with asyncio.TaskGroup() as group:
        for _ in range(workers):
            group.create_task(worker())
    if errors:
        first = next((e for e in errors if isinstance(e, IntegrityError)), errors[0])
        raise first
