"""Filesystem storage: a directory with ``web/``, ``state/`` and ``tmp/``.

Writes go to a temp file in ``tmp/`` (same filesystem as ``web/``), are fsynced and then
renamed into place, so a reader sees either the old file or the whole new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import secrets
import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiofiles
import aiofiles.os

from mirror.errors import StorageError, UnsafePathError
from mirror.storage.base import FileInfo

_FORBIDDEN_CHARS = ("\x00", "\\")
# A temp file untouched this long is abandoned even if its PID is alive again (reused).
TEMP_FILE_MAX_IDLE = 3600.0


def check_rel(rel: str) -> list[str]:
    """The components of a relative storage path, or UnsafePathError."""
    if not rel or rel.startswith("/") or any(c in rel for c in _FORBIDDEN_CHARS):
        raise UnsafePathError(f"unsafe storage path {rel!r}")
    parts = rel.split("/")
    for part in parts:
        if part in ("", ".", "..") or len(part.encode("utf-8", "surrogateescape")) > 255:
            raise UnsafePathError(f"unsafe storage path {rel!r}")
    return parts


class FileSystemWriter:
    def __init__(self, storage: FileSystemStorage, rel: str) -> None:
        self._storage = storage
        self._dest = storage.path(rel)
        name = self._dest.name[-80:]
        # The writer's PID leads the name, so that start-up can tell a dead process's
        # leftovers from the live downloads of a `sync` or `serve` running beside it.
        self._temp = storage.root / "tmp" / f"{os.getpid()}.{secrets.token_hex(8)}.{name}.part"
        self._file: Any = None
        self._written = 0
        self._done = False

    @property
    def temp_path(self) -> Path:
        return self._temp

    @property
    def written(self) -> int:
        return self._written

    async def _open(self) -> Any:
        if self._file is None:
            self._file = await aiofiles.open(self._temp, "wb")
        return self._file

    async def write(self, data: bytes) -> None:
        handle = await self._open()
        await handle.write(data)
        self._written += len(data)

    async def flush(self) -> None:
        """Make written bytes visible to readers of ``temp_path`` (not durable)."""
        if self._file is not None:
            await self._file.flush()

    async def commit(self) -> None:
        handle = await self._open()
        await handle.flush()
        await asyncio.get_running_loop().run_in_executor(
            None, _finish, handle.fileno(), self._temp, self._dest
        )
        await handle.close()
        self._file = None
        self._done = True

    async def abort(self) -> None:
        if self._file is not None:
            await self._file.close()
            self._file = None
        if not self._done:
            with contextlib.suppress(FileNotFoundError):
                await aiofiles.os.remove(self._temp)
        self._done = True

    async def __aenter__(self) -> FileSystemWriter:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if not self._done:
            await self.abort()


def _finish(fd: int, temp: Path, dest: Path) -> None:
    os.fsync(fd)
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(temp, dest)
    dir_fd = os.open(dest.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class FileSystemStorage:
    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def open(cls, root: Path) -> FileSystemStorage:
        """Create the tree if needed and check that it is writable (blocking; start-up only)."""
        root = root.expanduser().absolute()
        try:
            for sub in ("web", "state", "tmp"):
                (root / sub).mkdir(parents=True, exist_ok=True)
            probe = root / "tmp" / f"probe-{secrets.token_hex(4)}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise StorageError(
                f"storage path {root} is not usable: {reason}; "
                "set [storage] path to a writable directory"
            ) from exc
        storage = cls(root.resolve())
        storage.clean_tmp()
        return storage

    def clean_tmp(self, older_than: float = TEMP_FILE_MAX_IDLE) -> int:
        """Remove temp files of processes that are gone, and any idle for ``older_than``."""
        removed = 0
        now = time.time()
        for entry in os.scandir(self.root / "tmp"):
            with contextlib.suppress(OSError):
                if not entry.is_file():
                    continue
                owner = _owner_pid(entry.name)
                idle = now - entry.stat().st_mtime >= older_than
                if idle or owner is None or not _process_alive(owner):
                    os.unlink(entry.path)
                    removed += 1
        return removed

    def path(self, rel: str) -> Path:
        return self.root.joinpath(*check_rel(rel))

    async def stat(self, rel: str) -> FileInfo | None:
        try:
            st = await aiofiles.os.stat(self.path(rel))
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not _is_regular(st.st_mode):
            return None
        return FileInfo(rel, st.st_size, st.st_mtime, st.st_atime)

    async def exists(self, rel: str) -> bool:
        return await self.stat(rel) is not None

    async def read_bytes(self, rel: str, limit: int = 256 * 1024**2) -> bytes | None:
        try:
            async with aiofiles.open(self.path(rel), "rb") as handle:
                data: bytes = await handle.read(limit + 1)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        if len(data) > limit:
            raise StorageError(f"{rel} is larger than {limit} bytes")
        return data

    async def write_bytes(self, rel: str, data: bytes) -> None:
        writer = self.writer(rel)
        try:
            await writer.write(data)
            await writer.commit()
        finally:
            await writer.abort()

    def writer(self, rel: str) -> FileSystemWriter:
        return FileSystemWriter(self, rel)

    async def delete(self, rel: str) -> bool:
        try:
            await aiofiles.os.remove(self.path(rel))
        except (FileNotFoundError, NotADirectoryError):
            return False
        return True

    async def touch_access(self, rel: str) -> None:
        """Record a read for LRU eviction: set atime, keep mtime (so ETags stay)."""
        path = self.path(rel)

        def touch() -> None:
            with contextlib.suppress(OSError):
                st = os.stat(path)
                os.utime(path, ns=(time.time_ns(), st.st_mtime_ns))

        await asyncio.get_running_loop().run_in_executor(None, touch)

    async def iter_files(self, prefix: str) -> AsyncIterator[FileInfo]:
        """Every regular file below ``prefix``, streamed directory by directory."""
        base = self.path(prefix)
        loop = asyncio.get_running_loop()
        stack = [base]
        while stack:
            directory = stack.pop()
            try:
                entries = await loop.run_in_executor(None, _scan, directory)
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                    continue
                raise
            for path, is_dir, size, mtime, atime in entries:
                if is_dir:
                    stack.append(path)
                else:
                    rel = path.relative_to(self.root).as_posix()
                    yield FileInfo(rel, size, mtime, atime)


def _owner_pid(temp_name: str) -> int | None:
    head = temp_name.split(".", 1)[0]
    return int(head) if head.isdigit() else None


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_regular(mode: int) -> bool:
    return stat.S_ISREG(mode)


def _scan(directory: Path) -> list[tuple[Path, bool, int, float, float]]:
    result: list[tuple[Path, bool, int, float, float]] = []
    with os.scandir(directory) as entries:
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    result.append((Path(entry.path), True, 0, 0.0, 0.0))
                elif entry.is_file(follow_symlinks=False):
                    st = entry.stat(follow_symlinks=False)
                    result.append((Path(entry.path), False, st.st_size, st.st_mtime, st.st_atime))
            except FileNotFoundError:
                continue
    return result
