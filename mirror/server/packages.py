"""``/packages/aa/bb/<digest>/<filename>`` and ``<filename>.metadata``.

A hit is a ``web.FileResponse`` (sendfile, Range, HEAD, ETag, 304), or a small file from
memory. A miss joins the file's single download and streams the bytes written so far,
holding back the tail until the download was verified; if verification fails the
connection is aborted. A store that cannot take the file (a full disk) is a clear 503:
the download makes room for the whole file before its readers start.

Eviction never turns a listed file into a 404: a request marks its file as being read
before it looks for it (eviction in this process leaves it alone until the answer is
sent), opens it before answering (then removing it changes nothing for this answer),
and a file gone by then — removed by another process — is fetched again as a miss.
"""

from __future__ import annotations

import asyncio
import weakref

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter

from mirror.cache.files import Located, ReadHold
from mirror.cache.hot import HeldBytes
from mirror.cache.pages import CacheResult
from mirror.core.layout import METADATA_SUFFIX, PackagePath, parse_package_path
from mirror.errors import (
    IntegrityError,
    MirrorError,
    StorageError,
    UpstreamError,
    UpstreamNotFound,
)
from mirror.log import get_logger
from mirror.project.files import HOLDBACK, Download
from mirror.server.errors import upstream_failure
from mirror.server.keys import CACHE_RESULT, services
from mirror.server.stored import (
    OpenedFile,
    asks_no_bytes,
    not_satisfiable,
    open_stored,
    stored_response,
    unsatisfiable,
)
from mirror.services import Services
from mirror.storage import ByteReader

log = get_logger("mirror.packages")
_background: set[asyncio.Task[None]] = set()

FILE_CACHE_CONTROL = "max-age=365000000, immutable, public"
READ_CHUNK = 256 * 1024
#: A miss whose file is removed (by another process) as soon as it is stored is fetched
#: again, this many times in all.
MISS_ATTEMPTS = 3
CONDITIONAL_HEADERS = ("Range", "If-Range", "If-None-Match", "If-Modified-Since", "If-Match")
# What a held (in-memory) answer does not handle: FileResponse does.
MEMORY_UNFIT_HEADERS = ("Range", "If-Range", "If-Modified-Since", "If-Match", "If-Unmodified-Since")


def file_headers(filename: str) -> dict[str, str]:
    content_type = (
        "text/plain; charset=utf-8"
        if filename.endswith(METADATA_SUFFIX)
        else "application/octet-stream"
    )
    return {
        "Content-Type": content_type,
        "Cache-Control": FILE_CACHE_CONTROL,
        "Accept-Ranges": "bytes",
    }


def _parse(tail: str) -> tuple[PackagePath, bool]:
    is_metadata = tail.endswith(METADATA_SUFFIX)
    path = parse_package_path(tail.removesuffix(METADATA_SUFFIX) if is_metadata else tail)
    if path is None:
        raise web.HTTPNotFound(
            text="not a package path: expected /packages/aa/bb/<60 hex>/<filename>\n"
        )
    return path, is_metadata


async def package_file(request: web.Request) -> web.StreamResponse:
    svc = services(request)
    path, is_metadata = _parse(request.match_info["tail"])
    rel = path.web_metadata if is_metadata else path.web
    # From here until its answer is sent (or given up), eviction leaves the file alone.
    hold = svc.files.hold(rel)
    try:
        return await _package_file(request, svc, path, is_metadata, rel, hold)
    finally:
        hold.release()  # unless the answer took it over (then it releases it)


async def _package_file(
    request: web.Request,
    svc: Services,
    path: PackagePath,
    is_metadata: bool,
    rel: str,
    hold: ReadHold,
) -> web.StreamResponse:
    if svc.files.known_present(rel) or await svc.storage.stat(rel) is not None:
        response = await _serve_stored(request, svc, rel, hold)
        if response is not None:
            svc.files.note_present(rel)
            request[CACHE_RESULT] = CacheResult.HIT
            svc.metrics.cache_results.labels("file", CacheResult.HIT.value).inc()
            return response
        svc.files.forget_present(rel)  # removed meanwhile (by another process): a miss
    if svc.pages.offline:
        raise web.HTTPNotFound(text=f"{path.filename} is not held by this offline mirror\n")
    request[CACHE_RESULT] = CacheResult.MISS
    svc.metrics.cache_results.labels("file", CacheResult.MISS.value).inc()
    try:
        located = await svc.files.locate(path)
    except (UpstreamError, IntegrityError, StorageError) as exc:
        raise upstream_failure(exc, path.filename) from exc
    if located is None:
        raise web.HTTPNotFound(text=f"{path.filename} is not listed by the upstream index\n")
    for _ in range(MISS_ATTEMPTS):
        try:
            if is_metadata:
                return await _metadata_miss(request, svc, located, rel, hold)
            return await _answer_download(request, svc, svc.files.download(located), hold)
        except _Vanished:
            # Stored, then removed by another process before it could be read: again.
            log.info("file_vanished", file=rel)
    raise web.HTTPServiceUnavailable(
        text=f"{path.filename} was evicted each time as soon as it was stored; ask again "
        "(see [cache] max-size)\n",
        headers={"Retry-After": "1"},
    )


class _Vanished(Exception):
    """A file just stored was removed (by another process) before it could be read."""


async def _answer_download(
    request: web.Request, svc: Services, download: Download, hold: ReadHold
) -> web.StreamResponse:
    if request.method == "HEAD":
        return await _head_of_download(request, svc, download, hold)
    byte_range = _single_range(request)
    if byte_range is not None:
        return await _range_of_download(request, svc, download, byte_range, hold)
    if any(h in request.headers for h in CONDITIONAL_HEADERS):
        return await _serve_when_done(request, svc, download, hold)
    return await _stream_download(request, download)


async def _serve_when_done(
    request: web.Request, svc: Services, download: Download, hold: ReadHold
) -> web.StreamResponse:
    """Wait for the verified file, then answer as for a hit (conditions, ranges)."""
    try:
        await download.wait()
    except MirrorError as exc:
        raise upstream_failure(exc, download.item.file.filename) from exc
    return await _serve_stored_or_retry(request, svc, download.item.path.web, hold)


async def _serve_stored_or_retry(
    request: web.Request, svc: Services, rel: str, hold: ReadHold
) -> web.StreamResponse:
    """A file just stored, answered as a hit (``_Vanished`` if it is gone already)."""
    response = await _serve_stored(request, svc, rel, hold)
    if response is None:
        raise _Vanished(rel)
    return response


async def _head_of_download(
    request: web.Request, svc: Services, download: Download, hold: ReadHold
) -> web.StreamResponse:
    """A HEAD of a file on its way: its size is known from the index (or the upstream's
    answer), so the client need not wait for the bytes; the download goes on."""
    if download.expected_size is None:
        await download.started.wait()
    size = download.expected_size
    if size is None or (download.done and download.error is not None):
        return await _serve_when_done(request, svc, download, hold)
    response = web.StreamResponse(headers=file_headers(download.item.file.filename))
    response.content_length = size
    return response


def _single_range(request: web.Request) -> tuple[int | None, int | None] | None:
    """``Range: bytes=a-b`` (one range, no ``If-Range``) as (a, b); None otherwise."""
    header = request.headers.get("Range", "")
    if not header or "If-Range" in request.headers:
        return None
    unit, _, spec = header.partition("=")
    first, sep, last = spec.strip().partition("-")
    if unit.strip().lower() != "bytes" or not sep or "," in spec or not (first or last):
        return None
    if not all(part.isdigit() for part in (first, last) if part):
        return None
    return (int(first) if first else None, int(last) if last else None)


async def _range_of_download(
    request: web.Request,
    svc: Services,
    download: Download,
    byte_range: tuple[int | None, int | None],
    hold: ReadHold,
) -> web.StreamResponse:
    """A range of a file on its way, answered from the bytes already written when it lies
    before the held-back tail; a range that reaches into the tail waits for the verified
    file (then it is a plain hit)."""
    if download.expected_size is None:
        await download.started.wait()
    size = download.expected_size
    if size is None:
        return await _serve_when_done(request, svc, download, hold)
    if unsatisfiable(request, None, size):
        raise not_satisfiable(size)
    first, last = byte_range
    if first is None:  # the last N bytes
        assert last is not None
        start, end = max(0, size - last), size - 1
    else:
        start, end = first, min(size - 1, last if last is not None else size - 1)
    if start > end or start >= size or end >= size - HOLDBACK:
        return await _serve_when_done(request, svc, download, hold)
    while download.available <= end and not download.done:
        await download.progressed(download.available)
    if download.error is not None or download.available <= end:
        return await _serve_when_done(request, svc, download, hold)
    reader = await download.open_reader()
    if reader is None:
        return await _serve_when_done(request, svc, download, hold)
    headers = file_headers(download.item.file.filename)
    headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    response = web.StreamResponse(status=206, headers=headers)
    response.content_length = end - start + 1
    try:
        await _skip(reader, start)
        await response.prepare(request)
        remaining = end - start + 1
        while remaining > 0:
            chunk = await reader.read(min(READ_CHUNK, remaining))
            if not chunk:
                break
            await response.write(chunk)
            remaining -= len(chunk)
        await response.write_eof()
    finally:
        await reader.close()
    return response


async def _skip(reader: ByteReader, count: int) -> None:
    while count > 0:
        chunk = await reader.read(min(READ_CHUNK, count))
        if not chunk:
            return
        count -= len(chunk)


async def _metadata_miss(
    request: web.Request, svc: Services, located: Located, rel: str, hold: ReadHold
) -> web.StreamResponse:
    try:
        found = await svc.files.ensure_metadata(located)
    except UpstreamNotFound:
        found = False
    except (UpstreamError, IntegrityError, StorageError) as exc:
        raise upstream_failure(exc, located.item.file.filename + METADATA_SUFFIX) from exc
    if not found:
        raise web.HTTPNotFound(text=f"no metadata for {located.item.file.filename}\n")
    return await _serve_stored_or_retry(request, svc, rel, hold)


class _OpenedFileResponse(web.FileResponse):
    """A FileResponse on a file opened ahead (``OpenedFile``), which keeps its file marked
    as being read (``ReadHold``) until it was sent; both are let go when it is done — or
    when it is dropped without ever being sent."""

    def __init__(self, opened: OpenedFile, hold: ReadHold, headers: dict[str, str]) -> None:
        super().__init__(opened.path, headers=headers)
        self._done = weakref.finalize(self, _let_go, opened, hold)

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        try:
            return await super().prepare(request)
        finally:
            self._done()


def _let_go(opened: OpenedFile, hold: ReadHold) -> None:
    opened.close()
    hold.release()


async def _serve_stored(
    request: web.Request, svc: Services, rel: str, hold: ReadHold
) -> web.StreamResponse | None:
    """The stored file ``rel``, or None when it is not there (any more)."""
    headers = file_headers(rel)
    if not any(h in request.headers for h in MEMORY_UNFIT_HEADERS):
        held = await svc.hot_files.get(rel)
        if held is not None:
            _touched(svc, rel)
            return _held_response(request, held, headers)
    local = svc.storage.local_path(rel)
    if local is None:  # no local file (object storage): streamed
        _touched(svc, rel)
        return await stored_response(request, svc.storage, rel, headers)
    opened = await asyncio.get_running_loop().run_in_executor(None, open_stored, local)
    if opened is None:
        return None
    try:
        if asks_no_bytes(request):
            info = await svc.storage.stat(rel)
            if info is not None and unsatisfiable(request, info, info.size):
                raise not_satisfiable(info.size)
    except BaseException:
        opened.close()
        raise
    _touched(svc, rel)
    return _OpenedFileResponse(opened, hold.another(), headers)


def _held_response(
    request: web.Request, held: HeldBytes, headers: dict[str, str]
) -> web.StreamResponse:
    """A small file from memory, with the validators a FileResponse would give it."""
    headers["ETag"] = held.etag
    if held.last_modified is not None:
        headers["Last-Modified"] = held.last_modified
    if held.etag in request.headers.get("If-None-Match", ""):
        del headers["Content-Type"]
        return web.Response(status=304, headers=headers)
    return web.Response(body=held.plain, headers=headers)  # aiohttp sends no body to a HEAD


def _touched(svc: Services, rel: str) -> None:
    """Record the read for eviction (in the background; only eviction needs it)."""
    if svc.evictor is None or not svc.evictor.wants_touch(rel):
        return
    task = asyncio.get_running_loop().create_task(svc.storage.touch_access(rel))
    _background.add(task)
    task.add_done_callback(_background.discard)


async def _stream_download(request: web.Request, download: Download) -> web.StreamResponse:
    name = download.item.file.filename
    # Started: the store made room for the whole file (``reserve``) where it can, so a
    # full disk is a clear 503 here, not a cut-off 200.
    await download.started.wait()
    if download.done and download.error is not None:
        if not isinstance(download.error, MirrorError):
            raise download.error
        raise upstream_failure(download.error, name)
    reader = await download.open_reader()
    if reader is None:
        while not download.done:  # it failed already: answer once it has settled
            await download.progressed(download.available)
        if download.error is None:
            raise _Vanished(download.item.path.web)  # held, and removed meanwhile
        if not isinstance(download.error, MirrorError):
            raise download.error
        raise upstream_failure(download.error, name)
    response = web.StreamResponse(headers=file_headers(name))
    if download.expected_size is not None:
        response.content_length = download.expected_size
    sent = 0
    try:
        await response.prepare(request)
        while True:
            available = download.available
            finished = download.done
            if finished and download.error is not None:
                _abort(request, download)
                return response
            limit = available if finished else max(0, available - HOLDBACK)
            while sent < limit:
                chunk = await reader.read(min(READ_CHUNK, limit - sent))
                if not chunk:
                    break
                await response.write(chunk)
                sent += len(chunk)
            if finished:
                break
            await download.progressed(available)
        await response.write_eof()
    except ConnectionResetError:
        # The client went away; the download goes on for the others and for the cache.
        request[CACHE_RESULT] = CacheResult.CLIENT_GONE
    finally:
        await reader.close()
    return response


def _abort(request: web.Request, download: Download) -> None:
    log.warning(
        "client_aborted_unverified",
        file=download.item.path.rel,
        error=str(download.error),
    )
    if request.transport is not None:
        request.transport.abort()
