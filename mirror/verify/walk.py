"""The whole store walked in bounded memory, on every core.

1. Pages: every project under ``web/simple/`` is read and checked (``verify.pages``, on the
   thread pool), its JSON API answers compared with it, and every file it lists — with
   the sha256, size and ``.metadata`` digest it promises — goes to an external sort
   (``mirror.sorting``: runs of at most ``FLUSH_AT`` records spilled to the storage's
   scratch space, merged with one line per run in memory).
2. Files: every file under ``web/packages/`` goes to a second external sort.
3. The two sorted streams are merged: listed but absent (missing), held but listed by no
   page (unreferenced), both (hashed on the thread pool — ``hashlib`` lets go of the GIL
   for buffers over 2 KB, so the threads hash at once — and compared with the path's
   digest, the page's sha256 and size, or the ``.metadata`` digest). At most
   ``IN_FLIGHT`` files are being hashed at a time.
4. Temp leftovers: what the storage says dead processes left.

Memory is bounded by the sorts' buffers, the largest page and the files in flight, not by
the number of projects or files. Each finding goes to the report (a count and the first
paths) and, with ``--repair``, to the ``Repairer`` at once.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from mirror.concurrency import bounded
from mirror.core import layout
from mirror.core.layout import PackagePath
from mirror.core.verify import new_hasher
from mirror.log import get_logger
from mirror.sorting import ExternalSorter, Record
from mirror.storage import Storage
from mirror.verify.pages import (
    META_ANY,
    META_NONE,
    PageBytes,
    PageCheck,
    check_json_api,
    check_page,
    form_paths,
    package_rel,
    references,
)
from mirror.verify.report import Finding, Kind, Report

if TYPE_CHECKING:
    from mirror.core.model import ProjectPage
    from mirror.verify.repair import Repairer

log = get_logger("mirror.verify")

T = TypeVar("T")

CHUNK = 1024 * 1024
#: Batches being hashed (or repaired) at once, per hashing thread.
IN_FLIGHT_PER_THREAD = 2
#: A batch: this many files, or this many bytes (whichever comes first).
BATCH_FILES = 64
BATCH_BYTES = 8 * 1024**2
#: Projects read and checked at once.
PAGE_WIDTH = 8
_FILE = "F"
_META = "M"
_NONE = "-"


def _enc(rel: str) -> str:
    """A path as one token of a sort record (no spaces, tabs or newlines; same order)."""
    return rel.replace("%", "%25").replace(" ", "%20").replace("\t", "%09").replace("\n", "%0A")


def _dec(token: str) -> str:
    return token.replace("%0A", "\n").replace("%09", "\t").replace("%20", " ").replace("%25", "%")


def hash_file(path: Path, algorithms: tuple[str, ...]) -> tuple[int, dict[str, str]] | None:
    """Size and hex digests of a file (blocking; None when it is gone)."""
    hashers = [new_hasher(name) for name in algorithms]
    size = 0
    try:
        with path.open("rb", buffering=0) as handle:
            if os.fstat(handle.fileno()).st_size <= CHUNK:  # most files: one read
                data = handle.readall()
                size = len(data)
                for hasher in hashers:
                    hasher.update(data)
            else:
                buffer = bytearray(CHUNK)
                view = memoryview(buffer)
                while count := handle.readinto(buffer):
                    size += count
                    for hasher in hashers:
                        hasher.update(view[:count])
    except FileNotFoundError:
        return None
    return size, {name: h.hexdigest() for name, h in zip(algorithms, hashers, strict=True)}


def workers_default() -> int:
    return max(2, os.cpu_count() or 2)


class Verifier:
    def __init__(
        self,
        storage: Storage,
        report: Report,
        *,
        repairer: Repairer | None = None,
        threads: int | None = None,
    ) -> None:
        self.storage = storage
        self.report = report
        self.repairer = repairer
        self.threads = threads or workers_default()
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="verify")
        self._slots = asyncio.Semaphore(self.threads * IN_FLIGHT_PER_THREAD)
        self._tasks: set[asyncio.Task[None]] = set()
        self._batch: list[_Hash] = []
        self._errors: list[asyncio.Task[None]] = []
        self._batch_bytes = 0

    async def _cpu(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def run(self) -> Report:
        try:
            scratch = self.storage.scratch_dir()
            async with ExternalSorter(scratch) as listed, ExternalSorter(scratch) as held:
                await self._pages(listed)
                await self._orphan_json()
                await self._walk(held)
                await self._merge(listed, held)
            await self._leftovers()
        finally:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self.report.finish()
        return self.report

    async def _found(self, finding: Finding) -> None:
        self.report.add(finding)
        log.debug(
            "verify_finding", kind=finding.kind.value, path=finding.path, detail=finding.detail
        )

    # -- 1. pages -------------------------------------------------------------------------

    async def _projects(self) -> AsyncIterator[list[str]]:
        root_files = {
            name + suffix for name in layout.PAGE_FILES for suffix in ("", layout.GZIP_SUFFIX)
        }
        async for names in self.storage.iter_names(layout.WEB_SIMPLE):
            yield [name for name in names if name not in root_files]

    async def _pages(self, listed: ExternalSorter) -> None:
        adding = asyncio.Lock()  # one spill of the sort at a time

        async def one(project: str) -> None:
            records = await self._page(project)
            async with adding:
                await listed.add(records)

        async for batch in self._projects():
            await bounded(batch, PAGE_WIDTH, one)

    async def _page(self, project: str) -> list[Record]:
        rels = form_paths(project)
        contents = await asyncio.gather(*(self.storage.read_bytes(rel) for rel in rels))
        if all(data is None for data in contents):
            return []  # not a project's directory (nothing of a page in it)
        check: PageCheck = await self._cpu(
            check_page, PageBytes(project, dict(zip(rels, contents, strict=True)))
        )
        del contents
        self.report.pages += 1
        page = check.page
        if check.problems:
            findings = [
                Finding(Kind.BROKEN_PAGE, rel, what, project) for rel, what in check.problems
            ]
            for finding in findings:
                await self._found(finding)
            if self.repairer is not None:
                page = await self.repairer.page(check, findings)
        if page is None:
            return []
        await self._json_api(project, page)
        records: list[Record] = []
        for ref in references(page):
            sha = ref.sha256.lower() if ref.sha256 else _NONE
            records.append((f"{_enc(ref.path.web)}\t{_FILE}\t{sha}\t{project}", ref.size))
            records.append(
                (f"{_enc(ref.path.web_metadata)}\t{_META}\t{ref.metadata}\t{project}", None)
            )
        return records

    async def _json_api(self, project: str, page: ProjectPage) -> None:
        versions: list[str | None] = [None]
        async for names in self.storage.iter_names(layout.json_api_dir(project)):
            versions += [n for n in names if n != "json" and layout.is_safe_version(n)]
        for version in versions:
            rel = layout.json_api_rel(project, version)
            data = await self.storage.read_bytes(rel)
            if data is None:
                continue
            self.report.json_answers += 1
            wrong = await self._cpu(check_json_api, data, page)
            if wrong is None:
                continue
            finding = Finding(Kind.JSON_API, rel, wrong, project)
            await self._found(finding)
            if self.repairer is not None:
                await self.repairer.json_api(finding, page)

    async def _orphan_json(self) -> None:
        """JSON API answers of projects that have no page."""
        async for names in self.storage.iter_names(layout.WEB_PYPI):
            for project in names:
                if any([await self.storage.exists(rel) for rel in form_paths(project)[:3]]):
                    continue
                finding = Finding(
                    Kind.JSON_API, layout.json_api_dir(project), "no page for this project", project
                )
                await self._found(finding)
                if self.repairer is not None:
                    await self.repairer.orphan_json(finding)

    # -- 2. files -------------------------------------------------------------------------

    async def _walk(self, held: ExternalSorter) -> None:
        batch: list[Record] = []
        async for info in self.storage.iter_files(layout.WEB_PACKAGES):
            batch.append((_enc(info.rel), info.size))
            if len(batch) >= 1000:
                await held.add(batch)
                batch = []
        await held.add(batch)

    # -- 3. the merge ---------------------------------------------------------------------

    async def _merge(self, listed: ExternalSorter, held: ExternalSorter) -> None:
        refs = _records(listed)
        files = _records(held)
        ref = await anext(refs, None)
        file = await anext(files, None)
        while ref is not None or file is not None:
            ref_key = ref[0].split("\t", 1)[0] if ref is not None else None
            file_key = file[0] if file is not None else None
            if ref is not None and (
                file_key is None or (ref_key is not None and ref_key < file_key)
            ):
                await self._absent(ref)
            elif file is not None and (
                ref_key is None or (file_key is not None and file_key < ref_key)
            ):
                self.report.files += 1
                await self._unreferenced(_dec(file[0]))
                file = await anext(files, None)
                continue
            else:
                assert ref is not None and file is not None
                self.report.files += 1
                await self._both(ref, file)
                file = await anext(files, None)
            # Further pages listing the same file add nothing.
            key = ref_key
            ref = await anext(refs, None)
            while ref is not None and ref[0].split("\t", 1)[0] == key:
                ref = await anext(refs, None)
        await self._drain()

    async def _absent(self, ref: Record) -> None:
        token, kind, expect, project = ref[0].split("\t", 3)
        rel = _dec(token)
        if kind == _META and expect in (META_ANY, META_NONE):
            return  # nothing advertised with a digest: made on demand
        if not self.report.complete:
            self.report.not_held += kind == _FILE
            return
        what = "its page advertises it" if kind == _META else "its page lists it"
        finding = Finding(Kind.MISSING, rel, f"absent; {what}", project)
        await self._found(finding)
        if self.repairer is None:
            return
        if kind == _META:
            await self._start(self.repairer.metadata(finding, _dist_path(rel)))
        else:
            await self._start(self.repairer.missing(finding, _dist_path(rel)))

    async def _unreferenced(self, rel: str) -> None:
        path = package_rel(rel)
        detail = "no page lists it" if path is not None else "not a package path"
        if path is None and rel.endswith(layout.METADATA_SUFFIX):
            detail = "no page lists its file"
        finding = Finding(Kind.UNREFERENCED, rel, detail)
        await self._found(finding)
        if self.repairer is not None:
            await self.repairer.unreferenced(finding)

    async def _both(self, ref: Record, file: Record) -> None:
        token, kind, expect, project = ref[0].split("\t", 3)
        rel = _dec(token)
        size, held_size = ref[1], file[1]
        if kind == _META:
            if expect in (META_ANY, META_NONE):
                return
            await self._queue(_Hash(rel, project, kind, {"sha256": expect}, None), held_size)
            return
        path = _dist_path(rel)
        if size is not None and held_size is not None and size != held_size:
            await self._damaged(rel, project, f"{held_size} bytes, its page says {size}", path)
            return
        expected: dict[str, str] = {}
        if expect != _NONE:
            expected["sha256"] = expect
        if path is not None and expected.get("sha256") != path.digest:
            expected["blake2b_256"] = path.digest
        await self._queue(_Hash(rel, project, kind, expected, path), held_size)

    async def _queue(self, job: _Hash, size: int | None) -> None:
        """Files are hashed in batches (one hop to a thread for many small files)."""
        self._batch.append(job)
        self._batch_bytes += size or 0
        if len(self._batch) >= BATCH_FILES or self._batch_bytes >= BATCH_BYTES:
            await self._flush()

    async def _flush(self) -> None:
        batch, self._batch, self._batch_bytes = self._batch, [], 0
        if batch:
            await self._start(self._hash_batch(batch))

    async def _start(self, work: Any) -> None:
        self._raise_failed()
        await self._slots.acquire()
        task = asyncio.create_task(work)
        self._tasks.add(task)

        def done(finished: asyncio.Task[None]) -> None:
            self._tasks.discard(finished)
            self._slots.release()
            if not finished.cancelled() and finished.exception() is not None:
                self._errors.append(finished)

        task.add_done_callback(done)

    async def _drain(self) -> None:
        await self._flush()
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        self._raise_failed()

    def _raise_failed(self) -> None:
        """What a hashing or repair task raised (a storage error): the walk stops."""
        if self._errors:
            error = self._errors[0].exception()
            assert error is not None
            raise error

    async def _hash_batch(self, batch: list[_Hash]) -> None:
        local = [self.storage.local_path(job.rel) for job in batch]
        if all(path is not None for path in local):
            results = await self._cpu(_hash_all, local, batch)
        else:
            results = [await self._stream_hash(job.rel, job.algorithms) for job in batch]
        for job, result in zip(batch, results, strict=True):
            if result is not None:  # None: removed meanwhile (a repair)
                await self._hashed(job, *result)

    async def _hashed(self, job: _Hash, size: int, digests: dict[str, str]) -> None:
        self.report.hashed += 1
        self.report.hashed_bytes += size
        wrong = [
            f"{a} {digests[a]}, expected {e}" for a, e in job.expected.items() if digests[a] != e
        ]
        if not wrong:
            return
        if job.kind == _META:
            finding = Finding(Kind.METADATA, job.rel, "; ".join(wrong), job.project)
            await self._found(finding)
            if self.repairer is not None:
                await self.repairer.metadata(finding, _dist_path(job.rel))
            return
        await self._damaged(job.rel, job.project, "; ".join(wrong), job.path)

    async def _damaged(self, rel: str, project: str, detail: str, path: PackagePath | None) -> None:
        finding = Finding(Kind.CORRUPT, rel, detail, project)
        await self._found(finding)
        if self.repairer is not None:
            await self.repairer.corrupt(finding, path)

    async def _stream_hash(
        self, rel: str, algorithms: tuple[str, ...]
    ) -> tuple[int, dict[str, str]] | None:
        reader = await self.storage.open_read(rel)
        if reader is None:
            return None
        hashers = {name: new_hasher(name) for name in algorithms}
        size = 0
        try:
            while chunk := await reader.read(CHUNK):
                size += len(chunk)
                for hasher in hashers.values():
                    await self._cpu(hasher.update, chunk)
        finally:
            await reader.close()
        return size, {name: h.hexdigest() for name, h in hashers.items()}

    # -- 4. temp leftovers ----------------------------------------------------------------

    async def _leftovers(self) -> None:
        async for info in self.storage.temp_leftovers():
            finding = Finding(Kind.TEMP, info.rel, "left by a process that is gone")
            await self._found(finding)
            if self.repairer is not None:
                await self.repairer.leftover(finding)


@dataclass(frozen=True, slots=True)
class _Hash:
    rel: str
    project: str
    kind: str
    expected: dict[str, str]
    path: PackagePath | None

    @property
    def algorithms(self) -> tuple[str, ...]:
        return tuple(self.expected) or ("sha256",)


def _hash_all(
    paths: list[Path | None], batch: list[_Hash]
) -> list[tuple[int, dict[str, str]] | None]:
    return [
        hash_file(path, job.algorithms) if path is not None else None
        for path, job in zip(paths, batch, strict=True)
    ]


def _dist_path(rel: str) -> PackagePath | None:
    """The package path of a file or of the file a ``.metadata`` belongs to."""
    return package_rel(rel.removesuffix(layout.METADATA_SUFFIX))


async def _records(sorter: ExternalSorter) -> AsyncIterator[Record]:
    async for batch in sorter.sorted():
        for record in batch:
            yield record
