"""``[sync] diff-file``: the web-root paths a sync wrote or removed, for rsync users.

One seam: the sync's services are built over ``RecordingStorage``, which passes every call
to the store and notes the path of every commit, write, link and delete under ``web/``
(pages, files, ``.metadata``, JSON API answers, the root list) — whoever in the keeper made
it. Noted paths are appended to a scratch file as they come (flat memory: one line per
write), then sorted and made unique with the external sort (``mirror.sorting``) and written
as absolute paths, one a line, to the diff file by one atomic rename (a reader never sees
half a list). With ``diff-append-epoch`` each run writes ``<diff-file>-<unix time>``, as
bandersnatch does.

A removed path is listed like a written one (bandersnatch lists only what it wrote):
``rsync --files-from=LIST --delete-missing-args / DEST`` then copies the written paths
and deletes the removed ones on the copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import IO

from mirror.config import SyncConfig
from mirror.core import layout
from mirror.errors import StorageError
from mirror.log import get_logger
from mirror.sorting import ExternalSorter
from mirror.storage import (
    AppendLog,
    AtomicWriter,
    ByteReader,
    FileInfo,
    Storage,
    StoreLock,
    replace_local_file,
)
from mirror.storage.base import READ_LIMIT, Claim, Follow

log = get_logger("mirror.sync.diffs")

_WEB_PREFIX = layout.WEB + "/"


def diff_path(config: SyncConfig, now: float) -> Path | None:
    """Where this run's list goes (None: no diff file configured)."""
    if config.diff_file is None:
        return None
    if config.diff_append_epoch:
        return config.diff_file.with_name(f"{config.diff_file.name}-{int(now)}")
    return config.diff_file


class DiffRecorder:
    """Paths noted during one sync, spooled to a scratch file."""

    def __init__(self, storage: Storage, target: Path) -> None:
        self.storage = storage
        self.target = target
        # Led by the PID, as every temp file: start-up clean-ups leave a live one alone.
        self.spool = storage.scratch_dir() / f"{os.getpid()}.diff-{secrets.token_hex(4)}"
        self._handle: IO[str] | None = None
        self.noted = 0

    def open(self) -> None:
        self._handle = self.spool.open("w", encoding="utf-8", errors="surrogateescape")

    def note(self, rel: str) -> None:
        if self._handle is not None and rel.startswith(_WEB_PREFIX):
            # One buffered line; a newline in a path cannot occur (checked names), but
            # would only split it.
            self._handle.write(rel.replace("\n", " ") + "\n")
            self.noted += 1

    async def finish(self) -> int:
        """Write the list (sorted, each path once) to the diff file; the number of paths."""
        handle, self._handle = self._handle, None
        if handle is None:
            return 0
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, handle.close)
            return await self._write()
        except OSError as exc:
            raise StorageError(
                f"cannot write [sync] diff-file {self.target}: {exc.strerror or exc}; "
                "fix the path or its permissions (the sync itself is done)"
            ) from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                self.spool.unlink()

    async def _write(self) -> int:
        loop = asyncio.get_running_loop()
        target = self.target
        await loop.run_in_executor(None, lambda: target.parent.mkdir(parents=True, exist_ok=True))
        temp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        count = 0
        async with ExternalSorter(self.storage.scratch_dir()) as sorter:
            spool = await loop.run_in_executor(
                None, lambda: self.spool.open(encoding="utf-8", errors="surrogateescape")
            )
            try:
                while lines := await loop.run_in_executor(None, _take, spool):
                    # Sort records are "name serial" lines: spaces are escaped.
                    await sorter.add([(_enc(line), None) for line in lines])
            finally:
                spool.close()
            out = await loop.run_in_executor(
                None, lambda: temp.open("w", encoding="utf-8", errors="surrogateescape")
            )
            try:
                last = None
                chunk: list[str] = []
                async for batch in sorter.sorted():
                    for token, _ in batch:
                        if token == last:
                            continue
                        last = token
                        chunk.append(self._absolute(_dec(token)) + "\n")
                        count += 1
                    await loop.run_in_executor(None, out.writelines, chunk)
                    chunk = []
                await loop.run_in_executor(None, _durable, out)
            except BaseException:
                out.close()
                with contextlib.suppress(FileNotFoundError):
                    temp.unlink()
                raise
            out.close()
        await loop.run_in_executor(None, replace_local_file, temp, target)
        log.info("sync_diff_written", path=str(target), paths=count)
        return count

    def _absolute(self, rel: str) -> str:
        local = self.storage.local_path(rel)
        return str(local) if local is not None else rel


def _take(handle: IO[str]) -> list[str]:
    return [line.rstrip("\n") for _, line in zip(range(1000), handle, strict=False)]


def _durable(handle: IO[str]) -> None:
    handle.flush()
    os.fsync(handle.fileno())


def _enc(rel: str) -> str:
    return rel.replace("%", "%25").replace(" ", "%20")


def _dec(token: str) -> str:
    return token.replace("%20", " ").replace("%25", "%")


class _RecordingWriter:
    def __init__(self, inner: AtomicWriter, rel: str, recorder: DiffRecorder) -> None:
        self._inner = inner
        self._rel = rel
        self._recorder = recorder

    @property
    def written(self) -> int:
        return self._inner.written

    async def reserve(self, size: int) -> None:
        await self._inner.reserve(size)

    async def write(self, data: bytes) -> None:
        await self._inner.write(data)

    async def flush(self) -> None:
        await self._inner.flush()

    async def open_reader(self) -> ByteReader | None:
        return await self._inner.open_reader()

    async def commit(self) -> None:
        await self._inner.commit()
        self._recorder.note(self._rel)

    async def abort(self) -> None:
        await self._inner.abort()


class RecordingStorage:
    """A ``Storage`` that tells a ``DiffRecorder`` every path it changes under ``web/``."""

    def __init__(self, inner: Storage, recorder: DiffRecorder) -> None:
        self.inner = inner
        self.recorder = recorder

    def describe(self) -> str:
        return self.inner.describe()

    async def stat(self, rel: str) -> FileInfo | None:
        return await self.inner.stat(rel)

    async def exists(self, rel: str) -> bool:
        return await self.inner.exists(rel)

    async def read_bytes(self, rel: str, limit: int = READ_LIMIT) -> bytes | None:
        return await self.inner.read_bytes(rel, limit)

    async def read_with_info(
        self, rel: str, limit: int = READ_LIMIT
    ) -> tuple[bytes, FileInfo] | None:
        return await self.inner.read_with_info(rel, limit)

    async def read_tail(self, rel: str, size: int) -> bytes | None:
        return await self.inner.read_tail(rel, size)

    async def open_read(self, rel: str) -> ByteReader | None:
        return await self.inner.open_read(rel)

    async def write_bytes(self, rel: str, data: bytes, *, durable: bool = True) -> None:
        await self.inner.write_bytes(rel, data, durable=durable)
        self.recorder.note(rel)

    def writer(self, rel: str, *, claim: Claim | None = None) -> AtomicWriter:
        return _RecordingWriter(self.inner.writer(rel, claim=claim), rel, self.recorder)

    async def claim(self, rel: str) -> Claim | None:
        return await self.inner.claim(rel)

    async def follow(self, rel: str) -> Follow | None:
        return await self.inner.follow(rel)

    async def link(self, src: str, dest: str) -> None:
        await self.inner.link(src, dest)
        self.recorder.note(dest)

    async def write_set(
        self,
        files: Sequence[tuple[str, bytes]],
        *,
        links: Sequence[tuple[str, str]] = (),
        deletes: Sequence[str] = (),
    ) -> None:
        present = [rel for rel in deletes if await self.inner.exists(rel)]  # (as delete)
        await self.inner.write_set(files, links=links, deletes=deletes)
        for rel in [*(rel for rel, _ in files), *(dest for _, dest in links), *present]:
            self.recorder.note(rel)

    async def delete(self, rel: str) -> bool:
        removed = await self.inner.delete(rel)
        if removed:
            self.recorder.note(rel)
        return removed

    async def delete_tree(self, prefix: str) -> int:
        if prefix.startswith(_WEB_PREFIX) or prefix == layout.WEB:
            async for info in self.inner.iter_files(prefix):
                self.recorder.note(info.rel)
        return await self.inner.delete_tree(prefix)

    def iter_files(self, prefix: str) -> AsyncIterator[FileInfo]:
        return self.inner.iter_files(prefix)

    def iter_names(self, prefix: str) -> AsyncIterator[list[str]]:
        return self.inner.iter_names(prefix)

    def temp_leftovers(self) -> AsyncIterator[FileInfo]:
        return self.inner.temp_leftovers()

    async def touch_access(self, rel: str) -> None:
        await self.inner.touch_access(rel)

    def deferred_durability(self) -> AbstractContextManager[None]:
        return self.inner.deferred_durability()

    def defer_renames(self) -> None:
        self.inner.defer_renames()

    async def barrier(self) -> None:
        await self.inner.barrier()

    def open_append(self, rel: str) -> AppendLog:
        return self.inner.open_append(rel)

    def lock(self, rel: str) -> StoreLock:
        return self.inner.lock(rel)

    def local_path(self, rel: str) -> Path | None:
        return self.inner.local_path(rel)

    def scratch_dir(self) -> Path:
        return self.inner.scratch_dir()


@contextlib.asynccontextmanager
async def recording(storage: Storage, config: SyncConfig) -> AsyncIterator[Storage]:
    """The storage a sync writes through: recording when ``[sync] diff-file`` is set; the
    list is written when the sync ends, however it ended."""
    target = diff_path(config, time.time())
    if target is None:
        yield storage
        return
    recorder = DiffRecorder(storage, target)
    await asyncio.get_running_loop().run_in_executor(None, recorder.open)
    try:
        yield RecordingStorage(storage, recorder)
    finally:
        await recorder.finish()
