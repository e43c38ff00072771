"""Answering with a stored file: ``web.FileResponse`` (sendfile, Range, ETag, 304) on the
file the storage has, or the bytes streamed from a store that has no local file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from mirror.storage import Storage

READ_CHUNK = 256 * 1024

FileResponseFactory = Callable[[Path, dict[str, str]], web.FileResponse]


def _file_response(path: Path, headers: dict[str, str]) -> web.FileResponse:
    return web.FileResponse(path, headers=headers)


async def stored_response(
    request: web.Request,
    storage: Storage,
    rel: str,
    headers: dict[str, str],
    *,
    make: FileResponseFactory = _file_response,
) -> web.StreamResponse:
    path = storage.local_path(rel)
    if path is not None:
        return make(path, headers)
    reader = await storage.open_read(rel)
    if reader is None:
        raise web.HTTPNotFound(text=f"{rel.rsplit('/', 1)[-1]} is not held by this mirror\n")
    info = await storage.stat(rel)
    response = web.StreamResponse(headers=headers)
    if info is not None:
        response.content_length = info.size
    try:
        await response.prepare(request)
        if request.method != "HEAD":
            while chunk := await reader.read(READ_CHUNK):
                await response.write(chunk)
        await response.write_eof()
    finally:
        await reader.close()
    return response
