"""The fake index's state: projects, releases, files, serials and the changelog (journal).

Pure data and mutators, no I/O besides reading the registered files once to hash them.
Every mutation takes a new serial, like PyPI's journal: the serial of a changelog row *is*
its id, and a project's last serial is the serial of its latest row.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import Message
from email.parser import BytesParser
from email.policy import compat32
from pathlib import Path

from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

from .builders import sdist_metadata, wheel_metadata

__all__ = ["STATUSES", "ChangelogRow", "FileRecord", "IndexState", "Project", "Release"]

#: PEP 792 project status markers.
STATUSES = ("active", "archived", "quarantined", "deprecated")

#: A changelog row as PyPI's XML-RPC returns it: [name, version, timestamp, action, serial].
ChangelogRow = tuple[str, str | None, int, str, int]

_CHUNK = 1 << 16


@dataclass
class FileRecord:
    """One distribution file registered with the fake index."""

    project: str  #: normalised project name
    filename: str
    version: str
    source: Path  #: where the bytes live on disk (must stay there while served)
    size: int
    sha256: str
    blake2b_256: str
    md5: str
    packagetype: str  #: "bdist_wheel" or "sdist"
    python_version: str  #: wheel python tag ("py3", "cp311"...) or "source"
    requires_python: str | None
    yanked: bool | str  #: False, True, or the yank reason
    upload_time: datetime  #: timezone-aware UTC
    core_metadata: bytes | None  #: wheel METADATA / sdist PKG-INFO, as read from the file
    serve_metadata: bool  #: serve and advertise ``<file>.metadata`` (wheels only)
    url_path: str  #: "/packages/aa/bb/<60 hex>/<filename>"
    url: str = ""  #: absolute URL, filled in by the server once its address is known

    @property
    def metadata_sha256(self) -> str | None:
        """sha256 of the ``.metadata`` file, or None when it is not served."""
        if not self.serve_metadata or self.core_metadata is None:
            return None
        return hashlib.sha256(self.core_metadata).hexdigest()

    @property
    def metadata_url_path(self) -> str:
        return self.url_path + ".metadata"

    @property
    def upload_time_iso(self) -> str:
        """PEP 700 form: ``yyyy-mm-ddThh:mm:ss.ffffffZ``."""
        return self.upload_time.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Release:
    version: str
    files: dict[str, FileRecord] = field(default_factory=dict)  #: filename → record
    metadata: Message | None = None  #: parsed core metadata of the first file uploaded


@dataclass
class Project:
    name: str  #: display name, as first registered
    normalized: str
    releases: dict[str, Release] = field(default_factory=dict)  #: version → release
    last_serial: int = 0
    status: str = "active"
    status_reason: str | None = None

    def files(self) -> list[FileRecord]:
        """All files, ordered by (version, filename) like PyPI's simple pages."""
        out = [f for r in self.releases.values() for f in r.files.values()]
        return sorted(out, key=lambda f: (version_key(f.version), f.filename))


def version_key(version: str) -> tuple[int, Version | str]:
    try:
        return (1, Version(version))
    except InvalidVersion:
        return (0, version)


def _digests(path: Path) -> tuple[int, str, str, str]:
    sha256 = hashlib.sha256()
    blake = hashlib.blake2b(digest_size=32)
    md5 = hashlib.md5(usedforsecurity=False)
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            size += len(chunk)
            sha256.update(chunk)
            blake.update(chunk)
            md5.update(chunk)
    return size, sha256.hexdigest(), blake.hexdigest(), md5.hexdigest()


def _parse_upload_time(value: str | None) -> datetime:
    if value is None:
        return datetime.now(UTC)
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


class IndexState:
    """Projects plus PyPI-style serials and journal. The server subclasses this."""

    def __init__(self) -> None:
        self.projects: dict[str, Project] = {}  #: normalised name → project
        self.changelog: list[ChangelogRow] = []
        self.serial = 0  #: the last serial handed out (``changelog_last_serial()``)
        self._by_url_path: dict[str, FileRecord] = {}

    # -- lookups -------------------------------------------------------------------------

    def project(self, name: str) -> Project:
        """The project called ``name`` (any spelling); KeyError if unknown."""
        return self.projects[canonicalize_name(name)]

    def file(self, project: str, filename: str) -> FileRecord:
        for release in self.project(project).releases.values():
            if filename in release.files:
                return release.files[filename]
        raise KeyError(filename)

    def file_by_url_path(self, url_path: str) -> FileRecord | None:
        return self._by_url_path.get(url_path)

    # -- journal -------------------------------------------------------------------------

    def _journal(self, project: Project, version: str | None, action: str) -> int:
        self.serial += 1
        self.changelog.append((project.name, version, int(time.time()), action, self.serial))
        project.last_serial = self.serial
        return self.serial

    # -- mutators ------------------------------------------------------------------------

    def add_file(
        self,
        project: str,
        path: Path,
        *,
        yanked: bool | str = False,
        requires_python: str | None = None,
        upload_time: str | None = None,
        serve_metadata: bool = True,
    ) -> FileRecord:
        """Register the wheel or ``.tar.gz``/``.zip`` sdist at ``path`` under ``project``.

        Journals "create" for a new project, "new release" for a new version, then
        "add <python_version> file <filename>". ``requires_python`` defaults to the file's
        own Requires-Python. ``upload_time`` is ISO 8601 (default: now).
        """
        path = Path(path)
        filename = path.name
        normalized = canonicalize_name(project)
        try:
            if filename.endswith(".whl"):
                dist_name, parsed_version, _, _ = parse_wheel_filename(filename)
                packagetype = "bdist_wheel"
                python_version = filename[:-4].split("-")[-3]
                raw_metadata: bytes | None = wheel_metadata(path)
            else:
                dist_name, parsed_version = parse_sdist_filename(filename)
                packagetype = "sdist"
                python_version = "source"
                raw_metadata = sdist_metadata(path) if filename.endswith(".tar.gz") else None
        except (InvalidWheelFilename, InvalidSdistFilename) as exc:
            raise ValueError(f"not a distribution filename: {filename}") from exc
        if dist_name != normalized:
            raise ValueError(f"{filename} does not belong to project {project!r}")

        metadata = BytesParser(policy=compat32).parsebytes(raw_metadata) if raw_metadata else None
        version = (metadata.get("Version") if metadata else None) or str(parsed_version)
        if requires_python is None and metadata is not None:
            requires_python = metadata.get("Requires-Python")

        proj = self.projects.get(normalized)
        if proj is not None and any(filename in r.files for r in proj.releases.values()):
            raise ValueError(f"{filename} is already registered")

        size, sha256, b2, md5 = _digests(path)
        url_path = f"/packages/{b2[:2]}/{b2[2:4]}/{b2[4:]}/{filename}"
        record = FileRecord(
            project=normalized,
            filename=filename,
            version=version,
            source=path,
            size=size,
            sha256=sha256,
            blake2b_256=b2,
            md5=md5,
            packagetype=packagetype,
            python_version=python_version,
            requires_python=requires_python,
            yanked=yanked,
            upload_time=_parse_upload_time(upload_time),
            core_metadata=raw_metadata,
            serve_metadata=serve_metadata and packagetype == "bdist_wheel",
            url_path=url_path,
        )

        if proj is None:
            proj = Project(name=project, normalized=normalized)
            self.projects[normalized] = proj
            self._journal(proj, None, "create")
        release = proj.releases.get(version)
        if release is None:
            release = Release(version=version, metadata=metadata)
            proj.releases[version] = release
            self._journal(proj, version, "new release")
        elif release.metadata is None:
            release.metadata = metadata
        release.files[filename] = record
        self._by_url_path[url_path] = record
        self._journal(proj, version, f"add {python_version} file {filename}")
        return record

    def remove_file(self, project: str, filename: str) -> None:
        """Delete one file ("remove file <filename>"); its release stays, possibly empty."""
        record = self.file(project, filename)
        proj = self.project(project)
        del proj.releases[record.version].files[filename]
        self._by_url_path.pop(record.url_path, None)
        self._journal(proj, record.version, f"remove file {filename}")

    def remove_release(self, project: str, version: str) -> None:
        """Delete a release and its files ("remove release")."""
        proj = self.project(project)
        release = proj.releases.pop(version)
        for record in release.files.values():
            self._by_url_path.pop(record.url_path, None)
        self._journal(proj, version, "remove release")

    def remove_project(self, project: str) -> None:
        """Delete a project and everything in it ("remove project")."""
        proj = self.project(project)
        for release in proj.releases.values():
            for record in release.files.values():
                self._by_url_path.pop(record.url_path, None)
        del self.projects[proj.normalized]
        self._journal(proj, None, "remove project")

    def set_yanked(self, project: str, filename: str, yanked: bool | str) -> None:
        """Yank (True or a reason) or unyank (False) one file; journals "yank release" or
        "unyank release" with the file's version."""
        record = self.file(project, filename)
        record.yanked = yanked
        action = "yank release" if yanked is not False else "unyank release"
        self._journal(self.project(project), record.version, action)

    def set_release_yanked(self, project: str, version: str, yanked: bool | str) -> None:
        """Yank or unyank every file of a release, in one journal row (what PyPI does)."""
        proj = self.project(project)
        for record in proj.releases[version].files.values():
            record.yanked = yanked
        action = "yank release" if yanked is not False else "unyank release"
        self._journal(proj, version, action)

    def set_project_status(self, project: str, status: str, reason: str | None = None) -> None:
        """Set the PEP 792 status ("active", "archived", "quarantined", "deprecated").

        Journals "set project status <status>". NOTE: that action string is this fake's
        own; PyPI's journal wording for status changes was not found. A quarantined
        project lists no files and its files answer 404.
        """
        if status not in STATUSES:
            raise ValueError(f"unknown project status {status!r}")
        proj = self.project(project)
        proj.status = status
        proj.status_reason = reason
        self._journal(proj, None, f"set project status {status}")
