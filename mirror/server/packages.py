"""``/packages/aa/bb/<digest>/<filename>`` and ``<filename>.metadata``.

A hit is a ``web.FileResponse`` (sendfile, Range, HEAD, ETag, 304). A miss joins the
file's single download and streams from its temp file, holding back the tail until the
download was verified; if verification fails the connection is aborted.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiofiles
from aiohttp import web
from aiohttp.abc import AbstractStreamWriter

from mirror.cache.files import HOLDBACK, Download, FileCache, Located
from mirror.core.layout import PackagePath, parse_package_path
from mirror.errors import IntegrityError, MirrorError, UpstreamError, UpstreamNotFound
from mirror.log import get_logger
from mirror.server.errors import upstream_failure
from mirror.server.keys import CACHE_RESULT, Services, services

log = get_logger("mirror.packages")
_background: set[asyncio.Task[None]] = set()

FILE_CACHE_CONTROL = "max-age=365000000, immutable, public"
READ_CHUNK = 256 * 1024
CONDITIONAL_HEADERS = ("Range", "If-Range", "If-None-Match", "If-Modified-Since", "If-Match")


def file_headers(filename: str) -> dict[str, str]:
    content_type = (
        "text/plain; charset=utf-8"
        if filename.endswith(".metadata")
        else "application/octet-stream"
    )
    return {
        "Content-Type": content_type,
        "Cache-Control": FILE_CACHE_CONTROL,
        "Accept-Ranges": "bytes",
    }


def _parse(tail: str) -> tuple[PackagePath, bool]:
    is_metadata = tail.endswith(".metadata")
    path = parse_package_path(tail.removesuffix(".metadata") if is_metadata else tail)
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
        request[CACHE_RESULT] = "hit"
        svc.metrics.cache_results.labels("file", "hit").inc()
        return await _serve_stored(request, svc, rel)
    if svc.pages.offline:
        raise web.HTTPNotFound(text=f"{path.filename} is not held by this offline mirror\n")
    request[CACHE_RESULT] = "miss"
    svc.metrics.cache_results.labels("file", "miss").inc()
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
    return await _stream_download(request, svc, download)


async def _metadata_miss(
    request: web.Request, svc: Services, located: Located, rel: str
) -> web.StreamResponse:
    try:
        found = await svc.files.ensure_metadata(located)
    except UpstreamNotFound:
        found = False
    except (UpstreamError, IntegrityError) as exc:
        raise upstream_failure(exc, located.item.file.filename + ".metadata") from exc
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
    path = svc.storage.path(rel)
    if svc.evictor is not None:  # access times matter only for eviction
        _touch_later(svc, rel)
    return _ReaderFileResponse(path, svc.files, rel, file_headers(path.name))


def _touch_later(svc: Services, rel: str) -> None:
    task = asyncio.get_running_loop().create_task(svc.storage.touch_access(rel))
    _background.add(task)
    task.add_done_callback(_background.discard)


async def _stream_download(
    request: web.Request, svc: Services, download: Download
) -> web.StreamResponse:
    name = download.item.file.filename
    await download.temp_ready.wait()
    handle = await _open_download(svc, download)
    if handle is None:
        error = download.error or UpstreamError("the download vanished")
        raise upstream_failure(_as_mirror_error(error), name)
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
                chunk = await handle.read(min(READ_CHUNK, limit - sent))
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
        request[CACHE_RESULT] = "miss-client-gone"
    finally:
        await handle.close()
    return response


async def _open_download(svc: Services, download: Download) -> Any | None:
    """The temp file being written, or the committed file if the rename came first;
    None when neither exists (the download failed before we could open it)."""
    final = str(svc.storage.path(download.item.path.web))
    candidates = (
        [final] if download.ok or download.temp_path is None else [download.temp_path, final]
    )
    for source in candidates:
        try:
            return await aiofiles.open(source, "rb")
        except FileNotFoundError:
            continue
    return None


def _abort(request: web.Request, download: Download) -> None:
    log.warning(
        "client_aborted_unverified",
        file=download.item.path.rel,
        error=str(download.error),
    )
    if request.transport is not None:
        request.transport.abort()


def _as_mirror_error(exc: BaseException) -> MirrorError:
    return exc if isinstance(exc, MirrorError) else UpstreamError(str(exc))
