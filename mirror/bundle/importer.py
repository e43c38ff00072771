"""``pypi-mirror import``: check a bundle whole, then apply it project by project.

Before anything is written:

1. the volumes given (files, or a directory of them) must be one bundle's, each once;
   the manifest is found in the last one, and its signature checked against
   ``[bundle] trusted-keys`` (an unsigned or untrusted bundle is refused unless no key
   is trusted and ``--allow-unsigned`` is given);
2. the manifest must parse whole, every path be one a bundle may carry, every volume be
   there; the range must continue this host's (a gap is refused; a bundle already
   applied is a no-op), and come from the mirror this host took its last bundle from
   (any mirror for a bundle from 0);
3. one walk over the manifest and the volumes side by side checks every member's name,
   length and sha256, every volume's sha256 (the last one's up to the manifest), and,
   with ``[tuf] mode = "verify"``, the bundle's TUF metadata against this host's pinned
   root and every file against its signed target.

Then the journal (``state/bundle/import-journal.json``) is written, and a second walk
applies the bundle in its order, checking every byte again on the way in (removable
media): files are staged through ``Storage.writer`` and committed once their digest
matched; each project is applied as the keeper applies an update — files first, then the
prune intent for the files the new page drops, the pages (``PageStore.write_page``), the
JSON API answers, the record, and the intent settled — so after a ``kill -9`` every
project is as before or as after (up to the renames of one project's page forms), and
the same import run again re-applies what it had not (writing what is there again is a
no-op in effect). Removed projects go through ``ProjectKeeper.remove``. Last, the TUF
metadata is published, the root list rebuilt, the range recorded, and the journal
removed. A full disk fails the import with the journal in place: free space and run it
again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from mirror.bundle import state
from mirror.bundle.errors import AlreadyApplied, BundleError
from mirror.bundle.manifest import (
    Entry,
    Header,
    ManifestError,
    PathKind,
    ProjectEnd,
    RangeKind,
    Removed,
    Summary,
    lines,
    summarise,
)
from mirror.bundle.progress import LineProgress
from mirror.bundle.sign import Signature, load_public, signed_by
from mirror.bundle.tufcheck import BundleTrust, Target
from mirror.bundle.volumes import (
    VOLUME_MEMBER,
    FoundManifest,
    VolumeError,
    VolumeReader,
    find_manifest,
    read_volume_header,
)
from mirror.config import Config, SyncMode, TufMode, TufTargets
from mirror.core import layout
from mirror.core.index import PageParseError, parse_project_json
from mirror.core.model import ProjectPage
from mirror.core.record import JsonApiMeta, ProjectRecord
from mirror.core.rewrite import listed_paths
from mirror.log import get_logger
from mirror.metrics import Metrics
from mirror.project.files import FileStore
from mirror.project.keeper import ProjectKeeper
from mirror.project.root import rebuild_root
from mirror.services import filters_from_config
from mirror.storage import Storage, storage_failure
from mirror.sync.journal import load_state, save_state

log = get_logger("mirror.bundle.import")

_NUMBERED = re.compile(r"\.([0-9]{3,})\.tar$")
TUF_LIMIT = 256 * 1024**2
SMALL_LIMIT = 512 * 1024**2  # a page, a JSON API answer, a record (held until applied)


@dataclass(frozen=True)
class ImportOptions:
    paths: tuple[Path, ...]
    allow_unsigned: bool = False


@dataclass
class ImportResult:
    header: Header
    applied: bool = True
    resumed: bool = False
    signed_by: str | None = None
    entries: int = 0
    bytes: int = 0
    written: int = 0
    projects: int = 0
    removed: int = 0


# -- the volumes and the manifest --------------------------------------------------------


def _volume_files(paths: tuple[Path, ...]) -> list[Path]:
    found: list[Path] = []
    for path in paths:
        if not path.exists():
            raise BundleError(f"{path}: no such file or directory")
        if path.is_dir():
            inside = sorted(p for p in path.iterdir() if p.is_file() and not p.is_symlink())
            if not inside:
                raise BundleError(f"{path}: an empty directory, no bundle in it")
            found += inside
        else:
            found.append(path)
    return found


def _volumes(paths: tuple[Path, ...]) -> tuple[str, dict[int, Path]]:
    files = _volume_files(paths)
    bundles: dict[str, Path] = {}
    by_index: dict[int, Path] = {}
    bundle_id = ""
    for path in files:
        try:
            bundle_id, index = read_volume_header(path)
        except (VolumeError, OSError) as exc:
            if len(files) > 1 and any(p.is_dir() for p in paths):
                continue  # a stray file in a directory of volumes
            raise BundleError(f"{path}: not a bundle volume ({exc})") from exc
        bundles.setdefault(bundle_id, path)
        named = _NUMBERED.search(path.name)
        if named is not None and int(named.group(1)) != index:
            raise BundleError(
                f"{path.name} holds volume {index}: volumes out of order (renamed, or mixed up)"
            )
        if index in by_index:
            raise BundleError(f"{path} and {by_index[index]} are both volume {index}")
        by_index[index] = path
    if not bundles:
        raise BundleError(f"{', '.join(map(str, paths))}: no bundle volume, so no manifest")
    if len(bundles) > 1:
        (a, pa), (b, pb) = list(bundles.items())[:2]
        raise BundleError(f"volumes of different bundles: {pa} is of {a}, {pb} of {b}")
    return bundle_id, by_index


def _manifest(by_index: dict[int, Path], sink: Path) -> FoundManifest:
    for index in sorted(by_index, reverse=True):
        try:
            with sink.open("w+b") as out:
                found = find_manifest(by_index[index], out)
        except VolumeError as exc:
            raise BundleError(str(exc)) from exc
        if found is not None:
            return found
    last = by_index[max(by_index)]
    raise BundleError(
        f"no manifest in the volumes given (up to {last.name}): the last volume is missing "
        "or truncated"
    )


def _check_signature(config: Config, found: FoundManifest, allow_unsigned: bool) -> str | None:
    raw = found.signature
    keys: list[Ed25519PublicKey] = [load_public(path) for path in config.bundle.trusted_keys]
    if not keys:
        if allow_unsigned:
            log.warning("bundle_signature_not_checked", reason="no [bundle] trusted-keys")
            return None
        raise BundleError(
            "refusing the bundle: [bundle] trusted-keys is empty, so no signature can be "
            "checked (list the exporter's .pub key there, or pass --allow-unsigned)"
        )
    if raw is None:
        raise BundleError("refusing the bundle: its manifest is not signed")
    signature = Signature.load(raw)
    if signature is None:
        raise BundleError("refusing the bundle: its signature is unreadable")
    who = signed_by(signature, keys, found.sha256, found.size)
    if who is None:
        raise BundleError(
            f"refusing the bundle: its manifest is not signed by a trusted key (signature "
            f"by key {signature.key_id}; altered after signing, or a key not in "
            "[bundle] trusted-keys)"
        )
    return who


# -- the walk over the volumes, in the manifest's order ----------------------------------


class _Walk:
    """The volumes read in order, member by member, as the manifest lists them."""

    def __init__(self, bundle_id: str, volumes: dict[int, Path], summary: Summary) -> None:
        self.bundle_id = bundle_id
        self.volumes = volumes
        self.summary = summary
        self.index = 0
        self.reader: VolumeReader | None = None

    def _open(self, index: int) -> None:
        path = self.volumes[index]
        last = self.summary.last
        reader = VolumeReader(path, last.prefix_size if index == last.index else None)
        first = reader.next_member()
        if first is None or first.name != VOLUME_MEMBER:
            raise BundleError(f"{path.name}: not a bundle volume")
        body = b"".join(reader.chunks())
        try:
            raw = json.loads(body)
            if raw.get("bundle") != self.bundle_id or raw.get("volume") != index:
                raise BundleError(f"{path.name}: not volume {index} of bundle {self.bundle_id}")
        except (ValueError, AttributeError) as exc:
            raise BundleError(f"{path.name}: unreadable volume header") from exc
        self.reader, self.index = reader, index

    def _close(self, check: bool) -> None:
        reader = self.reader
        assert reader is not None
        try:
            extra = reader.next_member()
            if extra is not None:
                raise BundleError(
                    f"{reader.path.name}: member {extra.name!r} is not in the manifest"
                )
            last = self.summary.last
            if self.index == last.index:
                size, digest = last.prefix_size, last.prefix_sha256
            else:
                line = self.summary.volumes[self.index - 1]
                reader.drain()
                size, digest = line.size, line.sha256
            if reader.position != size:
                raise BundleError(
                    f"{reader.path.name}: {reader.position} bytes where the manifest says {size} "
                    "(truncated, or not this volume)"
                )
            if check and reader.hash.hexdigest() != digest:
                raise BundleError(
                    f"{reader.path.name}: corrupt (its sha256 differs from the manifest)"
                )
        finally:
            reader.close()
            self.reader = None

    def member(self, volume: int, name: str, length: int, path: str, check: bool) -> VolumeReader:
        while self.reader is None or self.index != volume:
            if volume < self.index or volume > self.summary.end.volumes:
                raise BundleError(f"{path}: listed in volume {volume} out of order")
            if self.reader is not None:
                self._close(check)
            self._open(self.index + 1)
        assert self.reader is not None
        member = self.reader.next_member()
        if member is None:
            raise BundleError(
                f"{path}: not in {self.reader.path.name}, which ends before it (truncated?)"
            )
        if member.name != name or member.size != length:
            raise BundleError(
                f"{path}: {self.reader.path.name} holds {member.name!r} ({member.size} bytes) "
                f"where the manifest lists {name!r} ({length} bytes)"
            )
        return self.reader

    def finish(self, check: bool) -> None:
        while True:
            if self.reader is not None:
                self._close(check)
            if self.index >= self.summary.end.volumes:
                return
            self._open(self.index + 1)

    def abandon(self) -> None:
        if self.reader is not None:
            self.reader.close()
            self.reader = None


def _entry_chunks(walk: _Walk, entry: Entry, check: bool) -> Iterator[bytes]:
    for volume, name, length in entry.parts:
        reader = walk.member(volume, name, length, entry.path, check)
        yield from reader.chunks()


# -- import --------------------------------------------------------------------------------


class _Importer:
    def __init__(self, config: Config, storage: Storage, progress: LineProgress) -> None:
        self.config = config
        self.storage = storage
        self.progress = progress
        self.scratch = storage.scratch_dir()
        #: A file was committed since the last barrier.
        self._committed = False

    async def run(self, options: ImportOptions) -> ImportResult:
        bundle_id, by_index = _volumes(options.paths)
        path = self.scratch / f"import-{bundle_id}.jsonl"
        try:
            found = _manifest(by_index, path)
            who = _check_signature(self.config, found, options.allow_unsigned)
            return await self._run(bundle_id, by_index, path, who)
        finally:
            path.unlink(missing_ok=True)

    async def _run(
        self, bundle_id: str, by_index: dict[int, Path], manifest: Path, who: str | None
    ) -> ImportResult:
        try:
            with manifest.open("rb") as stream:
                summary = summarise(stream)
        except ManifestError as exc:
            raise BundleError(f"refusing the bundle: {exc}") from exc
        header = summary.header
        if header.bundle_id != bundle_id:
            raise BundleError(
                f"the manifest is of bundle {header.bundle_id}, the volumes of {bundle_id}"
            )
        count = summary.end.volumes
        for index in range(1, count + 1):
            if index not in by_index:
                raise BundleError(f"volume {index} of {count} is missing")
        extra = sorted(set(by_index) - set(range(1, count + 1)))
        if extra:
            raise BundleError(
                f"{by_index[extra[0]].name} is volume {extra[0]}, the bundle has {count}"
            )
        for line in summary.volumes:
            size = by_index[line.index].stat().st_size
            if size != line.size:
                raise BundleError(
                    f"{by_index[line.index].name}: {size} bytes, the manifest says {line.size} "
                    "(truncated or altered)"
                )
        result = ImportResult(header, signed_by=who)
        resumed = await self._check_order(header)
        result.resumed = resumed
        trust = await self._verify(bundle_id, by_index, summary, manifest)
        try:
            self.progress.set_phase("applying")
            await state.open_journal(
                self.storage, state.Journal(bundle_id, header.source.id, header.start, header.end)
            )
            log.info(
                "bundle_import_started",
                bundle=bundle_id,
                range=f"{header.start}..{header.end}",
                resumed=resumed,
            )
            await self._apply(bundle_id, by_index, summary, manifest, result)
        finally:
            if trust is not None:
                trust.close()
        return result

    async def _check_order(self, header: Header) -> bool:
        """True when this import finishes an interrupted one; raises for a gap, another
        source, another interrupted bundle; AlreadyApplied for a bundle applied before."""
        journal = await state.journal(self.storage)
        if journal is not None:
            if journal.bundle_id != header.bundle_id:
                raise BundleError(
                    f"the import of bundle {journal.bundle_id} ({journal.start}..{journal.end}) "
                    "was interrupted: run that import again to finish it first"
                )
            return True
        if self.config.tuf.mode is TufMode.VERIFY and not header.tuf:
            raise BundleError(
                'refusing the bundle: [tuf] mode = "verify" here, and it carries no TUF metadata'
            )
        last = await state.last_import(self.storage)
        position = 0
        if last is not None and last.kind == header.kind.value:
            if last.source != header.source.id and header.start != 0:
                raise BundleError(
                    f"refusing the bundle: it is from mirror {header.source.id}, this host "
                    f"applied bundles of mirror {last.source} (a bundle from 0 may switch)"
                )
            if last.source == header.source.id:
                position = last.end
                if header.end <= position:
                    raise AlreadyApplied(
                        f"bundle {header.bundle_id} ({header.describe()}) is applied already: "
                        f"this mirror is at {header.kind.value} {position}"
                    )
        elif header.kind is RangeKind.SERIAL:
            position = (await load_state(self.storage)).serial or 0
        if header.start > position:
            raise BundleError(
                f"refusing the bundle: a gap — it starts at {header.kind.value} {header.start}, "
                f"this mirror is at {position}; import the bundles before it first"
            )
        return False

    async def _verify(
        self, bundle_id: str, by_index: dict[int, Path], summary: Summary, manifest: Path
    ) -> BundleTrust | None:
        """The first walk: every byte checked, nothing written."""
        self.progress.set_phase("checking")
        walk = _Walk(bundle_id, by_index, summary)
        verify_tuf = self.config.tuf.mode is TufMode.VERIFY
        scheme = self.config.tuf.targets
        tuf_files: dict[str, bytes] = {}
        tuf_size = 0
        trust: BundleTrust | None = None
        try:
            with manifest.open("rb") as stream:
                for _, line in lines(stream):
                    if not isinstance(line, Entry):
                        continue
                    place = line.place
                    if trust is None and verify_tuf and place.kind is not PathKind.TUF:
                        trust = await self._open_trust(tuf_files)
                    target: Target | None = None
                    if (
                        trust is not None
                        and scheme is TufTargets.FILES
                        and place.kind is PathKind.FILE
                        and not line.path.endswith(layout.METADATA_SUFFIX)
                    ):
                        rel = line.path.removeprefix(layout.WEB_PACKAGES + "/")
                        target = await asyncio.to_thread(trust.target, rel)
                        if target.length != line.size:
                            raise BundleError(
                                f"{line.path}: {line.size} bytes, its signed TUF target says "
                                f"{target.length}"
                            )
                    hashers = {"sha256": hashlib.sha256()}
                    if target is not None:
                        for algorithm in target.hashes:
                            hashers.setdefault(algorithm, _hasher(algorithm))
                    keep = place.kind is PathKind.TUF
                    body: list[bytes] = []
                    for chunk in _entry_chunks(walk, line, True):
                        for hasher in hashers.values():
                            hasher.update(chunk)
                        if keep:
                            body.append(chunk)
                    if hashers["sha256"].hexdigest() != line.sha256:
                        raise BundleError(
                            f"{line.path}: corrupt (sha256 differs from the manifest) in "
                            f"volume {line.parts[0][0]}"
                        )
                    if target is not None:
                        for algorithm, expected in target.hashes.items():
                            if hashers[algorithm].hexdigest() != expected:
                                raise BundleError(
                                    f"{line.path}: does not match its signed TUF target "
                                    f"({algorithm})"
                                )
                    if keep and place.name is not None:
                        tuf_size += line.size
                        if tuf_size > TUF_LIMIT:
                            raise BundleError(
                                f"{line.path}: more TUF metadata than {TUF_LIMIT} bytes"
                            )
                        tuf_files[place.name] = b"".join(body)
                    self.progress.file(line.size)
            walk.finish(True)
            if trust is None and verify_tuf:
                trust = await self._open_trust(tuf_files)
        except VolumeError as exc:
            walk.abandon()
            if trust is not None:
                trust.close()
            raise BundleError(str(exc)) from exc
        except BaseException:
            walk.abandon()
            if trust is not None:
                trust.close()
            raise
        return trust

    async def _open_trust(self, files: dict[str, bytes]) -> BundleTrust:
        root_path = self.config.tuf.root
        assert root_path is not None
        if not files:
            raise BundleError(
                'refusing the bundle: [tuf] mode = "verify" here, and it carries no TUF metadata'
            )
        pinned = await asyncio.to_thread(Path(root_path).read_bytes)
        return await asyncio.to_thread(BundleTrust.open, pinned, files, self.scratch)

    # -- applying --------------------------------------------------------------------------

    def _keeper(self) -> ProjectKeeper:
        files = FileStore(
            self.storage, None, Metrics(), max_file_size=self.config.upstream.max_file_size
        )
        return ProjectKeeper(self.storage, None, files, filters_from_config(self.config))

    async def _apply(
        self,
        bundle_id: str,
        by_index: dict[int, Path],
        summary: Summary,
        manifest: Path,
        result: ImportResult,
    ) -> None:
        keeper = self._keeper()
        walk = _Walk(bundle_id, by_index, summary)
        pending: dict[str, bytes] = {}
        tuf: dict[str, bytes] = {}
        header = summary.header
        what = "the bundle"
        try:
            # Renames are made durable by the barrier before each project's pages (so a
            # page never outlives a file it lists on a power loss), not one by one.
            with self.storage.deferred_durability(), manifest.open("rb") as stream:
                for _, line in lines(stream):
                    what = line.path if isinstance(line, Entry) else str(getattr(line, "name", ""))
                    if isinstance(line, Entry):
                        result.entries += 1
                        result.bytes += line.size
                        if line.place.kind is PathKind.FILE:
                            result.written += await self._file(walk, line)
                        else:
                            body = self._small(walk, line)
                            if line.place.kind is PathKind.TUF:
                                tuf[line.path] = body
                            else:
                                pending[line.path] = body
                        self.progress.file(line.size)
                    elif isinstance(line, ProjectEnd):
                        await self._project(keeper, line.name, pending)
                        pending.clear()
                        result.projects += 1
                        self.progress.project()
                    elif isinstance(line, Removed):
                        removed = await keeper.remove(line.name)
                        log.info("bundle_project_removed", project=line.name, files=removed)
                        result.removed += 1
            walk.finish(False)
        except VolumeError as exc:
            raise BundleError(
                f"{exc} (while applying: run the same import again once fixed)"
            ) from exc
        except OSError as exc:
            raise storage_failure(exc, what, self.storage.describe()) from exc
        finally:
            walk.abandon()
            await keeper.close()
            await keeper.files.close()
        for rel, body in tuf.items():
            await self.storage.write_bytes(rel, body)
        await self.storage.barrier()
        serial = header.end if header.kind is RangeKind.SERIAL else None
        await rebuild_root(self.storage, serial)
        if header.kind is RangeKind.SERIAL and self.config.sync.mode is SyncMode.MIRROR:
            sync_state = await load_state(self.storage)
            await save_state(self.storage, dataclasses.replace(sync_state, serial=header.end))
        await state.save_import(
            self.storage,
            state.ImportState(header.source.id, header.kind.value, header.end, bundle_id),
        )
        await state.close_journal(self.storage)
        log.info(
            "bundle_imported",
            bundle=bundle_id,
            range=f"{header.start}..{header.end}",
            entries=result.entries,
            bytes=result.bytes,
            written=result.written,
            projects=result.projects,
            removed=result.removed,
        )

    async def _file(self, walk: _Walk, entry: Entry) -> int:
        """Stage a file and commit it once its bytes matched again; 0 if already held."""
        held = await self.storage.stat(entry.path)
        if held is not None and held.size == entry.size:
            for _ in _entry_chunks(walk, entry, False):
                pass
            return 0
        writer = self.storage.writer(entry.path)
        try:
            await writer.reserve(entry.size)
            digest = hashlib.sha256()
            for chunk in _entry_chunks(walk, entry, False):
                digest.update(chunk)
                await writer.write(chunk)
            if digest.hexdigest() != entry.sha256:
                raise BundleError(
                    f"{entry.path}: its bytes changed since they were checked (the medium "
                    "is failing?); nothing of its project was applied"
                )
            await writer.commit()
            self._committed = True
        finally:
            await writer.abort()
        return 1

    def _small(self, walk: _Walk, entry: Entry) -> bytes:
        if entry.size > SMALL_LIMIT:
            raise BundleError(f"{entry.path}: {entry.size} bytes is too large for its kind")
        body = b"".join(_entry_chunks(walk, entry, False))
        if hashlib.sha256(body).hexdigest() != entry.sha256:
            raise BundleError(f"{entry.path}: its bytes changed since they were checked")
        return body

    async def _project(
        self, keeper: ProjectKeeper, project: str, pending: dict[str, bytes]
    ) -> None:
        """Apply one project as the keeper applies an update (its files are in by now):
        the prune intent, the JSON API answers, the page (every form), the record, then the
        files the new page dropped are deleted. The page comes after the JSON API: a project
        whose page is new has all of its views new."""
        page_bytes = pending.get(layout.simple_page(project, layout.PAGE_V1_JSON))
        if page_bytes is None:
            raise BundleError(f"project {project}: the bundle carries no page for it")
        try:
            page: ProjectPage = parse_project_json(page_bytes)
        except PageParseError as exc:
            raise BundleError(f"{layout.simple_page(project, layout.PAGE_V1_JSON)}: {exc}") from exc
        record_bytes = pending.get(layout.project_record(project))
        record = ProjectRecord.load(record_bytes) if record_bytes else None
        pages, intents = keeper.pages, keeper.intents
        old = await pages.served_page(project)
        dropped = listed_paths(old) - listed_paths(page) if old is not None else set()
        recorded = await intents.record(project, dropped)
        if self._committed:  # the project's new files, durable before a page lists them
            await self.storage.barrier()
            self._committed = False
        carried: set[str] = set()
        for rel, body in pending.items():
            place_version = _json_version(project, rel)
            if place_version is None:
                continue
            version = place_version[0]
            carried.add(rel)
            meta_bytes = pending.get(layout.json_api_meta(project, version))
            meta = JsonApiMeta.load(meta_bytes) if meta_bytes else None
            if meta is None:
                fetched = record.meta.fetched_at if record is not None else None
                meta = JsonApiMeta(etag=None, page_fetched_at=fetched)
            await pages.write_json(project, version, body, meta)
        async for info in self.storage.iter_files(layout.json_api_dir(project)):
            held_version = _json_version(project, info.rel)
            if held_version is not None and info.rel not in carried:
                await pages.remove_json(project, held_version[0])
        await pages.write_page(page)
        if record is not None:
            await pages.write_record(project, record)
        if recorded:
            await intents.settle(project)


def _hasher(algorithm: str) -> Any:
    if algorithm == "blake2b_256":
        return hashlib.blake2b(digest_size=32)
    return hashlib.new(algorithm)


def _json_version(project: str, rel: str) -> tuple[str | None] | None:
    """(version,) when ``rel`` is one of the project's JSON API answers, else None."""
    if rel == layout.json_api(project):
        return (None,)
    prefix = layout.json_api_dir(project) + "/"
    if rel.startswith(prefix):
        parts = rel[len(prefix) :].split("/")
        safe = len(parts) == 2 and layout.is_safe_version(parts[0])
        if safe and rel == layout.json_api_version(project, parts[0]):
            return (parts[0],)
    return None


async def import_bundle(
    config: Config, storage: Storage, options: ImportOptions, progress: LineProgress
) -> ImportResult:
    return await _Importer(config, storage, progress).run(options)
