"""The storage seam. Paths are ``/``-separated and relative to the storage root."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class FileInfo:
    rel: str
    size: int
    mtime: float
    atime: float


class AtomicWriter(Protocol):
    """A file being written: invisible until ``commit``; ``abort`` leaves nothing behind."""

    @property
    def temp_path(self) -> Path: ...

    @property
    def written(self) -> int: ...

    async def write(self, data: bytes) -> None: ...

    async def commit(self) -> None: ...

    async def abort(self) -> None: ...


class Storage(Protocol):
    async def stat(self, rel: str) -> FileInfo | None: ...

    async def read_bytes(self, rel: str, limit: int) -> bytes | None: ...

    async def write_bytes(self, rel: str, data: bytes) -> None: ...

    def writer(self, rel: str) -> AtomicWriter: ...

    async def delete(self, rel: str) -> bool: ...

    async def touch_access(self, rel: str) -> None: ...

    def iter_files(self, prefix: str) -> AsyncIterator[FileInfo]: ...
