"""Claims on the filesystem backend: one process at a time writes a path, the others follow.

A claim is an exclusive ``flock`` on ``tmp/claims/<hash of the path>``, which also names the
temp file the holder writes. Another process that finds the claim held follows the write:
it reads the holder's temp file as it grows (an open descriptor keeps reading the same
bytes after the holder's rename), and knows it ended when the lock is free again — with
the destination in place (committed, so verified) or not (the holder failed or died; the
kernel drops the lock of a dead process, also on ``kill -9``).

The holder removes the claim file before it unlocks; a process that took a lock on a file
removed meanwhile sees that its descriptor no longer names the path, and tries again.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from pathlib import Path
from typing import IO

from mirror.storage.fileio import FileReader, blocking

_ATTEMPTS = 10


def claim_path(directory: Path, rel: str) -> Path:
    return directory / hashlib.sha256(rel.encode("utf-8", "surrogateescape")).hexdigest()[:40]


class FileClaim:
    def __init__(self, path: Path, fd: int) -> None:
        self._path = path
        self._fd: int | None = fd

    def record(self, temp: Path) -> None:
        """Name the temp file being written, for the processes that follow (blocking)."""
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, os.fsencode(temp), 0)

    def _release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self._path.unlink()
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None
        with contextlib.suppress(OSError):  # the last claim out leaves no directory behind
            self._path.parent.rmdir()

    async def release(self) -> None:
        await blocking(self._release)


def take_claim(directory: Path, rel: str) -> FileClaim | None:
    """The claim on ``rel``, or None when another process holds it. Blocking (short)."""
    path = claim_path(directory, rel)
    for _ in range(_ATTEMPTS):
        try:
            directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except (FileNotFoundError, FileExistsError):
            continue  # the directory went with the last claim, or came back: again
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        if _names(fd, path):
            os.ftruncate(fd, 0)
            return FileClaim(path, fd)
        # The previous holder removed the file after we opened it: a fresh one is due.
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    return None


def _names(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


class FileFollow:
    """Another process's write of a path, seen from here."""

    def __init__(self, fd: int, temp: Path, dest: Path) -> None:
        self._fd: int | None = fd
        self.temp = temp
        self.dest = dest

    def _active(self) -> bool:
        if self._fd is None:
            return False
        try:
            fcntl.flock(self._fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        return False

    async def active(self) -> bool:
        """Does the writer still hold its claim?"""
        return await blocking(self._active)

    def _written(self) -> int:
        for path in (self.temp, self.dest):
            with contextlib.suppress(FileNotFoundError):
                return os.stat(path).st_size
        return 0

    async def written(self) -> int:
        """Bytes written so far (the whole file once it is committed)."""
        return await blocking(self._written)

    def _open(self) -> IO[bytes] | None:
        for path in (self.temp, self.dest):
            with contextlib.suppress(FileNotFoundError):
                return path.open("rb")
        return None

    async def open_handle(self) -> IO[bytes] | None:
        """The bytes written so far (and the rest as they come), or None."""
        return await blocking(self._open)

    async def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def find_follow(directory: Path, rel: str, dest: Path) -> FileFollow | None:
    """The write of ``rel`` another process holds a claim for, or None. Blocking (short)."""
    path = claim_path(directory, rel)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        location = os.pread(fd, 4096, 0)
        if location:
            return FileFollow(fd, Path(os.fsdecode(location)), dest)
        os.close(fd)  # claimed, but its writer has not started yet
        return None
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
    return None


class FileSystemFollow:
    """The ``Follow`` of the filesystem backend."""

    def __init__(self, follow: FileFollow) -> None:
        self._follow = follow

    async def active(self) -> bool:
        return await self._follow.active()

    async def written(self) -> int:
        return await self._follow.written()

    async def open_reader(self) -> FileReader | None:
        handle = await self._follow.open_handle()
        return None if handle is None else FileReader(handle)

    async def close(self) -> None:
        await self._follow.close()


def sweep_claims(directory: Path) -> int:
    """Remove the claim files dead processes left (no one holds their lock). Blocking."""
    removed = 0
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return 0
    for entry in entries:
        try:
            fd = os.open(entry.path, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        with contextlib.suppress(FileNotFoundError):
            os.unlink(entry.path)
            removed += 1
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    with contextlib.suppress(OSError):
        directory.rmdir()
    return removed
