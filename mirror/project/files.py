"""Distribution files and their ``.metadata``: fetched once, verified, committed.

A file is downloaded by one ``Download`` per path at a time (single flight), whoever asked:
upstream bytes go through the verifier into an atomic writer, and readers follow the bytes
written so far (``Download.open_reader``), always holding back the last ``HOLDBACK`` bytes
until the download was verified. On a mismatch the writer is aborted and the readers abort
their connections, so no client ever receives a complete unverified file.

A download always settles: whatever fails (the upstream, the store, taking the claim),
its readers are released and told why (``Download.error``; a store that cannot take the
file is a one-line ``StorageError``, "cannot store ...: no space left on ..."), and its
temp file is gone. Before its readers start it makes room for the whole file
(``AtomicWriter.reserve``), so a full disk fails it before any byte was sent to anyone.

What the bytes must be (``expected``): the page's hashes and size, the digest in the file's
``/packages/`` path, and in the TUF ``files`` scheme the signed target, which must agree
with the page. ``.metadata`` follows ``core.metadata``: verified against the page's
digest — extracted from the verified wheel when it is held (PEP 658: the same bytes),
else fetched — or extracted from the verified wheel.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable, KeysView
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mirror.core.metadata import MetadataSource
from mirror.core.model import DistFile
from mirror.core.names import is_wheel
from mirror.core.rewrite import MirroredFile
from mirror.core.verify import StreamVerifier
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
from mirror.project.source import UpstreamSource
from mirror.storage import ByteReader, Storage, storage_failure
from mirror.storage.base import Claim, Follow
from mirror.trust.base import Trust, TrustedTarget

log = get_logger("mirror.files")

HOLDBACK = 64 * 1024
METADATA_LIMIT = 16 * 1024**2
COPY_CHUNK = 1024 * 1024
# Cross-process single flight: how often a followed download is looked at, and how often
# (and how far apart) a claim that is taken but not yet started is looked for again.
FOLLOW_POLL = 0.02
CLAIM_ATTEMPTS = 50
CLAIM_RETRY = 0.02

#: Called after a ``.metadata`` was extracted from a wheel: (project, filename, sha256).
MetadataHook = Callable[[str, str, str], Awaitable[None]]


class Download:
    """One file on its way from upstream to storage, followed by any number of readers:
    written here, or by another process that holds the claim on it (then followed)."""

    def __init__(self, item: MirroredFile) -> None:
        self.item = item
        self._open: Callable[[], Awaitable[ByteReader | None]] | None = None
        self.available = 0
        self.expected_size: int | None = item.file.size
        self.done = False
        self.error: BaseException | None = None
        #: Set once the size is known and the first reader may open the bytes.
        self.started = asyncio.Event()
        self.changed = asyncio.Condition()
        self.task: asyncio.Task[None] | None = None

    @property
    def ok(self) -> bool:
        return self.done and self.error is None

    async def wait(self) -> None:
        """Until the file is committed; raises what made the download fail."""
        assert self.task is not None
        await asyncio.shield(self.task)
        if self.error is not None:
            raise self.error

    async def progressed(self, seen: int) -> None:
        async with self.changed:
            await self.changed.wait_for(lambda: self.done or self.available > seen)

    async def open_reader(self) -> ByteReader | None:
        """The bytes written so far (and the rest as they come); None if nothing is left."""
        return None if self._open is None else await self._open()

    async def _notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()


@dataclass(frozen=True)
class Expected:
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


class FileStore:
    def __init__(
        self,
        storage: Storage,
        source: UpstreamSource | None,
        metrics: Metrics,
        *,
        trust: Trust | None = None,
        max_file_size: int,
        claims: bool = True,
    ) -> None:
        self.storage = storage
        self.source = source
        self.metrics = metrics
        self.trust = trust
        self.max_file_size = max_file_size
        #: Download under the storage's claims, so that processes share downloads (serve);
        #: a sync, whose downloads are its own, does without their cost.
        self.claims = claims
        #: Told the path and size of every file and ``.metadata`` committed by this
        #: process (``cache.usage``: the cache's size, kept without walking the tree).
        self.on_commit: Callable[[str, int], None] = lambda _rel, _size: None
        #: Told about every ``.metadata`` extracted after a download (a page re-render).
        self.on_metadata: MetadataHook | None = None
        self._downloads: dict[str, Download] = {}
        self._metadata_inflight: dict[str, asyncio.Task[str | None]] = {}

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

    def download(self, project: str, item: MirroredFile, *, extract: bool = True) -> Download:
        """The file's single download. ``extract``: a wheel for which the page offers no
        metadata gets its ``.metadata`` before readers are released (so the next page
        advertises it); the sync, which makes every ``.metadata`` itself, says False."""
        rel = item.path.web
        current = self._downloads.get(rel)
        if current is not None and not current.done:
            return current
        download = Download(item)
        self._downloads[rel] = download
        download.task = asyncio.create_task(self._settled(project, download, extract))
        download.task.add_done_callback(lambda _t: self._forget(rel, download))
        return download

    def _forget(self, rel: str, download: Download) -> None:
        if self._downloads.get(rel) is download:
            del self._downloads[rel]

    def _store_failure(self, exc: OSError, what: str) -> StorageError:
        return storage_failure(exc, what, self.storage.describe())

    async def _settled(self, project: str, download: Download, extract: bool) -> None:
        """``_obtain``, after which the download is always settled — done, its readers
        released and told why it failed — whatever went wrong, also before it started
        (taking the claim, looking at the store): no reader waits for it forever."""
        try:
            await self._obtain(project, download, extract)
        except asyncio.CancelledError:
            if download.error is None and not download.done:
                download.error = UpstreamError(
                    f"download of {download.item.path.rel} was cancelled"
                )
            raise
        except OSError as exc:
            if download.error is None:
                download.error = self._store_failure(exc, download.item.path.rel)
                log.error(
                    "storage_write_failed",
                    project=project,
                    file=download.item.path.rel,
                    error=str(download.error),
                )
        except Exception as exc:  # a bug: logged here, raised again to every waiter
            if download.error is None:
                download.error = exc
                log.exception("download_crashed", project=project, file=download.item.path.rel)
        finally:
            if not download.done:
                download.done = True
            download.started.set()
            await download._notify()

    async def _obtain(self, project: str, download: Download, extract: bool) -> None:
        """Download the file under its claim, or follow the process that holds the claim."""
        rel = download.item.path.web
        if not self.claims:
            await self._run(project, download, extract, None)
            return
        for _ in range(CLAIM_ATTEMPTS):
            claim = await self.storage.claim(rel)
            if claim is not None:
                if await self.storage.exists(rel):  # another process just finished it
                    await claim.release()
                    await self._held(download)
                else:
                    await self._run(project, download, extract, claim)
                return
            follow = await self.storage.follow(rel)
            if follow is not None:
                await self._follow(download, follow)
                return
            await asyncio.sleep(CLAIM_RETRY)  # claimed, not started yet: look again
        # Never got hold of it: download it anyway (the same verified bytes, twice).
        await self._run(project, download, extract, None)

    async def _held(self, download: Download) -> None:
        rel = download.item.path.web
        info = await self.storage.stat(rel)
        size = info.size if info is not None else 0
        download._open = lambda: self.storage.open_read(rel)
        download.available = download.expected_size = size
        download.done = True
        download.started.set()
        await download._notify()

    async def _follow(self, download: Download, follow: Follow) -> None:
        """Another process downloads the file: its bytes are passed on as they grow, and it
        is complete when that process let go of its claim with the file committed."""
        item = download.item
        download._open = follow.open_reader
        download.started.set()
        try:
            while await follow.active():
                written = await follow.written()
                if written > download.available:
                    download.available = written
                    await download._notify()
                await asyncio.sleep(FOLLOW_POLL)
            info = await self.storage.stat(item.path.web)
            if info is None or (download.expected_size not in (None, info.size)):
                download.error = UpstreamError(
                    f"the download of {item.path.rel} by another process failed; ask again"
                )
            else:
                download.available = download.expected_size = info.size
        finally:
            await follow.close()
            download.done = True
            await download._notify()

    async def _run(
        self, project: str, download: Download, extract: bool, claim: Claim | None
    ) -> None:
        """Download, verify and commit the file (under ``claim``, which it releases)."""
        assert self.source is not None
        item = download.item
        writer = self.storage.writer(item.path.web, claim=claim)
        download._open = writer.open_reader
        try:
            await writer.write(b"")
            await writer.flush()
            expected = await self.expected(item)
            if expected.length is not None:
                download.expected_size = expected.length
            async with self.source.upstream.open_file(item.file.url) as stream:
                if download.expected_size is None:
                    download.expected_size = stream.content_length
                if download.expected_size is not None:
                    # A full store fails here, before any reader was given a byte.
                    await writer.reserve(download.expected_size)
                download.started.set()
                verifier = StreamVerifier(item.path.rel, expected.hashes, download.expected_size)
                limit = download.expected_size or self.max_file_size
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
                project=project,
                file=item.path.rel,
                size=writer.written,
                sha256=digests["sha256"],
            )
            self.on_commit(item.path.web, writer.written)
            if extract and item.metadata is MetadataSource.WHEEL and not item.file.core_metadata:
                # The page offers no metadata for it yet: from now on it can.
                await self._extract_after_download(project, item)
        except IntegrityError as exc:
            download.error = exc
            self._integrity_failure(project, item.path.rel, item.file.url, exc)
            self.metrics.upstream_downloads.labels("integrity").inc()
        except UpstreamError as exc:
            download.error = exc
            self.metrics.upstream_downloads.labels("upstream_error").inc()
            log.warning(
                "upstream_download_failed", project=project, file=item.path.rel, error=str(exc)
            )
        except OSError as exc:
            download.error = self._store_failure(exc, item.path.rel)
            log.error(
                "storage_write_failed",
                project=project,
                file=item.path.rel,
                error=str(download.error),
            )
        except asyncio.CancelledError:
            download.error = UpstreamError(f"download of {item.path.rel} was cancelled")
            raise
        except Exception as exc:  # a bug: logged here, raised again to every waiter
            download.error = exc
            log.exception("download_crashed", project=project, file=item.path.rel)
        finally:
            try:
                if download.error is not None:
                    await writer.abort()
            finally:
                try:
                    if claim is not None:
                        await claim.release()  # before anyone hears it is done
                finally:
                    download.done = True
                    download.started.set()
                    await download._notify()

    async def _extract_after_download(self, project: str, item: MirroredFile) -> None:
        try:
            sha256 = await self.extract_metadata(project, item)
        except (MirrorError, OSError) as exc:
            log.warning("wheel_metadata_failed", file=item.path.rel, error=str(exc))
            return
        if sha256 is not None and self.on_metadata is not None:
            await self.on_metadata(project, item.file.filename, sha256)

    def _integrity_failure(self, project: str, rel: str, url: str, exc: IntegrityError) -> None:
        self.metrics.integrity_failures.labels(type(exc).__name__).inc()
        log.error(
            "integrity_failure",
            project=project,
            file=rel,
            url=url,
            error=str(exc),
            expected=getattr(exc, "expected", None),
            actual=getattr(exc, "actual", None),
        )

    async def expected(self, item: MirroredFile) -> Expected:
        digests = item.expected_digests()
        if self.source is None or not self.source.signed_files_only:
            return Expected(item.file.size, digests)
        assert self.trust is not None
        target = await self.trust.file_target(item.path.rel)
        merged = merge_expectations(item.path.rel, digests, item.file.size, target)
        return Expected(target.length, merged)

    # -- .metadata ------------------------------------------------------------------------

    async def ensure_metadata(self, project: str, item: MirroredFile) -> str | None:
        """Make ``<file>.metadata`` held (from upstream or from the wheel, downloading the
        wheel if needed); its sha256, or None when the file has no metadata to give."""
        rel = item.path.web_metadata
        task = self._metadata_inflight.get(rel)
        if task is None:
            task = asyncio.create_task(self._ensure_metadata(project, item))
            self._metadata_inflight[rel] = task
            task.add_done_callback(lambda _t: self._metadata_inflight.pop(rel, None))
        try:
            return await asyncio.shield(task)
        except OSError as exc:
            raise self._store_failure(exc, f"{item.path.rel}.metadata") from exc

    async def _ensure_metadata(self, project: str, item: MirroredFile) -> str | None:
        held = await self.storage.read_bytes(item.path.web_metadata, limit=METADATA_LIMIT)
        if held is not None:
            return hashlib.sha256(held).hexdigest()
        if item.metadata is MetadataSource.NONE:
            return None
        if item.metadata is MetadataSource.UPSTREAM:
            if is_wheel(item.file.filename) and await self.storage.exists(item.path.web):
                # PEP 658: upstream's .metadata is the wheel's METADATA, unmodified. The
                # verified wheel in hand gives the same bytes without asking upstream,
                # checked against the digest the page advertises; should they differ,
                # upstream's own file is fetched and checked against it instead.
                sha256 = await self.extract_metadata(project, item, expected=item.file)
                if sha256 is not None:
                    return sha256
            try:
                return await self._fetch_metadata(project, item)
            except UpstreamNotFound:
                if not is_wheel(item.file.filename):
                    return None
                # The page advertised a .metadata the mirror extracted (it is not upstream's).
        if not await self.storage.exists(item.path.web):
            await self.download(project, item, extract=False).wait()
        return await self.extract_metadata(project, item)

    async def _fetch_metadata(self, project: str, item: MirroredFile) -> str:
        assert self.source is not None
        core = item.file.core_metadata
        digests = dict(core) if not isinstance(core, bool) else {}
        url = item.metadata_url
        writer = self.storage.writer(item.path.web_metadata)
        try:
            async with self.source.upstream.open_file(url) as stream:
                verifier = StreamVerifier(f"{item.path.rel}.metadata", digests)
                async for chunk in stream.chunks():
                    verifier.update(chunk)
                    if verifier.size > METADATA_LIMIT:
                        raise UpstreamTooLarge(f"{url} is larger than {METADATA_LIMIT} bytes")
                    await writer.write(chunk)
                sha256 = verifier.finish()["sha256"]
            await writer.commit()
            self.on_commit(item.path.web_metadata, writer.written)
            return sha256
        except IntegrityError as exc:
            self._integrity_failure(project, f"{item.path.rel}.metadata", url, exc)
            raise
        finally:
            await writer.abort()

    async def extract_metadata(
        self, project: str, item: MirroredFile, *, expected: DistFile | None = None
    ) -> str | None:
        """Write ``<wheel>.metadata`` from the held, verified wheel; its sha256, or None
        when the wheel has no readable METADATA — or, with ``expected`` (the page's file),
        when it does not match the ``core-metadata`` digests the page gives (nothing is
        written then)."""
        async with self._wheel_file(item.path.web) as path:
            data = await asyncio.get_running_loop().run_in_executor(
                None, _read_wheel_metadata, path, item.path.rel
            )
        if data is None:
            return None
        if expected is not None:
            core = expected.core_metadata
            verifier = StreamVerifier(
                f"{item.path.rel}.metadata", dict(core) if not isinstance(core, bool) else {}
            )
            verifier.update(data)
            try:
                sha256 = verifier.finish()["sha256"]
            except IntegrityError as exc:
                log.warning(
                    "wheel_metadata_differs", project=project, file=item.path.rel, error=str(exc)
                )
                return None
        else:
            sha256 = hashlib.sha256(data).hexdigest()
        await self.storage.write_bytes(item.path.web_metadata, data)
        self.on_commit(item.path.web_metadata, len(data))
        log.info("wheel_metadata_extracted", project=project, file=item.path.rel)
        return sha256

    @contextlib.asynccontextmanager
    async def _wheel_file(self, rel: str) -> AsyncIterator[Path | None]:
        """The wheel as a real file: the stored one, or a scratch copy of its bytes."""
        local = self.storage.local_path(rel)
        if local is not None:
            yield local
            return
        reader = await self.storage.open_read(rel)
        if reader is None:
            yield None
            return
        scratch = self.storage.scratch_dir() / f"wheel-{hashlib.sha256(rel.encode()).hexdigest()}"
        loop = asyncio.get_running_loop()
        try:
            with scratch.open("wb") as handle:
                while chunk := await reader.read(COPY_CHUNK):
                    await loop.run_in_executor(None, handle.write, chunk)
            yield scratch
        finally:
            await reader.close()
            with contextlib.suppress(FileNotFoundError):
                scratch.unlink()


def _read_wheel_metadata(path: Path | None, rel: str) -> bytes | None:
    if path is None:
        return None
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
        log.warning("wheel_metadata_unreadable", file=rel, error=str(exc))
    return None
