"""``/packages/aa/bb/<digest>/<filename>`` and ``<filename>.metadata``.

A hit is a ``web.FileResponse`` (sendfile, Range, HEAD, ETag, 304). A miss joins the
file's single download and streams the bytes written so far, holding back the tail until
the download was verified; if verification fails the connection is aborted.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter

from mirror.cache.files import FileCache, Located
from mirror.cache.pages import CacheResult
from mirror.core.layout import METADATA_SUFFIX, PackagePath, parse_package_path
from mirror.errors import IntegrityError, MirrorError, UpstreamError, UpstreamNotFound
from mirror.log import get_logger
from mirror.project.files import HOLDBACK, Download
from mirror.server.errors import upstream_failure
from mirror.server.keys import CACHE_RESULT, services
from mirror.server.stored import stored_response
from mirror.services import Services

log = get_logger("mirror.packages")
_background: set[asyncio.Task[None]] = set()

FILE_CACHE_CONTROL = "max-age=365000000, immutable, public"
READ_CHUNK = 256 * 1024
CONDITIONAL_HEADERS = ("Range", "If-Range", "If-None-Match", "If-Modified-Since", "If-Match")


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
    if svc.files.known_present(rel) or await svc.storage.stat(rel) is not None:
        svc.files.note_present(rel)
        request[CACHE_RESULT] = CacheResult.HIT
        svc.metrics.cache_results.labels("file", CacheResult.HIT.value).inc()
        return await _serve_stored(request, svc, rel)
    if svc.pages.offline:
        raise web.HTTPNotFound(text=f"{path.filename} is not held by this offline mirror\n")
    request[CACHE_RESULT] = CacheResult.MISS
    svc.metrics.cache_results.labels("file", CacheResult.MISS.value).inc()
    try:
        located = await svc.files.locate(path)
    except (UpstreamError, IntegrityError) as exc:
        raise upstream_failure(exc, path.filename) from exc
    if located is None:
        raise web.HTTPNotFound(text=f"{path.filename} is not listed by the upstream index\n")
    if is_metadata:
        return await _metadata_miss(request, svc, located, rel)
    download = svc.files.download(located)
    if request.method == "HEAD" or any(h in request.headers for h in CONDITIONAL_HEADERS):
        try:
            await download.wait()
        except MirrorError as exc:
            raise upstream_failure(exc, path.filename) from exc
        return await _serve_stored(request, svc, rel)
    return await _stream_download(request, download)


async def _metadata_miss(
    request: web.Request, svc: Services, located: Located, rel: str
) -> web.StreamResponse:
    try:
        found = await svc.files.ensure_metadata(located)
    except UpstreamNotFound:
        found = False
    except (UpstreamError, IntegrityError) as exc:
        raise upstream_failure(exc, located.item.file.filename + METADATA_SUFFIX) from exc
    if not found:
        raise web.HTTPNotFound(text=f"no metadata for {located.item.file.filename}\n")
    return await _serve_stored(request, svc, rel)


class _ReaderFileResponse(web.FileResponse):
    """A FileResponse that marks its file as being read while it is sent (for eviction)."""

    def __init__(self, path: Path, files: FileCache, rel: str, headers: dict[str, str]) -> None:
        super().__init__(path, headers=headers)
        self._files = files
        self._rel = rel

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        async with self._files.reading(self._rel):
            return await super().prepare(request)


async def _serve_stored(request: web.Request, svc: Services, rel: str) -> web.StreamResponse:
    if svc.evictor is not None:  # access times matter only for eviction
        _touch_later(svc, rel)
    headers = file_headers(rel)
    return await stored_response(
        request,
        svc.storage,
        rel,
        headers,
        make=lambda path, h: _ReaderFileResponse(path, svc.files, rel, h),
    )


def _touch_later(svc: Services, rel: str) -> None:
    task = asyncio.get_running_loop().create_task(svc.storage.touch_access(rel))
    _background.add(task)
    task.add_done_callback(_background.discard)


async def _stream_download(request: web.Request, download: Download) -> web.StreamResponse:
    name = download.item.file.filename
    await download.started.wait()
    reader = await download.open_reader()
    if reader is None:
        error = download.error or UpstreamError("the download vanished")
        if not isinstance(error, MirrorError):
            raise error
        raise upstream_failure(error, name)
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

