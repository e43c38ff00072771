"""Tar volumes: written in one pass under a size cap, read back member by member.

A bundle is one tar file (``OUTPUT``), or with ``--max-size`` numbered volumes
(``OUTPUT.001.tar``, ``OUTPUT.002.tar``, …) of at most that many bytes each. Every volume
starts with ``bundle/volume.json`` (the bundle's id and the volume's number), so a volume
of another bundle or out of its place is named at once; a member is a store path
(``web/…``, ``state/…``), or ``<path>.partNNN`` for a piece of a file split across
volumes. The last volume ends with ``bundle/manifest.jsonl`` and ``bundle/manifest.sig``.
Plain POSIX tar (ustar, pax headers only for paths ustar cannot hold): ``tar tvf`` lists a
volume, ``tar xf`` unpacks one.

Reading does not use :mod:`tarfile`'s archive walker (which keeps every member it saw):
headers are parsed one at a time (``TarInfo.frombuf``), only regular files and pax
headers are accepted, and every byte read goes through a running sha256, so that a
volume's digest (or the digest of the last volume up to its manifest) comes with the walk.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from mirror.core import layout

BLOCK = 512
END_OF_ARCHIVE = 2 * BLOCK
VOLUME_MEMBER = f"{layout.BUNDLE_MEMBER_PREFIX}volume.json"
MANIFEST_MEMBER = f"{layout.BUNDLE_MEMBER_PREFIX}manifest.jsonl"
SIGNATURE_MEMBER = f"{layout.BUNDLE_MEMBER_PREFIX}manifest.sig"
#: The smallest --max-size: a volume must hold its header and a useful piece of data.
MIN_VOLUME = 1024 * 1024
READ_CHUNK = 1024 * 1024


class VolumeError(Exception):
    """A volume that is not what the bundle says (the message names it)."""


def padding(size: int) -> int:
    return -size % BLOCK


def header(name: str, size: int, mtime: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    info.mtime = mtime
    info.type = tarfile.REGTYPE
    try:
        # One block: a long path is split into ustar's prefix and name where it can be.
        return info.tobuf(format=tarfile.USTAR_FORMAT, encoding="utf-8", errors="strict")
    except ValueError:
        return info.tobuf(format=tarfile.PAX_FORMAT, encoding="utf-8", errors="strict")


def volume_names(output: Path, count: int, split: bool) -> list[Path]:
    if not split:
        return [output]
    return [output.with_name(f"{output.name}.{index:03d}.tar") for index in range(1, count + 1)]


@dataclass(frozen=True)
class Part:
    volume: int
    member: str
    length: int


@dataclass(frozen=True)
class VolumeDigest:
    index: int
    name: str
    size: int
    sha256: str


class VolumeWriter:
    """Writes members into volumes, starting a new one when the cap would be passed."""

    def __init__(self, output: Path, bundle_id: str, max_size: int | None, mtime: int) -> None:
        self.output = output
        self.bundle_id = bundle_id
        self.max_size = max_size
        self.mtime = mtime
        self.index = 0
        self.paths: list[Path] = []
        self.done: list[VolumeDigest] = []
        self._file: BinaryIO | None = None
        self._hash = hashlib.sha256()
        self._written = 0

    @property
    def split(self) -> bool:
        return self.max_size is not None

    def _path(self, index: int) -> Path:
        if not self.split:
            return self.output
        return self.output.with_name(f"{self.output.name}.{index:03d}.tar")

    def _raw(self, data: bytes) -> None:
        assert self._file is not None
        self._file.write(data)
        self._hash.update(data)
        self._written += len(data)

    def _open_next(self) -> None:
        if self._file is not None:
            self._close_current()
        self.index += 1
        path = self._path(self.index)
        # "x": never overwrite (or follow) what is there.
        self._file = open(path, "xb")  # noqa: SIM115 - closed in _close_current
        self.paths.append(path)
        self._hash = hashlib.sha256()
        self._written = 0
        body = json.dumps({"bundle": self.bundle_id, "volume": self.index}).encode() + b"\n"
        self._member(VOLUME_MEMBER, body)

    def _close_current(self) -> None:
        assert self._file is not None
        self._raw(b"\0" * END_OF_ARCHIVE)
        self._file.flush()
        self._file.close()
        self._file = None
        self.done.append(
            VolumeDigest(
                self.index, self._path(self.index).name, self._written, self._hash.hexdigest()
            )
        )

    def _member(self, name: str, body: bytes) -> None:
        self._raw(header(name, len(body), self.mtime))
        self._raw(body)
        self._raw(b"\0" * padding(len(body)))

    def _room(self, name: str) -> int:
        """Bytes of data a member named ``name`` can still take in the current volume."""
        if self._file is None:
            return -1
        if self.max_size is None:
            return 1 << 62
        left = (
            self.max_size - self._written - END_OF_ARCHIVE - len(header(name, 1 << 33, self.mtime))
        )
        return left - left % BLOCK if left > 0 else 0

    def _fresh_room(self, name: str) -> int:
        assert self.max_size is not None
        used = len(self._volume_member()) + END_OF_ARCHIVE + len(header(name, 1 << 33, self.mtime))
        left = self.max_size - used
        return left - left % BLOCK

    def _volume_member(self) -> bytes:
        body = json.dumps({"bundle": self.bundle_id, "volume": self.index + 1}).encode() + b"\n"
        return header(VOLUME_MEMBER, len(body), self.mtime) + body + b"\0" * padding(len(body))

    def begin_piece(self, base: str, remaining: int, piece: int) -> tuple[str, int]:
        """Start the next member of a file with ``remaining`` bytes left to write (``piece``
        members of it written so far): the member's name and how many bytes it takes.

        A file that fits in one volume is never split (it moves to the next volume if this
        one is too full); a larger one fills this volume and goes on in the next ones."""
        self.ensure_open()
        if self.max_size is None:
            self._raw(header(base, remaining, self.mtime))
            return base, remaining
        name = base if piece == 0 else f"{base}.part{piece + 1:03d}"
        room = self._room(name)
        if piece == 0 and room < remaining:
            if remaining <= self._fresh_room(base):
                self._open_next()
                room = self._room(name)
            else:
                name = f"{base}.part001"
                room = self._room(name)
        if room < min(remaining, BLOCK):
            self._open_next()
            room = self._room(name)
        length = min(remaining, room)
        self._raw(header(name, length, self.mtime))
        return name, length

    def write(self, data: bytes) -> None:
        self._raw(data)

    def end_piece(self, length: int) -> None:
        self._raw(b"\0" * padding(length))

    def ensure_open(self) -> None:
        if self._file is None:
            self._open_next()

    def prepare_manifest(self, estimate: int) -> tuple[int, int, str]:
        """Make room for a manifest of about ``estimate`` bytes (a new volume if this one is
        too full): the last volume's number, and the size and sha256 of its bytes so far
        (what the manifest says of the volume that holds it)."""
        self.ensure_open()
        need = 2 * len(header(MANIFEST_MEMBER, estimate, self.mtime)) + estimate + 4 * BLOCK
        if self.max_size is not None and self._written + need + END_OF_ARCHIVE > self.max_size:
            self._open_next()
        return self.index, self._written, self._hash.copy().hexdigest()

    def close(self, manifest: Path, signature: bytes | None) -> None:
        size = manifest.stat().st_size
        if self.max_size is not None:
            need = 2 * len(header(MANIFEST_MEMBER, size, self.mtime)) + size + 4 * BLOCK
            if self._written + need + END_OF_ARCHIVE > self.max_size:
                raise VolumeError(
                    f"--max-size {self.max_size} is too small for the manifest ({size} bytes)"
                )
        self._raw(header(MANIFEST_MEMBER, size, self.mtime))
        with manifest.open("rb") as src:
            while chunk := src.read(READ_CHUNK):
                self._raw(chunk)
        self._raw(b"\0" * padding(size))
        if signature is not None:
            self._member(SIGNATURE_MEMBER, signature)
        self._close_current()

    def discard(self) -> None:
        """An export that failed: close and remove what it wrote."""
        if self._file is not None:
            self._file.close()
            self._file = None
        for path in self.paths:
            path.unlink(missing_ok=True)


# -- reading -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Member:
    name: str
    size: int
    #: Offset of the member's first header (pax header included) in the volume.
    offset: int


class VolumeReader:
    """One volume read from its start; every byte read is hashed."""

    def __init__(self, path: Path, stop_at: int | None = None) -> None:
        self.path = path
        self._file = path.open("rb")
        self.hash = hashlib.sha256()
        self.position = 0
        #: Read no further than this (the last volume: where its manifest begins).
        self.stop_at = stop_at
        self._left = 0  # data bytes of the current member not read yet
        self._pad = 0

    def close(self) -> None:
        self._file.close()

    def _read(self, size: int) -> bytes:
        if self.stop_at is not None:
            size = max(0, min(size, self.stop_at - self.position))
        data = self._file.read(size)
        self.hash.update(data)
        self.position += len(data)
        return data

    def _exact(self, size: int, what: str) -> bytes:
        data = self._read(size)
        if len(data) != size:
            raise VolumeError(f"{self.path.name}: truncated ({what} ends at byte {self.position})")
        return data

    def next_member(self) -> Member | None:
        """The next regular member, or None at the end of the archive (or at ``stop_at``)."""
        if self._left:
            self.skip()
        if self._pad:
            self._exact(self._pad, "padding")
            self._pad = 0
        offset = self.position
        block = self._read(BLOCK)
        if not block or block == b"\0" * BLOCK:
            return None
        if len(block) != BLOCK:
            raise VolumeError(
                f"{self.path.name}: truncated (a header ends at byte {self.position})"
            )
        info = self._info(block, offset)
        overrides: dict[str, str] = {}
        if info.type in (tarfile.XHDTYPE, tarfile.XGLTYPE):
            body = self._exact(info.size + padding(info.size), "a pax header")[: info.size]
            overrides = _pax_records(body, self.path.name, offset)
            block = self._exact(BLOCK, "a header")
            info = self._info(block, offset)
        if info.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
            raise VolumeError(
                f"{self.path.name}: member {overrides.get('path', info.name)!r} is not a "
                "regular file (links, directories and devices are refused)"
            )
        name = overrides.get("path", info.name)
        size = info.size
        if "size" in overrides:
            try:
                size = int(overrides["size"])
            except ValueError as exc:
                raise VolumeError(f"{self.path.name}: bad pax size at byte {offset}") from exc
        check_member_name(name, self.path.name)
        self._left = size
        self._pad = padding(size)
        return Member(name, size, offset)

    def _info(self, block: bytes, offset: int) -> tarfile.TarInfo:
        try:
            return tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
        except tarfile.HeaderError as exc:
            raise VolumeError(f"{self.path.name}: bad tar header at byte {offset} ({exc})") from exc

    def chunks(self) -> Iterator[bytes]:
        """The current member's data, in chunks (all of it: a short volume is an error)."""
        while self._left:
            data = self._read(min(self._left, READ_CHUNK))
            if not data:
                raise VolumeError(
                    f"{self.path.name}: truncated (data ends at byte {self.position})"
                )
            self._left -= len(data)
            yield data

    def skip(self) -> None:
        for _ in self.chunks():
            pass

    def seek_past(self) -> None:
        """Skip the current member's data without reading (or hashing) it."""
        self._file.seek(self._left + self._pad, 1)
        self.position += self._left + self._pad
        self._left = self._pad = 0

    def drain(self) -> None:
        """Read (and hash) the rest of the volume."""
        while self._read(READ_CHUNK):
            pass


def _pax_records(body: bytes, volume: str, offset: int) -> dict[str, str]:
    records: dict[str, str] = {}
    pos = 0
    while pos < len(body):
        space = body.find(b" ", pos)
        if space < 0:
            raise VolumeError(f"{volume}: bad pax header at byte {offset}")
        try:
            length = int(body[pos:space])
        except ValueError as exc:
            raise VolumeError(f"{volume}: bad pax header at byte {offset}") from exc
        record = body[space + 1 : pos + length]
        if length <= 0 or not record.endswith(b"\n") or b"=" not in record:
            raise VolumeError(f"{volume}: bad pax header at byte {offset}")
        key, _, value = record[:-1].partition(b"=")
        records[key.decode("utf-8", "replace")] = value.decode("utf-8", "surrogateescape")
        pos += length
    for name in ("linkpath", "GNU.sparse.map", "GNU.sparse.size"):
        if name in records:
            raise VolumeError(f"{volume}: member at byte {offset} is a link or sparse file")
    return records


def check_member_name(name: str, volume: str) -> None:
    parts = name.split("/")
    if (
        not name
        or name.startswith("/")
        or "\\" in name
        or any(part in ("", ".", "..") for part in parts)
        or any(ord(c) < 0x20 for c in name)
    ):
        raise VolumeError(f"{volume}: member {name!r} has an unsafe path (absolute or '..')")


def read_volume_header(path: Path) -> tuple[str, int]:
    """(bundle id, volume number) from a volume's first member."""
    reader = VolumeReader(path)
    try:
        member = reader.next_member()
        if member is None or member.name != VOLUME_MEMBER or member.size > 4096:
            raise VolumeError(f"{path.name}: not a bundle volume (no {VOLUME_MEMBER} first)")
        body = b"".join(reader.chunks())
    finally:
        reader.close()
    try:
        raw = json.loads(body)
        return str(raw["bundle"]), int(raw["volume"])
    except (ValueError, KeyError, TypeError) as exc:
        raise VolumeError(f"{path.name}: unreadable {VOLUME_MEMBER}") from exc


@dataclass(frozen=True)
class FoundManifest:
    sha256: str
    size: int
    signature: bytes | None


def find_manifest(path: Path, sink: BinaryIO) -> FoundManifest | None:
    """Copy a volume's manifest to ``sink`` (streamed: a large bundle's manifest is never
    in memory whole) with its digest and signature, or None when the volume holds no
    manifest. Seeks over the data members."""
    reader = VolumeReader(path)
    try:
        while True:
            member = reader.next_member()
            if member is None:
                return None
            if member.name != MANIFEST_MEMBER:
                reader.seek_past()
                continue
            digest = hashlib.sha256()
            for chunk in reader.chunks():
                digest.update(chunk)
                sink.write(chunk)
            signature = None
            following = reader.next_member()
            if following is not None and following.name == SIGNATURE_MEMBER:
                signature = b"".join(reader.chunks()) if following.size <= 4096 else None
            return FoundManifest(digest.hexdigest(), member.size, signature)
    finally:
        reader.close()
