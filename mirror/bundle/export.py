"""``pypi-mirror export``: what changed since a serial (or since the last export), as a
signed bundle, streamed in one pass.

What "changed" means:

- a synced mirror (``[sync] mode = "mirror"``): the projects whose record's
  ``last_serial`` is past SERIAL (default: the serial of the last export; ``--all``: 0),
  each with every file and ``.metadata`` its page lists, its JSON API answers, both page
  renderings and its record; the range is SERIAL..the mirror's serial;
- a pull-through cache (no serial of its own): the pages fetched (``fetched_at``) and the
  files stored (mtime) since the last export started; the range is a sequence number,
  one per export;
- in mirror mode, an export that continues from the last one (no ``--since``, no
  ``--all``) leaves out the files of changed projects that were stored before the last
  export began: an earlier bundle carried them;
- removals, in both modes: the projects held at the last export (``state/bundle/
  exported-projects``) and not any more. Yanks and dropped files are changes of the pages.

With ``[tuf] mode = "verify"`` the verified TUF metadata (``web/tuf/``) comes first.
Entries are written in the order their bytes are in the volumes; files go through sha256
in chunks, so memory does not grow with the bundle (only the set of project names does).
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from mirror.bundle import state
from mirror.bundle.errors import BundleError, UsageError
from mirror.bundle.manifest import Header, RangeKind, Source, classify, dump
from mirror.bundle.progress import LineProgress
from mirror.bundle.sign import load_private, sign
from mirror.bundle.volumes import VolumeError, VolumeWriter
from mirror.config import Config, SyncMode, TufMode
from mirror.core import layout
from mirror.core.names import is_valid_project_name, normalize
from mirror.core.rewrite import listed_paths
from mirror.log import get_logger
from mirror.project.pages import PageStore
from mirror.storage import Storage
from mirror.sync.journal import load_state

log = get_logger("mirror.bundle.export")

CHUNK = 1024 * 1024
#: Seconds of slack between a file's mtime and the clock read when an export began.
CLOCK_MARGIN = 2.0


@dataclass(frozen=True)
class ExportOptions:
    output: Path
    since: int | None = None
    everything: bool = False
    max_size: int | None = None


@dataclass
class ExportResult:
    bundle_id: str
    kind: RangeKind
    start: int
    end: int
    volumes: list[Path] = field(default_factory=list)
    entries: int = 0
    bytes: int = 0
    projects: int = 0
    removed: int = 0
    signed: bool = False


async def held_project_names(storage: Storage) -> list[str]:
    names: list[str] = []
    async for batch in storage.iter_names(layout.WEB_SIMPLE):
        names += [n for n in batch if is_valid_project_name(n) and normalize(n) == n]
    names.sort()
    return names


class _Export:
    def __init__(
        self,
        storage: Storage,
        writer: VolumeWriter,
        manifest: BinaryIO,
        progress: LineProgress,
        result: ExportResult,
    ) -> None:
        self.storage = storage
        self.writer = writer
        self.manifest = manifest
        self.progress = progress
        self.result = result

    def line(self, data: dict[str, object]) -> None:
        self.manifest.write(dump(data))

    async def add(
        self,
        rel: str,
        project: str | None,
        body: bytes | None = None,
        *,
        skip_before: float | None = None,
    ) -> bool:
        """One stored file (``body``: its bytes, already read): False when it is gone, or
        stored before ``skip_before``."""
        if classify(rel) is None:
            raise BundleError(f"{rel}: not a path a bundle may carry (a bug)")
        if body is None:
            info = await self.storage.stat(rel)
            if info is not None and skip_before is not None and info.mtime < skip_before:
                return False
            reader = await self.storage.open_read(rel) if info is not None else None
            if info is None or reader is None:
                return False
            size = info.size
        else:
            reader, size = None, len(body)
        digest = hashlib.sha256()
        parts: list[list[object]] = []
        remaining = size
        pending = body or b""
        try:
            piece = 0
            while True:
                name, length = self.writer.begin_piece(rel, remaining, piece)
                left = length
                while left:
                    if not pending:
                        assert reader is not None
                        pending = await reader.read(min(CHUNK, left))
                        if not pending:
                            raise BundleError(f"{rel} shrank while it was exported; export again")
                    chunk, pending = pending[:left], pending[left:]
                    digest.update(chunk)
                    self.writer.write(chunk)
                    left -= len(chunk)
                self.writer.end_piece(length)
                parts.append([self.writer.index, name, length])
                remaining -= length
                piece += 1
                if remaining == 0:
                    break
            if pending or (reader is not None and await reader.read(1)):
                raise BundleError(f"{rel} grew while it was exported; export again")
        finally:
            if reader is not None:
                await reader.close()
        self.line(
            {
                "t": "entry",
                "path": rel,
                "size": size,
                "sha256": digest.hexdigest(),
                "project": project,
                "parts": parts,
            }
        )
        self.result.entries += 1
        self.result.bytes += size
        self.progress.file(size)
        return True

    async def tree(self, prefix: str, project: str | None) -> None:
        rels = sorted([info.rel async for info in self.storage.iter_files(prefix)])
        for rel in rels:
            if classify(rel) is not None:
                await self.add(rel, project)


async def export_bundle(
    config: Config, storage: Storage, options: ExportOptions, progress: LineProgress
) -> ExportResult:
    mirror_mode = config.sync.mode is SyncMode.MIRROR
    previous = await state.last_export(storage)
    kind = RangeKind.SERIAL if mirror_mode else RangeKind.SEQUENCE
    if previous is not None and previous.kind != kind.value:
        previous = None
    cutoff = 0.0
    if mirror_mode:
        serial = (await load_state(storage)).serial
        if serial is None:
            raise UsageError(
                f"{storage.describe()} has no serial yet: run `pypi-mirror sync` first"
            )
        end = serial
        if options.everything:
            start = 0
        elif options.since is not None:
            start = options.since
        else:
            start = previous.end if previous is not None else 0
        if start > end:
            raise UsageError(f"--since {start} is past the mirror's serial {end}")
    else:
        if options.since is not None:
            raise UsageError(
                "--since takes a serial, and a pull-through cache has none: export without "
                "it (what changed since the last export) or with --all"
            )
        end = (previous.end if previous is not None else 0) + 1
        start = 0 if options.everything or previous is None else previous.end
        cutoff = 0.0 if options.everything or previous is None else previous.started_at
    # Continuing the chain of exports, a changed project's files stored before the last
    # export began are in an earlier bundle already (that export took the sync lock, so
    # every file stored before it was listed by a project it or an earlier one carried);
    # with --since or --all every listed file goes.
    file_cutoff: float | None = None
    if mirror_mode and previous is not None and options.since is None and not options.everything:
        file_cutoff = previous.started_at - CLOCK_MARGIN
    key = load_private(config.bundle.signing_key) if config.bundle.signing_key else None
    bundle_id = uuid.uuid4().hex
    started_at = time.time()
    source = Source(await state.identity(storage), config.upstream.url, config.sync.mode.value)
    tuf = config.tuf.mode is TufMode.VERIFY
    header = Header(bundle_id, started_at, source, kind, start, end, tuf)
    result = ExportResult(bundle_id, kind, start, end, signed=key is not None)
    writer = VolumeWriter(options.output, bundle_id, options.max_size, int(started_at))
    scratch = storage.scratch_dir() / f"export-{bundle_id}.jsonl"
    pages = PageStore(storage)
    try:
        with scratch.open("w+b") as manifest:
            manifest.write(dump(header.line()))
            job = _Export(storage, writer, manifest, progress, result)
            writer.ensure_open()
            if tuf:
                progress.set_phase("tuf")
                await job.tree(layout.WEB_TUF, None)
            if not mirror_mode:
                progress.set_phase("files")
                async for info in _changed_files(storage, cutoff):
                    await job.add(info, None)
            progress.set_phase("projects")
            held = await held_project_names(storage)
            for project in held:
                record = await pages.record(project)
                if mirror_mode:
                    serial = record.meta.last_serial if record is not None else None
                    changed = start == 0 or serial is None or serial > start
                else:
                    changed = record is None or record.meta.fetched_at > cutoff
                if not changed:
                    continue
                await _project(job, pages, project, with_files=mirror_mode, since=file_cutoff)
                job.line(
                    {
                        "t": "project",
                        "name": project,
                        "serial": record.meta.last_serial if record is not None else None,
                    }
                )
                result.projects += 1
                progress.project()
            gone = sorted(await state.exported_projects(storage) - set(held))
            for name in gone:
                job.line({"t": "removed", "name": name})
            result.removed = len(gone)
            await _finish(job, writer, manifest, scratch, key)
        result.volumes = list(writer.paths)
    except BaseException:
        writer.discard()
        raise
    finally:
        scratch.unlink(missing_ok=True)

    async def names() -> AsyncIterator[str]:
        for name in held:
            yield name

    await state.save_exported_projects(storage, names())
    await state.save_export(storage, state.ExportState(kind.value, end, started_at, bundle_id))
    log.info(
        "bundle_exported",
        bundle=bundle_id,
        range=f"{start}..{end}",
        kind=kind.value,
        entries=result.entries,
        bytes=result.bytes,
        projects=result.projects,
        removed=result.removed,
        volumes=len(result.volumes),
        signed=result.signed,
    )
    return result


async def _changed_files(storage: Storage, cutoff: float) -> AsyncIterator[str]:
    """Files (and ``.metadata``) stored since ``cutoff``, sorted per batch of the walk."""
    batch: list[str] = []
    async for info in storage.iter_files(layout.WEB_PACKAGES):
        if info.mtime > cutoff and classify(info.rel) is not None:
            batch.append(info.rel)
        if len(batch) >= 1024:
            for rel in sorted(batch):
                yield rel
            batch.clear()
    for rel in sorted(batch):
        yield rel


async def _project(
    job: _Export, pages: PageStore, project: str, *, with_files: bool, since: float | None
) -> None:
    """A project's entries in the order ``import`` applies them (the keeper's): files
    (those stored ``since``, when given), then the JSON API answers and the pages, then
    the record."""
    page_rel = layout.simple_page(project, layout.PAGE_V1_JSON)
    page_bytes = await job.storage.read_bytes(page_rel)
    if page_bytes is None:
        return
    if with_files:
        page = await pages.served_page(project)
        for path in sorted(listed_paths(page) if page else (), key=lambda p: p.rel):
            await job.add(path.web, project, skip_before=since)
            await job.add(path.web_metadata, project, skip_before=since)
    await job.tree(layout.json_api_dir(project), project)
    await job.tree(layout.json_api_meta_dir(project), project)
    html = await job.storage.read_bytes(layout.simple_page(project, layout.PAGE_HTML))
    if html is not None:
        await job.add(layout.simple_page(project, layout.PAGE_HTML), project, html)
    await job.add(page_rel, project, page_bytes)
    record = await job.storage.read_bytes(layout.project_record(project))
    if record is not None:
        await job.add(layout.project_record(project), project, record)


async def _finish(
    job: _Export, writer: VolumeWriter, manifest: BinaryIO, scratch: Path, key: object
) -> None:
    estimate = manifest.tell() + 256 * (writer.index + 2) + 512
    last, prefix_size, prefix_sha256 = writer.prepare_manifest(estimate)
    for volume in writer.done:
        job.line(
            {
                "t": "volume",
                "index": volume.index,
                "name": volume.name,
                "size": volume.size,
                "sha256": volume.sha256,
            }
        )
    job.line(
        {"t": "last", "index": last, "prefix_size": prefix_size, "prefix_sha256": prefix_sha256}
    )
    result = job.result
    job.line(
        {
            "t": "end",
            "entries": result.entries,
            "bytes": result.bytes,
            "projects": result.projects,
            "removed": result.removed,
            "volumes": last,
        }
    )
    manifest.flush()
    manifest.seek(0)
    digest = hashlib.sha256()
    size = 0
    while chunk := manifest.read(CHUNK):
        digest.update(chunk)
        size += len(chunk)
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    signature = (
        sign(key, digest.hexdigest(), size).dump() if isinstance(key, Ed25519PrivateKey) else None
    )
    try:
        writer.close(scratch, signature)
    except VolumeError as exc:
        raise UsageError(str(exc)) from exc
