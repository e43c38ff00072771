"""Answering with a stored file: ``web.FileResponse`` (sendfile, Range, ETag, 304) on the
file the storage has, or the bytes streamed from a store that has no local file.

``Range: bytes=-0`` (a suffix of no bytes) is answered 416 here: no file satisfies it
(RFC 9110 14.1.2), and ``FileResponse`` would send the whole file as a 206.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import IO

from aiohttp import web

from mirror.storage import FileInfo, Storage

READ_CHUNK = 256 * 1024

FileResponseFactory = Callable[[Path, dict[str, str]], web.FileResponse]

_EMPTY_SUFFIX = re.compile(r"\s*bytes\s*=\s*-\s*0+\s*", re.IGNORECASE)


def _file_response(path: Path, headers: dict[str, str]) -> web.FileResponse:
    return web.FileResponse(path, headers=headers)


def asks_no_bytes(request: web.BaseRequest) -> bool:
    """``Range: bytes=-0``, which no representation satisfies; an ``If-Range`` date older
    than the file would make the Range ignored (as ``FileResponse`` does): see
    ``unsatisfiable``."""
    header = request.headers.get("Range")
    return header is not None and _EMPTY_SUFFIX.fullmatch(header) is not None


def unsatisfiable(request: web.BaseRequest, info: FileInfo | None, size: int) -> bool:
    """Is this request's Range one that must be answered 416 for a file of ``size``?"""
    if not asks_no_bytes(request):
        return False
    if_range = request.if_range
    return if_range is None or info is None or info.mtime <= if_range.timestamp()


def not_satisfiable(size: int) -> web.HTTPRequestRangeNotSatisfiable:
    return web.HTTPRequestRangeNotSatisfiable(
        headers={"Content-Range": f"bytes */{size}", "Accept-Ranges": "bytes"},
        text=f"range not satisfiable: bytes=-0 selects no byte of a {size}-byte file\n",
    )


async def stored_response(
    request: web.Request,
    storage: Storage,
    rel: str,
    headers: dict[str, str],
    *,
    make: FileResponseFactory = _file_response,
) -> web.StreamResponse:
    if asks_no_bytes(request):
        info = await storage.stat(rel)
        if info is None:
            raise web.HTTPNotFound(text=f"{rel.rsplit('/', 1)[-1]} is not held by this mirror\n")
        if unsatisfiable(request, info, info.size):
            raise not_satisfiable(info.size)
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


# -- a stored file opened before it is answered -----------------------------------------


@functools.cache
def _proc_fd() -> bool:
    """Can an open file be named by ``/proc/self/fd/N`` (Linux), also once unlinked?"""
    return os.path.isdir("/proc/self/fd")


class OpenedFile:
    """A stored file opened ahead of its answer, so that nothing that removes the file
    meanwhile (eviction, in this process or another) can turn a hit into a 404: the
    answer (``FileResponse``, which opens by path) is pointed at this open file."""

    def __init__(self, real: Path, handle: IO[bytes]) -> None:
        self._handle: IO[bytes] | None = handle
        self.path = Path(f"/proc/self/fd/{handle.fileno()}") if _proc_fd() else real

    def close(self) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            with contextlib.suppress(OSError):
                handle.close()


def open_stored(path: Path) -> OpenedFile | None:
    """The file at ``path`` opened, or None when it is not there (blocking)."""
    try:
        handle = path.open("rb")
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None
    return OpenedFile(path, handle)
