"""The manifest of a bundle: one JSON object a line, written as the export goes.

::

    {"t": "bundle", "format": 1, "id": …, "created": …, "source": {"id", "upstream", "mode"},
     "range": {"kind": "serial" | "sequence", "from": N, "to": M}, "tuf": true | false}
    {"t": "entry", "path": "web/…", "size": n, "sha256": …, "project": p | null,
     "parts": [[volume, member, length], …]}          one per stored file, in volume order
    {"t": "project", "name": p, "serial": s | null}  after the entries of project p
    {"t": "removed", "name": p}                       a project the source no longer holds
    {"t": "volume", "index": i, "name": …, "size": n, "sha256": …}   every volume but the last
    {"t": "last", "index": N, "prefix_size": n, "prefix_sha256": …}  the last, up to the manifest
    {"t": "end", "entries": n, "bytes": b, "projects": k, "removed": r, "volumes": N}

Entries come in the order their bytes are in the volumes, so that ``import`` checks the
volumes against the manifest in one walk over both (flat memory). The signature covers
the whole manifest (``sign``). Every path is checked here: only the kinds of store paths a
bundle may carry (``classify``) are accepted — nothing absolute, nothing with ``..``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Any, BinaryIO

from mirror.core import layout
from mirror.core.names import is_valid_project_name, normalize

FORMAT = 1
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class ManifestError(Exception):
    """A manifest that cannot be taken (the message names the line or the path)."""


class RangeKind(Enum):
    #: A synced mirror: the changelog serials from..to.
    SERIAL = "serial"
    #: A pull-through cache: the export's sequence number (from = the previous one).
    SEQUENCE = "sequence"


class PathKind(Enum):
    FILE = "file"  # web/packages/…, and its .metadata
    PAGE = "page"  # web/simple/<p>/index.v1_json or index.html
    JSON_API = "json_api"  # web/pypi/<p>/json, web/pypi/<p>/<v>/json
    JSON_META = "json_meta"  # state/pypi/<p>/…json.meta
    RECORD = "record"  # state/projects/<p>.json
    TUF = "tuf"  # web/tuf/<name>


@dataclass(frozen=True)
class Place:
    kind: PathKind
    project: str | None = None
    version: str | None = None
    name: str | None = None  # the page form, or the TUF file name


def _project(name: str) -> str | None:
    return name if is_valid_project_name(name) and normalize(name) == name else None


def classify(rel: str) -> Place | None:
    """What a store path in a bundle is, or None when a bundle may not carry it."""
    parts = rel.split("/")
    if any(part in ("", ".", "..") for part in parts) or "\\" in rel:
        return None
    packages = layout.WEB_PACKAGES + "/"
    if rel.startswith(packages):
        tail = rel[len(packages) :]
        base = tail.removesuffix(layout.METADATA_SUFFIX)
        path = layout.parse_package_path(base)
        return Place(PathKind.FILE) if path is not None and path.rel == base else None
    if rel.startswith(layout.WEB_TUF + "/") and len(parts) == 3:
        name = parts[2]
        return Place(PathKind.TUF, name=name) if rel == layout.web_tuf(name) else None
    if rel.startswith(layout.WEB_SIMPLE + "/") and len(parts) == 4:
        project = _project(parts[2])
        page = project and parts[3] in (layout.PAGE_V1_JSON, layout.PAGE_HTML)
        if project and page and rel == layout.simple_page(project, parts[3]):
            return Place(PathKind.PAGE, project, name=parts[3])
        return None
    if rel.startswith(layout.WEB_PYPI + "/") and len(parts) in (4, 5):
        project = _project(parts[2])
        version = parts[3] if len(parts) == 5 else None
        safe = version is None or layout.is_safe_version(version)
        if project and safe and rel == layout.json_api_rel(project, version):
            return Place(PathKind.JSON_API, project, version)
        return None
    if len(parts) == 3 and parts[2].endswith(".json"):
        project = _project(parts[2].removesuffix(".json"))
        if project and rel == layout.project_record(project):
            return Place(PathKind.RECORD, project)
    if len(parts) in (4, 5) and rel.endswith(".meta"):
        project = _project(parts[2])
        version = parts[3] if len(parts) == 5 else None
        safe = version is None or layout.is_safe_version(version)
        if project and safe and rel == layout.json_api_meta(project, version):
            return Place(PathKind.JSON_META, project, version)
    return None


@dataclass(frozen=True)
class Source:
    id: str
    upstream: str
    mode: str


@dataclass(frozen=True)
class Header:
    bundle_id: str
    created: float
    source: Source
    kind: RangeKind
    start: int
    end: int
    tuf: bool

    def line(self) -> dict[str, Any]:
        return {
            "t": "bundle",
            "format": FORMAT,
            "id": self.bundle_id,
            "created": self.created,
            "source": {
                "id": self.source.id,
                "upstream": self.source.upstream,
                "mode": self.source.mode,
            },
            "range": {"kind": self.kind.value, "from": self.start, "to": self.end},
            "tuf": self.tuf,
        }

    def describe(self) -> str:
        span = f"{self.kind.value}s {self.start}..{self.end}"
        return f"{span} of {self.source.upstream} (mirror {self.source.id})"


@dataclass(frozen=True)
class Entry:
    path: str
    size: int
    sha256: str
    project: str | None
    parts: tuple[tuple[int, str, int], ...]
    place: Place


@dataclass(frozen=True)
class ProjectEnd:
    name: str
    serial: int | None


@dataclass(frozen=True)
class Removed:
    name: str


@dataclass(frozen=True)
class VolumeLine:
    index: int
    name: str
    size: int
    sha256: str


@dataclass(frozen=True)
class LastVolume:
    index: int
    prefix_size: int
    prefix_sha256: str


@dataclass(frozen=True)
class End:
    entries: int
    bytes: int
    projects: int
    removed: int
    volumes: int


Line = Entry | ProjectEnd | Removed | VolumeLine | LastVolume | End


def dump(line: dict[str, Any]) -> bytes:
    return json.dumps(line, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def _int(raw: dict[str, Any], key: str, minimum: int = 0) -> int:
    value = raw.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ManifestError(f"{key!r} must be an integer ≥ {minimum}")
    return value


def _str(raw: dict[str, Any], key: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value:
        raise ManifestError(f"{key!r} must be a string")
    return value


def _hex(raw: dict[str, Any], key: str) -> str:
    value = _str(raw, key)
    if not _HEX64.match(value):
        raise ManifestError(f"{key!r} must be 64 hex digits")
    return value


def parse_header(data: bytes) -> Header:
    try:
        raw = json.loads(data)
        if not isinstance(raw, dict) or raw.get("t") != "bundle":
            raise ManifestError("the first line is not a bundle header")
        if raw.get("format") != FORMAT:
            raise ManifestError(
                f"format {raw.get('format')!r} is not {FORMAT} (a newer pypi-mirror?)"
            )
        source = raw["source"]
        span = raw["range"]
        if not isinstance(source, dict) or not isinstance(span, dict):
            raise ManifestError("source and range must be objects")
        start, end = _int(span, "from"), _int(span, "to")
        if end < start:
            raise ManifestError(f"range {start}..{end} runs backwards")
        return Header(
            bundle_id=_str(raw, "id"),
            created=float(raw["created"]),
            source=Source(_str(source, "id"), _str(source, "upstream"), _str(source, "mode")),
            kind=RangeKind(span.get("kind")),
            start=start,
            end=end,
            tuf=bool(raw.get("tuf")),
        )
    except ManifestError:
        raise
    except (ValueError, KeyError, TypeError) as exc:
        raise ManifestError(f"unreadable header ({exc})") from exc


def parse_line(data: bytes) -> Line:
    try:
        raw = json.loads(data)
    except ValueError as exc:
        raise ManifestError(f"not JSON ({exc})") from exc
    if not isinstance(raw, dict):
        raise ManifestError("not a JSON object")
    kind = raw.get("t")
    if kind == "entry":
        path = _str(raw, "path")
        place = classify(path)
        if place is None:
            raise ManifestError(f"path {path!r} is outside what a bundle may carry")
        project = raw.get("project")
        file_of = place.kind is PathKind.FILE and isinstance(project, str) and _project(project)
        if project is not None and project != place.project and not file_of:
            raise ManifestError(f"path {path!r} does not belong to project {project!r}")
        parts_raw = raw.get("parts")
        if not isinstance(parts_raw, list) or not parts_raw:
            raise ManifestError(f"path {path!r}: no parts")
        parts: list[tuple[int, str, int]] = []
        for part in parts_raw:
            if (
                not isinstance(part, list)
                or len(part) != 3
                or not isinstance(part[0], int)
                or not isinstance(part[1], str)
                or not isinstance(part[2], int)
                or part[0] < 1
                or part[2] < 0
            ):
                raise ManifestError(f"path {path!r}: malformed parts")
            parts.append((part[0], part[1], part[2]))
        size = _int(raw, "size")
        if sum(p[2] for p in parts) != size:
            raise ManifestError(f"path {path!r}: its parts do not add up to {size} bytes")
        return Entry(path, size, _hex(raw, "sha256"), project, tuple(parts), place)
    if kind == "project":
        name = _str(raw, "name")
        if _project(name) is None:
            raise ManifestError(f"project name {name!r} is not a normalised name")
        serial = raw.get("serial")
        return ProjectEnd(
            name, serial if isinstance(serial, int) and not isinstance(serial, bool) else None
        )
    if kind == "removed":
        name = _str(raw, "name")
        if _project(name) is None:
            raise ManifestError(f"project name {name!r} is not a normalised name")
        return Removed(name)
    if kind == "volume":
        return VolumeLine(
            _int(raw, "index", 1), _str(raw, "name"), _int(raw, "size"), _hex(raw, "sha256")
        )
    if kind == "last":
        return LastVolume(
            _int(raw, "index", 1), _int(raw, "prefix_size"), _hex(raw, "prefix_sha256")
        )
    if kind == "end":
        return End(
            _int(raw, "entries"),
            _int(raw, "bytes"),
            _int(raw, "projects"),
            _int(raw, "removed"),
            _int(raw, "volumes", 1),
        )
    raise ManifestError(f"unknown line type {kind!r}")


@dataclass(frozen=True)
class Summary:
    """What a first pass over the manifest finds (bounded: counts and the volume list)."""

    header: Header
    volumes: tuple[VolumeLine, ...]
    last: LastVolume
    end: End


def lines(stream: BinaryIO) -> Iterator[tuple[int, Line]]:
    """(line number, line) of every line after the header (``stream`` from its start)."""
    stream.readline()
    for number, data in enumerate(stream, start=2):
        try:
            yield number, parse_line(data)
        except ManifestError as exc:
            raise ManifestError(f"manifest line {number}: {exc}") from exc


def summarise(stream: BinaryIO) -> Summary:
    """Check the whole manifest's shape (every line parses, every path is allowed, the
    volume list is complete, it ends with its ``end`` line) and return what it says."""
    header = parse_header(stream.readline())
    stream.seek(0)
    volumes: list[VolumeLine] = []
    last: LastVolume | None = None
    end: End | None = None
    entries = 0
    for number, line in lines(stream):
        if end is not None:
            raise ManifestError(f"manifest line {number}: after the end line")
        if isinstance(line, Entry):
            entries += 1
        elif isinstance(line, VolumeLine):
            volumes.append(line)
        elif isinstance(line, LastVolume):
            last = line
        elif isinstance(line, End):
            end = line
    if end is None or last is None:
        raise ManifestError("the manifest is cut short (no end line)")
    if end.entries != entries:
        raise ManifestError(
            f"the manifest lists {entries} entries, its end line says {end.entries}"
        )
    indices = [v.index for v in volumes] + [last.index]
    if indices != list(range(1, end.volumes + 1)):
        raise ManifestError(f"the manifest's volume list is not 1..{end.volumes}")
    return Summary(header, tuple(volumes), last, end)
