"""Filesystem storage: a directory with ``web/``, ``state/`` and ``tmp/``.

Writes go to a temp file in ``tmp/`` (same filesystem as ``web/``), whose bytes are made
durable (``fdatasync``) before it is renamed into place, so a reader sees either the old
file or the whole new one, also after a power loss. The rename itself is made durable by
syncing the directories it changed: at once, or — within ``deferred_durability`` (the
sync) — at the next ``barrier``, which the sync's journal passes before it records a
project as done: one sync per directory per batch, not per file, and one ``syncfs(2)``
for a batch of many directories. Every temp file's name starts with its writer's PID, so
that start-up removes what dead processes left and never what a live ``serve`` or
``sync`` beside it is writing. Blocking calls run in the default executor, one hop per
small write.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import functools
import itertools
import os
import secrets
import shutil
import stat
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import IO, Any, TypeVar

from mirror.core import layout
from mirror.errors import LockHeld, StorageError, UnsafePathError
from mirror.processes import process_alive
from mirror.storage.base import READ_LIMIT, Claim, FileInfo
from mirror.storage.claims import (
    FileClaim,
    FileSystemFollow,
    find_follow,
    sweep_claims,
    take_claim,
)
from mirror.storage.fileio import FileReader

T = TypeVar("T")

_FORBIDDEN_CHARS = ("\x00", "\\")
# A temp file untouched this long is abandoned even if its PID is alive again (reused).
TEMP_FILE_MAX_IDLE = 3600.0
# Directories never removed when they become empty: the areas and their first level.
_KEPT_DEPTH = 2
_REPLACE_ATTEMPTS = 3
NAMES_BATCH = 1000


def check_rel(rel: str) -> list[str]:
    """The components of a relative storage path, or UnsafePathError."""
    if not rel or rel.startswith("/") or any(c in rel for c in _FORBIDDEN_CHARS):
        raise UnsafePathError(f"unsafe storage path {rel!r}")
    parts = rel.split("/")
    for part in parts:
        if part in ("", ".", "..") or len(part.encode("utf-8", "surrogateescape")) > 255:
            raise UnsafePathError(f"unsafe storage path {rel!r}")
    return parts


async def _blocking(fn: Callable[..., T], *args: object) -> T:
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


#: True within ``FileSystemStorage.deferred_durability``: renames wait for a barrier.
_DEFERRED: ContextVar[bool] = ContextVar("mirror_storage_deferred", default=False)


class _Process:
    """What leads this process's temp file names (set again in a forked child)."""

    pid = os.getpid()
    token = secrets.token_hex(4)
    counter = itertools.count()

    @classmethod
    def forked(cls) -> None:
        cls.pid, cls.token, cls.counter = os.getpid(), secrets.token_hex(4), itertools.count()


os.register_at_fork(after_in_child=_Process.forked)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync_dirs(directories: Iterable[Path]) -> None:
    """Make the entries of ``directories`` durable (one gone since has nothing to keep)."""
    for directory in directories:
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            _fsync_dir(directory)


#: A barrier over more directories than this is one ``syncfs(2)`` of the store's
#: filesystem (where the C library has it) instead of one sync per directory: files live
#: in a directory each (``packages/aa/bb/<hash>/``), so a batch touches many.
SYNCFS_FROM = 8


@functools.cache
def _syncfs() -> Callable[[int], int] | None:
    """libc's ``syncfs`` (Linux), or None; loaded on first use."""
    try:
        import ctypes

        function = ctypes.CDLL(None, use_errno=True).syncfs
    except (ImportError, OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int]
    function.restype = ctypes.c_int

    def call(fd: int) -> int:
        if function(fd) != 0:
            number = ctypes.get_errno()
            raise OSError(number, os.strerror(number))
        return 0

    return call


_FALLOC_FL_KEEP_SIZE = 1


@functools.cache
def _fallocate() -> Callable[[int, int], None] | None:
    """libc's ``fallocate`` (Linux) keeping the file's size (followers of a download read
    its size as the bytes written so far), or None; loaded on first use."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        function = getattr(libc, "fallocate64", None) or libc.fallocate
    except (ImportError, OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    function.restype = ctypes.c_int

    def call(fd: int, size: int) -> None:
        if function(fd, _FALLOC_FL_KEEP_SIZE, 0, size) != 0:
            number = ctypes.get_errno()
            raise OSError(number, os.strerror(number))

    return call


def _sync_batch(directories: list[Path], root: Path) -> None:
    """A barrier: the entries of ``directories`` (all on ``root``'s filesystem: renames
    put them there) made durable, by one ``syncfs`` when there are many. The files' bytes
    were synced before their renames; the whole filesystem's dirty data goes along."""
    syncfs = _syncfs() if len(directories) > SYNCFS_FROM else None
    if syncfs is None:
        _sync_dirs(directories)
        return
    fd = os.open(root, os.O_RDONLY)
    try:
        syncfs(fd)
    finally:
        os.close(fd)


def _make_dirs(directory: Path) -> list[Path]:
    """Create ``directory`` and its missing parents; the directories that gained an entry."""
    try:
        directory.mkdir()
    except FileExistsError:
        return []
    except FileNotFoundError:
        changed = _make_dirs(directory.parent)
        with contextlib.suppress(FileExistsError):
            directory.mkdir()
        return [*changed, directory.parent]
    return [directory.parent]


def _write_durably(temp: Path, data: bytes) -> None:
    """A new file at ``temp`` holding ``data``, its bytes synced."""
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fdatasync(fd)
    finally:
        os.close(fd)


def _link_file(source: Path, temp: Path, target: Path) -> list[Path]:
    """``target`` made to hold what ``source`` holds (a hard link through ``temp``, or a
    synced copy where links do not work); the directories whose entries changed."""
    try:
        os.link(source, temp)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
            raise
        shutil.copyfile(source, temp)
        with temp.open("rb") as handle:
            os.fsync(handle.fileno())
    try:
        return _move_into_place(temp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()


def _delete_file(path: Path, depth: int) -> bool:
    """Remove ``path`` and the parents it leaves empty, down to ``_KEPT_DEPTH``."""
    try:
        os.unlink(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    parent = path.parent
    for _ in range(depth - 1 - _KEPT_DEPTH):
        try:
            os.rmdir(parent)
        except OSError:
            break
        parent = parent.parent
    return True


def _read_whole(path: Path, limit: int) -> tuple[bytes | None, os.stat_result] | None:
    """Up to ``limit + 1`` bytes of the file at ``path`` (None, unread, when its size is
    over ``limit``) and its stat; None when it is missing or not a regular file. Sized by
    the file, not the limit: ``read(n)`` allocates n bytes first."""
    try:
        with path.open("rb", buffering=0) as handle:
            st = os.fstat(handle.fileno())
            if not stat.S_ISREG(st.st_mode):
                return None
            if st.st_size > limit:
                return None, st
            first = st.st_size + 1
            data = _read_up_to(handle, first)
            if len(data) == first and first <= limit:  # it grew meanwhile
                data += _read_up_to(handle, limit + 1 - first)
            return data, st
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None


def _read_up_to(handle: IO[bytes], count: int) -> bytes:
    """``count`` bytes, or fewer at the end of the file."""
    chunks = []
    while count > 0:
        chunk = handle.read(count)
        if not chunk:
            break
        chunks.append(chunk)
        count -= len(chunk)
    return b"".join(chunks)


def replace_local_file(temp: Path, target: Path) -> None:
    """Put a finished, data-synced file outside the store (an operator's file, such as the
    ``[sync] diff-file``) at ``target`` by one rename, and make the rename durable
    (blocking). The one place outside a store's writer where files are renamed into place.
    """
    os.replace(temp, target)
    _sync_dirs([target.parent])


def _move_into_place(temp: Path, dest: Path) -> list[Path]:
    """Rename a finished (data-synced) temp file to ``dest``; the directories whose
    entries changed (``dest``'s, and those that gained a directory made for it): syncing
    them makes the rename durable.

    A concurrent ``delete`` may remove the (empty) parent between ``mkdir`` and
    ``replace``; then both are simply done again.
    """
    changed: list[Path] = []
    for attempt in range(_REPLACE_ATTEMPTS + 1):
        try:
            os.replace(temp, dest)
            break
        except FileNotFoundError:
            if attempt == _REPLACE_ATTEMPTS or not temp.exists():
                raise
            changed += _make_dirs(dest.parent)
    changed.append(dest.parent)
    return changed


def _open_first(paths: list[Path]) -> IO[bytes] | None:
    for path in paths:
        try:
            return path.open("rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            continue
    return None


class FileSystemWriter:
    """An unbuffered write to a temp file: every ``write`` reaches the file (readers of
    ``open_reader`` see it at once), ``commit`` syncs the bytes and renames them into place."""

    def __init__(
        self, storage: FileSystemStorage, rel: str, claim: FileClaim | None = None
    ) -> None:
        self._storage = storage
        self._dest = storage.file(rel)
        self._temp = storage.temp_path(self._dest.name)
        self._claim = claim
        self._fd: int | None = None
        self._written = 0
        self._committed = False
        self._aborted = False
        # The blocking call in flight: abort waits for it (also when its caller was
        # cancelled), so that a descriptor is never closed while a thread writes to it.
        self._busy: asyncio.Future[Any] | None = None

    @property
    def written(self) -> int:
        return self._written

    def _open(self) -> int:
        if self._fd is None:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
            self._fd = os.open(self._temp, flags, 0o666)
            if self._claim is not None:
                self._claim.record(self._temp)
        return self._fd

    def _write(self, data: bytes) -> None:
        fd = self._open()
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]

    def _finish(self, deferred: bool, durable: bool = True) -> list[Path]:
        """The bytes made durable (unless ``durable`` is off), then renamed into place
        (blocking)."""
        fd = self._open()
        if durable:
            os.fdatasync(fd)
        self._fd = None
        os.close(fd)
        changed = _move_into_place(self._temp, self._dest)
        if not deferred:
            _sync_dirs(changed)
        return changed

    def _drop(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            self._temp.unlink()

    def _reserve(self, size: int) -> None:
        fd = self._open()
        allocate = _fallocate()
        if allocate is None or size <= 0:
            return
        try:
            allocate(fd, size)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise

    async def _call(self, fn: Callable[..., T], *args: object) -> T:
        future = asyncio.get_running_loop().run_in_executor(None, fn, *args)
        self._busy = future
        return await asyncio.shield(future)

    async def reserve(self, size: int) -> None:
        """Allocate room for ``size`` bytes now (``fallocate``, the file's size unchanged)
        where the filesystem can: a full disk fails here, before any byte was promised to
        anyone. Elsewhere nothing happens, and the writes find out."""
        await self._call(self._reserve, size)

    async def write(self, data: bytes) -> None:
        await self._call(self._write, data)
        self._written += len(data)

    async def flush(self) -> None:
        """Nothing to do: writes are not buffered here."""

    async def open_reader(self) -> FileReader | None:
        # An open descriptor of the temp file keeps reading the same bytes after the rename.
        paths = [self._dest] if self._committed else [self._temp, self._dest]
        handle = await _blocking(_open_first, paths)
        return None if handle is None or self._aborted else FileReader(handle)

    async def commit(self) -> None:
        deferred = self._storage._deferred()
        changed = await self._call(self._finish, deferred)
        self._committed = True
        if deferred:
            self._storage.dirtied(changed)

    async def abort(self) -> None:
        if self._committed or self._aborted:
            return
        self._aborted = True
        busy = self._busy
        if busy is not None and not busy.done():
            await asyncio.wait([busy])
            if not busy.cancelled() and busy.exception() is None and self._fd is None:
                return  # a commit whose caller was cancelled finished its rename after all
        await _blocking(self._drop)

    async def __aenter__(self) -> FileSystemWriter:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.abort()


class FileAppendLog:
    """``O_APPEND`` writes and ``fdatasync``, several appends per sync (group commit).

    A sync is also the store's barrier: the directories that deferred commits changed are
    synced first, in the same executor hop, so what the log records is never ahead of
    what the store holds durably."""

    def __init__(self, path: Path, storage: FileSystemStorage) -> None:
        self._path = path
        self._storage = storage
        self._fd: int | None = None
        self._pending: list[bytes] = []
        self._lock = asyncio.Lock()

    def append(self, data: bytes) -> None:
        self._pending.append(data)

    async def sync(self) -> None:
        async with self._lock:
            if not self._pending:
                return
            data, self._pending = b"".join(self._pending), []
            dirs = self._storage.take_dirtied()

            def write() -> None:
                _sync_batch(dirs, self._storage.root)
                if self._fd is None:
                    changed = _make_dirs(self._path.parent)
                    self._fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                    _sync_dirs([*changed, self._path.parent])
                os.write(self._fd, data)
                os.fdatasync(self._fd)

            try:
                await _blocking(write)
            except BaseException:
                self._storage.dirtied(dirs)
                self._pending.insert(0, data)
                raise

    async def close(self) -> None:
        await self.sync()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class FileLock:
    """An advisory ``flock``: released by the kernel when its process dies (also on
    ``kill -9``), so a stale lock file never blocks anyone. The holder's PID is written
    into the file for the message others get."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self, *, wait: bool = False) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            raise LockHeld(str(self.path), holder) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class FileSystemStorage:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._tmp = root / layout.TMP
        self._claims = self._tmp / "claims"
        #: Directories whose entries deferred commits changed since the last barrier.
        self._dirty: set[Path] = set()
        self._always_deferred = False

    @classmethod
    def open(cls, root: Path) -> FileSystemStorage:
        """Create the tree if needed and check that it is writable (blocking; start-up only)."""
        root = root.expanduser().absolute()
        try:
            for area in (layout.WEB, layout.STATE, layout.TMP):
                (root / area).mkdir(parents=True, exist_ok=True)
            # Named as temp files are (led by the PID): another process starting on the
            # same store at once sweeps only dead processes' temp files.
            probe = root / layout.TMP / f"{os.getpid()}.probe-{secrets.token_hex(4)}"
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

    def describe(self) -> str:
        return str(self.root)

    def clean_tmp(self, older_than: float = TEMP_FILE_MAX_IDLE) -> int:
        """Remove temp files (and claims) of processes that are gone, and any temp file
        idle for ``older_than``."""
        removed = sweep_claims(self._claims)
        now = time.time()
        for entry in os.scandir(self._tmp):
            with contextlib.suppress(OSError):
                if not entry.is_file():
                    continue
                owner = _owner_pid(entry.name)
                idle = now - entry.stat().st_mtime >= older_than
                if idle or owner is None or not process_alive(owner):
                    os.unlink(entry.path)
                    removed += 1
        return removed

    def temp_path(self, name: str) -> Path:
        """A new temp file name in ``tmp/``, led by this process's PID."""
        unique = f"{_Process.pid}.{_Process.token}{next(_Process.counter):x}"
        return self._tmp / f"{unique}.{name[-80:]}.part"

    # -- durability -----------------------------------------------------------------------

    @contextlib.contextmanager
    def deferred_durability(self) -> Iterator[None]:
        """Within it (in this task and the tasks it starts), a commit or link makes its
        bytes durable before the rename, but the rename only at the next ``barrier``."""
        token = _DEFERRED.set(True)
        try:
            yield
        finally:
            _DEFERRED.reset(token)

    def defer_renames(self) -> None:
        """From now on every rename in this process waits for a ``barrier``."""
        self._always_deferred = True

    def _deferred(self) -> bool:
        return self._always_deferred or _DEFERRED.get()

    def dirtied(self, directories: Iterable[Path]) -> None:
        self._dirty.update(directories)

    def take_dirtied(self) -> list[Path]:
        dirs, self._dirty = self._dirty, set()
        return sorted(dirs)

    async def barrier(self) -> None:
        """Make every rename committed so far durable."""
        dirs = self.take_dirtied()
        if not dirs:
            return
        try:
            await _blocking(_sync_batch, dirs, self.root)
        except BaseException:
            self.dirtied(dirs)
            raise

    def file(self, rel: str) -> Path:
        return self.root.joinpath(*check_rel(rel))

    def local_path(self, rel: str) -> Path:
        return self.file(rel)

    def scratch_dir(self) -> Path:
        return self._tmp

    async def stat(self, rel: str) -> FileInfo | None:
        path = self.file(rel)
        try:
            st = await _blocking(os.stat, path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        return FileInfo(rel, st.st_size, st.st_mtime, st.st_atime, st.st_mtime_ns)

    async def exists(self, rel: str) -> bool:
        return await self.stat(rel) is not None

    async def read_bytes(self, rel: str, limit: int = READ_LIMIT) -> bytes | None:
        found = await self.read_with_info(rel, limit)
        return None if found is None else found[0]

    async def read_with_info(
        self, rel: str, limit: int = READ_LIMIT
    ) -> tuple[bytes, FileInfo] | None:
        path = self.file(rel)
        found = await _blocking(_read_whole, path, limit)
        if found is None:
            return None
        data, st = found
        if data is None or len(data) > limit:
            raise StorageError(f"{rel} is larger than {limit} bytes")
        return data, FileInfo(rel, st.st_size, st.st_mtime, st.st_atime, st.st_mtime_ns)

    async def read_tail(self, rel: str, size: int) -> bytes | None:
        path = self.file(rel)

        def read() -> bytes | None:
            try:
                with path.open("rb") as handle:
                    end = handle.seek(0, os.SEEK_END)
                    handle.seek(max(0, end - size))
                    return handle.read(size)
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                return None

        return await _blocking(read)

    async def open_read(self, rel: str) -> FileReader | None:
        handle = await _blocking(_open_first, [self.file(rel)])
        return None if handle is None else FileReader(handle)

    async def write_bytes(self, rel: str, data: bytes, *, durable: bool = True) -> None:
        writer = self.writer(rel)
        deferred = self._deferred() or not durable

        def write() -> list[Path]:  # one executor hop: write, sync, rename
            try:
                writer._write(data)
                return writer._finish(deferred, durable)
            except BaseException:
                writer._drop()
                raise

        changed = await _blocking(write)
        if deferred:
            self.dirtied(changed)

    def writer(self, rel: str, *, claim: Claim | None = None) -> FileSystemWriter:
        return FileSystemWriter(self, rel, claim if isinstance(claim, FileClaim) else None)

    async def claim(self, rel: str) -> FileClaim | None:
        return await _blocking(take_claim, self._claims, rel)

    async def follow(self, rel: str) -> FileSystemFollow | None:
        found = await _blocking(find_follow, self._claims, rel, self.file(rel))
        return None if found is None else FileSystemFollow(found)

    async def link(self, src: str, dest: str) -> None:
        source, target = self.file(src), self.file(dest)
        temp = self.temp_path(target.name)
        deferred = self._deferred()

        def link() -> list[Path]:
            changed = _link_file(source, temp, target)
            if not deferred:
                _sync_dirs(changed)
            return changed

        changed = await _blocking(link)
        if deferred:
            self.dirtied(changed)

    async def write_set(
        self,
        files: Sequence[tuple[str, bytes]],
        *,
        links: Sequence[tuple[str, str]] = (),
        deletes: Sequence[str] = (),
    ) -> None:
        """One executor hop for the lot (a page's four forms, say), not one per step."""
        deferred = self._deferred()
        staged = [
            (self.temp_path(self.file(rel).name), self.file(rel), data) for rel, data in files
        ]
        linked = [(self.file(src), self.file(dest)) for src, dest in links]
        linked_temps = [self.temp_path(target.name) for _, target in linked]
        removed = [(self.file(rel), len(check_rel(rel))) for rel in deletes]

        def write() -> list[Path]:
            changed: list[Path] = []
            try:
                for temp, _dest, data in staged:
                    _write_durably(temp, data)
                for temp, dest, _data in staged:
                    changed += _move_into_place(temp, dest)
            finally:
                for temp, _dest, _data in staged:  # those not renamed (a failure)
                    with contextlib.suppress(FileNotFoundError):
                        temp.unlink()
            for (source, target), temp in zip(linked, linked_temps, strict=True):
                changed += _link_file(source, temp, target)
            for path, depth in removed:
                _delete_file(path, depth)
            if not deferred:
                _sync_dirs(changed)
            return changed

        changed = await _blocking(write)
        if deferred:
            self.dirtied(changed)

    async def delete(self, rel: str) -> bool:
        path = self.file(rel)
        depth = len(check_rel(rel))
        return await _blocking(_delete_file, path, depth)

    async def delete_tree(self, prefix: str) -> int:
        removed = 0
        async for info in self.iter_files(prefix):
            removed += await self.delete(info.rel)
        base = self.file(prefix)

        def sweep() -> None:
            for directory, _dirs, _files in sorted(os.walk(base), reverse=True):
                with contextlib.suppress(OSError):
                    os.rmdir(directory)

        if len(check_rel(prefix)) > _KEPT_DEPTH:
            await _blocking(sweep)
        return removed

    async def touch_access(self, rel: str) -> None:
        """Record a read for LRU eviction: set atime, keep mtime (so ETags stay)."""
        path = self.file(rel)

        def touch() -> None:
            with contextlib.suppress(OSError):
                st = os.stat(path)
                os.utime(path, ns=(time.time_ns(), st.st_mtime_ns))

        await _blocking(touch)

    async def iter_files(self, prefix: str) -> AsyncIterator[FileInfo]:
        """Every regular file below ``prefix``, streamed: each hop to the executor scans
        directories until it found about ``NAMES_BATCH`` files (``packages/`` has a
        directory per file: one hop per directory would cost more than the scan)."""
        stack = [self.file(prefix)]
        root = self.root
        while stack:
            found = await _blocking(_scan_some, stack, NAMES_BATCH)
            for path, size, mtime, atime in found:
                yield FileInfo(path.relative_to(root).as_posix(), size, mtime, atime)

    async def iter_names(self, prefix: str) -> AsyncIterator[list[str]]:
        base = self.file(prefix)
        try:
            entries = await _blocking(os.scandir, base)
        except (FileNotFoundError, NotADirectoryError):
            return

        def take() -> list[str]:
            return [entry.name for _, entry in zip(range(NAMES_BATCH), entries, strict=False)]

        try:
            while batch := await _blocking(take):
                yield batch
        finally:
            entries.close()

    async def temp_leftovers(self) -> AsyncIterator[FileInfo]:
        """Temp files of dead processes (or idle for ``TEMP_FILE_MAX_IDLE``) and claim
        files no one holds: what ``clean_tmp`` would remove."""
        found = await _blocking(_leftovers, self._tmp, self._claims)
        for path, size, mtime in found:
            yield FileInfo(path.relative_to(self.root).as_posix(), size, mtime, mtime)

    def open_append(self, rel: str) -> FileAppendLog:
        return FileAppendLog(self.file(rel), self)

    def lock(self, rel: str) -> FileLock:
        return FileLock(self.file(rel))


def _read_pid(fd: int) -> int | None:
    try:
        data = os.pread(fd, 32, 0)
    except OSError:
        return None
    text = data.decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else None


def _owner_pid(temp_name: str) -> int | None:
    head = temp_name.split(".", 1)[0]
    return int(head) if head.isdigit() else None


def _leftovers(tmp: Path, claims: Path) -> list[tuple[Path, int, float]]:
    found: list[tuple[Path, int, float]] = []
    now = time.time()
    for directory, is_claims in ((tmp, False), (claims, True)):
        try:
            entries = list(os.scandir(directory))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            with contextlib.suppress(OSError):
                if not entry.is_file(follow_symlinks=False):
                    continue
                st = entry.stat(follow_symlinks=False)
                if is_claims:
                    left = not _claim_held(entry.path)
                else:
                    owner = _owner_pid(entry.name)
                    idle = now - st.st_mtime >= TEMP_FILE_MAX_IDLE
                    left = idle or owner is None or not process_alive(owner)
                if left:
                    found.append((Path(entry.path), st.st_size, st.st_mtime))
    return found


def _claim_held(path: str) -> bool:
    """Does a live process hold the claim file's lock? (Tried without waiting.)"""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing the descriptor lets go of a lock taken here
    return False


def _scan_some(stack: list[Path], enough: int) -> list[tuple[Path, int, float, float]]:
    """Files of the directories popped from ``stack`` until ``enough`` were found; the
    subdirectories met are pushed on it (depth first)."""
    found: list[tuple[Path, int, float, float]] = []
    while stack and len(found) < enough:
        directory = stack.pop()
        try:
            entries = _scan(directory)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                continue
            raise
        for path, is_dir, size, mtime, atime in entries:
            if is_dir:
                stack.append(path)
            else:
                found.append((path, size, mtime, atime))
    return found


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
