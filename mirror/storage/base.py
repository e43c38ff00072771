"""The storage seam: the only way code outside ``mirror/storage/`` touches the store.

Paths are ``/``-separated strings relative to the storage root, made by
:mod:`mirror.core.layout` and checked by the backend (no ``..``, no absolute paths). A
backend keeps three areas: ``web/`` (the static tree), ``state/`` (bookkeeping derived from
or beside it) and its own temp space, where writes wait until they are committed.

What every backend gives:

- streamed reads (``open_read``) and whole small reads (``read_bytes``, ``read_tail``);
- streamed atomic writes (``writer``): invisible until ``commit``, nothing left by
  ``abort`` or a crash; ``link`` makes one path hold the same bytes as another;
- ``stat``, ``delete`` (empty parent directories go too), ``delete_tree``, walks
  (``iter_files``, ``iter_names``);
- durability: a committed file's bytes are durable before it is visible; its name is
  durable at once, or, within ``deferred_durability`` (the sync), at the next ``barrier``
  — which every ``AppendLog.sync`` passes first;
- ``open_append`` for an append-only log with group commit, and ``lock`` for a lock that
  processes sharing the store respect; ``claim`` and ``follow``, so that one process
  writes a file while the others read it as it grows (one download across processes);
- ``local_path``: the real file behind a path, or None when the backend has none (object
  storage). Callers that need a file (sendfile, a wheel's zip directory, python-tuf's
  metadata directory) ask for it here and keep a streaming fallback where one is possible;
  ``scratch_dir`` is local space for temporary files that are not part of the store.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

#: Default bound of ``read_bytes``: a page, a state record, a metadata file.
READ_LIMIT = 256 * 1024**2


@dataclass(frozen=True)
class FileInfo:
    rel: str
    size: int
    mtime: float
    atime: float
    mtime_ns: int = 0  # where the backend knows it exactly (ETags)


class ByteReader(Protocol):
    """Sequential reads of one stored (or still being written) file."""

    async def read(self, size: int) -> bytes:
        """Up to ``size`` bytes; b"" at the current end."""

    async def close(self) -> None: ...


class AtomicWriter(Protocol):
    """A file being written: invisible until ``commit``; ``abort`` leaves nothing behind."""

    @property
    def written(self) -> int: ...

    async def reserve(self, size: int) -> None:
        """Make room for ``size`` bytes up front where the backend can, so that a full
        store fails here rather than part way (a no-op where it cannot)."""

    async def write(self, data: bytes) -> None: ...

    async def flush(self) -> None:
        """Make the bytes written so far readable through ``open_reader`` (not durable)."""

    async def open_reader(self) -> ByteReader | None:
        """A reader of the bytes written so far, which keeps working across ``commit``;
        None when the write failed and nothing is left to read."""

    async def commit(self) -> None:
        """Durably put the bytes at the destination, replacing what was there."""

    async def abort(self) -> None:
        """Drop the bytes (a no-op after ``commit``); never raises for a full disk."""


class AppendLog(Protocol):
    """An append-only file: ``append`` buffers, ``sync`` makes every appended byte durable."""

    def append(self, data: bytes) -> None: ...

    async def sync(self) -> None:
        """Make the appended bytes durable, after a ``barrier`` of the store: what the log
        says was done is never ahead of what the store holds durably."""

    async def close(self) -> None: ...


class Claim(Protocol):
    """The right to write one path, held by one process at a time (lost if it dies)."""

    async def release(self) -> None: ...


class Follow(Protocol):
    """A write of a path that another process holds the claim for, followed from here."""

    async def active(self) -> bool:
        """Does that process still hold the claim (the write goes on)?"""

    async def written(self) -> int:
        """Bytes written so far."""

    async def open_reader(self) -> ByteReader | None:
        """The bytes written so far and the rest as they come (None: nothing to read)."""

    async def close(self) -> None: ...


class StoreLock(Protocol):
    """An exclusive lock shared by every process using the store, released if one dies."""

    def acquire(self, *, wait: bool = False) -> None:
        """Take the lock; without ``wait`` raise :class:`~mirror.errors.LockHeld` at once
        when another process holds it. Blocking: call it off the event loop when waiting."""

    def release(self) -> None: ...


class Storage(Protocol):
    def describe(self) -> str:
        """Where the store is, for messages (a directory, a bucket)."""

    async def stat(self, rel: str) -> FileInfo | None: ...

    async def exists(self, rel: str) -> bool: ...

    async def read_bytes(self, rel: str, limit: int = READ_LIMIT) -> bytes | None:
        """The whole file (StorageError when over ``limit``), or None when missing."""

    async def read_with_info(
        self, rel: str, limit: int = READ_LIMIT
    ) -> tuple[bytes, FileInfo] | None:
        """The whole file and its ``FileInfo``, of the same version of it (one step: a
        replace between a ``stat`` and a read cannot pair one's size with the other's
        bytes); None when missing; StorageError when larger than ``limit``."""

    async def read_tail(self, rel: str, size: int) -> bytes | None:
        """The last ``size`` bytes (fewer if the file is shorter), or None when missing."""

    async def open_read(self, rel: str) -> ByteReader | None: ...

    async def write_bytes(self, rel: str, data: bytes, *, durable: bool = True) -> None:
        """Atomically replace ``rel`` with ``data``. ``durable=False``: bookkeeping that can
        be derived again — after a power loss it may be older, or torn (then it reads as
        unusable and is rebuilt); a reader never sees it half-written."""

    async def write_set(
        self,
        files: Sequence[tuple[str, bytes]],
        *,
        links: Sequence[tuple[str, str]] = (),
        deletes: Sequence[str] = (),
    ) -> None:
        """Small files written as one step: every file's bytes are staged (durably) before
        any is renamed into place — a full store changes nothing — then each ``(src,
        dest)`` of ``links`` is made as ``link`` does, then ``deletes`` are removed."""

    def writer(self, rel: str, *, claim: Claim | None = None) -> AtomicWriter:
        """A write of ``rel``; with ``claim``, processes that ``follow(rel)`` see it."""

    async def claim(self, rel: str) -> Claim | None:
        """The claim on writing ``rel``, or None when another process holds it."""

    async def follow(self, rel: str) -> Follow | None:
        """The write of ``rel`` another process holds the claim for, or None."""

    async def link(self, src: str, dest: str) -> None:
        """Make ``dest`` hold what ``src`` holds now (a hard link where possible)."""

    async def delete(self, rel: str) -> bool:
        """Remove a file (and parent directories it leaves empty); False if it was missing."""

    async def delete_tree(self, prefix: str) -> int:
        """Remove every file below ``prefix``; the number removed."""

    def iter_files(self, prefix: str) -> AsyncIterator[FileInfo]:
        """Every file below ``prefix``, streamed (no order promised)."""

    def iter_names(self, prefix: str) -> AsyncIterator[list[str]]:
        """The names directly below ``prefix`` (files and directories), in batches."""

    def temp_leftovers(self) -> AsyncIterator[FileInfo]:
        """Temp files (and claims) that processes which are gone left behind: what a start-up
        removes, found without removing them (``delete`` removes one)."""

    async def touch_access(self, rel: str) -> None:
        """Record a read, for least-recently-used eviction."""

    def deferred_durability(self) -> AbstractContextManager[None]:
        """Within it (this task and the tasks it starts), committed files' bytes are still
        durable before they are visible, but their names (the renames, links) only at the
        next ``barrier``: one directory sync per batch instead of one per file."""

    def defer_renames(self) -> None:
        """From now on, in this process, every rename is made durable at the next
        ``barrier`` only, as within ``deferred_durability`` (``serve``: what pull-through
        writes can be fetched again, and its periodic barrier bounds what a power loss
        may take back; the bytes of every file are still durable before its rename)."""

    async def barrier(self) -> None:
        """Make every commit and link done so far durable, names included."""

    def open_append(self, rel: str) -> AppendLog: ...

    def lock(self, rel: str) -> StoreLock: ...

    def local_path(self, rel: str) -> Path | None:
        """The real file or directory behind ``rel``, or None (object storage)."""

    def scratch_dir(self) -> Path:
        """Local space for temporary files that are not part of the store."""
