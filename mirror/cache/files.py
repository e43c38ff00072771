"""Distribution files in pull-through mode: one verified download per file, shared by all.

A miss starts a ``Download`` (single flight per path): upstream bytes go through the
verifier into a temp file, and readers tail that temp file while it grows, always holding
back the last ``HOLDBACK`` bytes until the download was verified. On a mismatch the
temp file is dropped and the readers abort their connections, so no client ever receives a
complete unverified file.
"""

from __future__ import annotations

import asyncio
import zipfile
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Callable, KeysView, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from mirror.cache.pages import PageCache
from mirror.core.layout import PackagePath
from mirror.core.names import is_wheel, project_candidates_from_filename
from mirror.core.rewrite import MirroredFile, find_file
from mirror.core.verify import SUPPORTED, StreamVerifier
from mirror.errors import (
    IntegrityError,
    MirrorError,
    StorageError,
    TrustError,
    UpstreamError,
    UpstreamNotFound,
    UpstreamTooLarge,
)
from mirror.log import get_logger
from mirror.metrics import Metrics
from mirror.storage import FileSystemStorage
from mirror.trust.base import Trust, TrustedTarget
from mirror.upstream.client import UpstreamClient

log = get_logger("mirror.files")

HOLDBACK = 64 * 1024
METADATA_LIMIT = 16 * 1024**2
PRESENT_ENTRIES = 100_000
MAX_CANDIDATES = 3


class Download:
    def __init__(self, item: MirroredFile, temp_path_ready: asyncio.Event) -> None:
        self.item = item
        self.available = 0
        self.expected_size: int | None = item.file.size
        self.done = False
        self.error: BaseException | None = None
        self.temp_path: str | None = None
        self.temp_ready = temp_path_ready
        self.changed = asyncio.Condition()
        self.task: asyncio.Task[None] | None = None

    @property
    def ok(self) -> bool:
        return self.done and self.error is None

    async def wait(self) -> None:
        assert self.task is not None
        await asyncio.shield(self.task)
        if isinstance(self.error, MirrorError):
            raise self.error
        if self.error is not None:
            raise StorageError(f"download of {self.item.path.rel} failed: {self.error!r}")

    async def progressed(self, seen: int) -> None:
        async with self.changed:
            await self.changed.wait_for(lambda: self.done or self.available > seen)

    async def _notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()


@dataclass(frozen=True)
class _Expected:
    length: int | None
    hashes: dict[str, str]


def merge_expectations(
    what: str, digests: dict[str, str], size: int | None, target: TrustedTarget
) -> dict[str, str]:
    """The page's digests joined with the signed target's; any disagreement is a TrustError."""
    if size is not None and size != target.length:
        raise TrustError(f"{what}: index says {size} bytes, signed target says {target.length}")
    merged = dict(digests)
    for algorithm, value in target.hashes.items():
        value = value.lower()
        if algorithm in merged and merged[algorithm] != value:
            raise TrustError(
                f"{what}: index {algorithm} {merged[algorithm]} differs from signed target {value}"
            )
        merged[algorithm] = value
    return merged


def _verifiable(core: object) -> bool:
    """Upstream's .metadata is fetched only when a digest we check vouches for it (else it
    is taken from the verified wheel)."""
    return isinstance(core, Mapping) and any(a in SUPPORTED for a in core)


@dataclass(frozen=True)
class Located:
    project: str
    item: MirroredFile


class FileCache:
    def __init__(
        self,
        storage: FileSystemStorage,
        upstream: UpstreamClient | None,
        pages: PageCache,
        metrics: Metrics,
        on_commit: Callable[[int], None] | None = None,
        trust: Trust | None = None,
    ) -> None:
        self.trust = trust
        self.storage = storage
        self.upstream = upstream
        self.pages = pages
        self.metrics = metrics
        self.on_commit = on_commit
        self.readers: Counter[str] = Counter()
        # Files recently seen on disk: a hit then costs one executor hop (the sendfile's).
        # Eviction forgets what it removes; a file removed behind our back is a 404.
        self._present: OrderedDict[str, None] = OrderedDict()
        self._downloads: dict[str, Download] = {}
        self._metadata_inflight: dict[str, asyncio.Task[bool]] = {}

    def known_present(self, rel: str) -> bool:
        if rel in self._present:
            self._present.move_to_end(rel)
            return True
        return False

    def note_present(self, rel: str) -> None:
        self._present[rel] = None
        self._present.move_to_end(rel)
        while len(self._present) > PRESENT_ENTRIES:
            self._present.popitem(last=False)

    def forget_present(self, rel: str) -> None:
        self._present.pop(rel, None)
        self._present.pop(rel + ".metadata", None)

    @property
    def downloading(self) -> KeysView[str]:
        return self._downloads.keys()

    async def close(self) -> None:
        """Cancel downloads still running (shutdown); their temp files are removed."""
        tasks: list[asyncio.Task[Any]] = [
            d.task for d in self._downloads.values() if d.task is not None
        ]
        tasks += self._metadata_inflight.values()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    @asynccontextmanager
    async def reading(self, rel: str) -> AsyncIterator[None]:
        """Mark ``rel`` as being read so that eviction leaves it alone."""
        self.readers[rel] += 1
        try:
            yield
        finally:
            self.readers[rel] -= 1
            if self.readers[rel] <= 0:
                del self.readers[rel]

    async def locate(self, path: PackagePath) -> Located | None:
        """Which project lists this file, by its filename and the cached (or fetched) pages."""
        candidates = project_candidates_from_filename(path.filename)[:MAX_CANDIDATES]
        cached = [p for p in candidates if await self.pages.has_page(p)]
        # Cached pages first; only the likeliest names at all, so that a made-up filename
        # costs at most MAX_CANDIDATES upstream page requests.
        for project in cached + [p for p in candidates if p not in cached]:
            page = await self.pages.upstream_page(project)
            if page is None:
                try:
                    await self.pages.ensure(project)
                except UpstreamNotFound:
                    continue
                page = await self.pages.upstream_page(project)
                if page is None:
                    continue
            item = find_file(page, path, self.pages.is_allowed)
            if item is None and await self.pages.may_refresh_for_unknown_file(project):
                # Perhaps uploaded since the page was cached: look once more, upstream.
                await self.pages.refresh(project)
                page = await self.pages.upstream_page(project)
                item = find_file(page, path, self.pages.is_allowed) if page else None
            if item is not None:
                return Located(project, item)
        return None

    def download(self, located: Located, *, render: bool = True) -> Download:
        """The file's single download; ``render=False`` (the sync, which renders the page
        itself once all files are in) skips re-rendering the page after extracting metadata."""
        rel = located.item.path.web
        current = self._downloads.get(rel)
        if current is not None:
            return current
        download = Download(located.item, asyncio.Event())
        self._downloads[rel] = download
        download.task = asyncio.create_task(self._run(located, download, render))
        download.task.add_done_callback(lambda _t: self._downloads.pop(rel, None))
        return download

    async def _run(self, located: Located, download: Download, render: bool = True) -> None:
        assert self.upstream is not None
        item = located.item
        writer = self.storage.writer(item.path.web)
        download.temp_path = str(writer.temp_path)
        try:
            await writer.write(b"")
            await writer.flush()
            expected = await self.expected(item)
            if expected.length is not None:
                download.expected_size = expected.length
            async with self.upstream.open_file(item.file.url) as stream:
                if download.expected_size is None:
                    download.expected_size = stream.content_length
                download.temp_ready.set()
                verifier = StreamVerifier(item.path.rel, expected.hashes, download.expected_size)
                limit = download.expected_size or self.upstream.config.max_file_size
                async for chunk in stream.chunks():
                    verifier.update(chunk)
                    if verifier.size > limit:
                        raise UpstreamTooLarge(
                            f"{item.file.url} is over {limit} bytes; see [upstream] max-file-size"
                        )
                    await writer.write(chunk)
                    await writer.flush()
                    download.available = writer.written
                    await download._notify()
                digests = verifier.finish()
            await writer.commit()
            self.metrics.upstream_downloads.labels("ok").inc()
            self.metrics.upstream_bytes.inc(writer.written)
            log.info(
                "file_cached",
                project=located.project,
                file=item.path.rel,
                size=writer.written,
                sha256=digests["sha256"],
            )
            if self.on_commit:
                self.on_commit(writer.written)
            if is_wheel(item.file.filename) and not item.file.core_metadata:
                # Before readers are released, so the next page request advertises it.
                try:
                    await self.extract_metadata(located, render=render)
                except MirrorError as exc:
                    log.warning("wheel_metadata_failed", file=item.path.rel, error=str(exc))
        except IntegrityError as exc:
            download.error = exc
            self.metrics.integrity_failures.labels(type(exc).__name__).inc()
            self.metrics.upstream_downloads.labels("integrity").inc()
            log.error(
                "integrity_failure",
                project=located.project,
                file=item.path.rel,
                url=item.file.url,
                error=str(exc),
                expected=getattr(exc, "expected", None),
                actual=getattr(exc, "actual", None),
            )
        except UpstreamError as exc:
            download.error = exc
            self.metrics.upstream_downloads.labels("upstream_error").inc()
            log.warning(
                "upstream_download_failed",
                project=located.project,
                file=item.path.rel,
                error=str(exc),
            )
        except OSError as exc:
            download.error = StorageError(f"storing {item.path.rel} failed: {exc}")
            log.error(
                "storage_write_failed", project=located.project, file=item.path.rel, error=str(exc)
            )
        except asyncio.CancelledError as exc:
            download.error = UpstreamError(f"download of {item.path.rel} was cancelled")
            raise exc
        except Exception as exc:  # never let readers treat an unfinished file as verified
            download.error = exc
            log.exception("download_crashed", project=located.project, file=item.path.rel)
        finally:
            if download.error is not None:
                await writer.abort()
            download.done = True
            download.temp_ready.set()
            await download._notify()

    async def expected(self, item: MirroredFile) -> _Expected:
        """What the bytes must be: the page's hashes and size, the path's digest, and in
        the ``files`` trust scheme the signed target, which must agree with the page."""
        digests = item.expected_digests()
        if self.trust is None or self.trust.scheme != "files":
            return _Expected(item.file.size, digests)
        target = await self.trust.file_target(item.path.rel)
        merged = merge_expectations(item.path.rel, digests, item.file.size, target)
        return _Expected(target.length, merged)

    async def extract_metadata(self, located: Located, *, render: bool = True) -> bool:
        """Write ``<wheel>.metadata`` from the cached wheel, then re-render the project page."""
        item = located.item
        path = self.storage.path(item.path.web)

        def extract() -> bytes | None:
            try:
                with zipfile.ZipFile(path) as wheel:
                    for info in wheel.infolist():
                        parts = info.filename.split("/")
                        if (
                            len(parts) == 2
                            and parts[0].endswith(".dist-info")
                            and parts[1] == "METADATA"
                            and info.file_size <= METADATA_LIMIT
                        ):
                            return wheel.read(info)
            except (OSError, zipfile.BadZipFile, KeyError) as exc:
                log.warning("wheel_metadata_unreadable", file=item.path.rel, error=str(exc))
            return None

        data = await asyncio.get_running_loop().run_in_executor(None, extract)
        if data is None:
            return False
        await self.storage.write_bytes(item.path.web_metadata, data)
        log.info("wheel_metadata_extracted", project=located.project, file=item.path.rel)
        if render:
            await self.pages.render(located.project)
        return True

    async def ensure_metadata(self, located: Located) -> bool:
        """Make ``<file>.metadata`` present: from upstream where offered, else from the wheel."""
        rel = located.item.path.web_metadata
        task = self._metadata_inflight.get(rel)
        if task is None:
            task = asyncio.create_task(self._ensure_metadata(located))
            self._metadata_inflight[rel] = task
            task.add_done_callback(lambda _t: self._metadata_inflight.pop(rel, None))
        return await asyncio.shield(task)

    async def _ensure_metadata(self, located: Located) -> bool:
        item = located.item
        if await self.storage.exists(item.path.web_metadata):
            return True
        core = item.file.core_metadata
        # In the TUF ``files`` scheme only distribution files are signed: the upstream's
        # .metadata is vouched for by an unsigned page only, so take it from the verified
        # wheel instead.
        signed_files_only = self.trust is not None and self.trust.scheme == "files"
        if core and not signed_files_only and _verifiable(core):
            return await self._fetch_metadata(located)
        if not is_wheel(item.file.filename):
            return False
        if not await self.storage.exists(item.path.web):
            await self.download(located).wait()
            if await self.storage.exists(item.path.web_metadata):
                return True
        return await self.extract_metadata(located)

    async def _fetch_metadata(self, located: Located) -> bool:
        assert self.upstream is not None
        item = located.item
        core = item.file.core_metadata
        digests = dict(core) if not isinstance(core, bool) else {}
        url = item.file.url.split("#", 1)[0] + ".metadata"
        writer = self.storage.writer(item.path.web_metadata)
        try:
            async with self.upstream.open_file(url) as stream:
                verifier = StreamVerifier(f"{item.path.rel}.metadata", digests)
                async for chunk in stream.chunks():
                    verifier.update(chunk)
                    if verifier.size > METADATA_LIMIT:
                        raise UpstreamError(f"{url} is larger than {METADATA_LIMIT} bytes")
                    await writer.write(chunk)
                verifier.finish()
            await writer.commit()
            return True
        except IntegrityError as exc:
            self.metrics.integrity_failures.labels(type(exc).__name__).inc()
            log.error(
                "integrity_failure",
                project=located.project,
                file=f"{item.path.rel}.metadata",
                url=url,
                error=str(exc),
            )
            raise
        finally:
            await writer.abort()
