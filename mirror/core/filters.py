"""What a filtered mirror keeps (pure): ``[sync]`` allow, block, exclude-platforms,
python-versions, prereleases, keep-latest and max-file-size, applied to a ``ProjectPage``.

- ``allow``: project names or requirement specifiers (``"django>=4"``); empty = every
  project. A project listed several times keeps a version any of its entries accepts.
- ``block``: project names never mirrored (wins over ``allow``).
- ``exclude-platforms``: ``windows``, ``macos``, ``freebsd``, ``linux``. A wheel goes when
  every one of its platform tags is excluded; ``any`` wheels and sdists stay. Installers
  and old binary formats (``.exe``, ``.msi``, ``.dmg``, ``.rpm``, ``.deb``, eggs and dumb
  archives named for a platform) go by their platform too.
- ``python-versions`` (``["3.10", "3.11"]``): CPython-specific wheels (``cp3XX`` with an
  ABI other than ``abi3``) for other versions go; pure, ``abi3``, other-implementation
  wheels and sdists stay.
- ``prereleases = false``: pre- and dev releases go.
- ``keep-latest = N``: only the N highest versions that still have files after the other
  filters; 0 keeps all.
- ``max-file-size``: files whose listed size is larger go (0 = no limit).

A quarantined project (PEP 792) lists no files, whatever the filters say.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import InvalidWheelFilename, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from mirror.core.index import derive_versions
from mirror.core.model import DistFile, ProjectPage
from mirror.core.names import is_valid_project_name, is_wheel, normalize, version_from_filename

PLATFORMS = ("windows", "macos", "freebsd", "linux")

_PY_VERSION_RE = re.compile(r"^(\d+)\.(\d+)$")
_CPYTHON_RE = re.compile(r"^cp(\d+)$")
# Platform markers in non-wheel binaries, looked for after the version ("-1.0.win32.zip").
_BINARY_MARKERS: dict[str, re.Pattern[str]] = {
    "windows": re.compile(r"[.-](win32|win[-_](amd64|arm64))\b"),
    "macos": re.compile(r"[.-]macosx[-_]"),
    "linux": re.compile(r"[.-](linux[-_]|manylinux|musllinux)"),
    "freebsd": re.compile(r"[.-]freebsd[-_]"),
}
_INSTALLER_SUFFIXES = {
    ".exe": "windows",
    ".msi": "windows",
    ".dmg": "macos",
    ".pkg": "macos",
    ".rpm": "linux",
    ".deb": "linux",
}
_AFTER_VERSION_RE = re.compile(r"-\d")


class FilterError(ValueError):
    """A ``[sync]`` filter entry that cannot be understood; the message names it."""


def platform_family(platform_tag: str) -> str | None:
    """``win_amd64`` → windows, ``macosx_11_0_arm64`` → macos, ``any`` → None, …"""
    tag = platform_tag.lower()
    if tag == "any":
        return None
    if tag.startswith("win"):
        return "windows"
    if tag.startswith("macosx"):
        return "macos"
    if tag.startswith(("linux", "manylinux", "musllinux")):
        return "linux"
    if tag.startswith("freebsd"):
        return "freebsd"
    return "other"


def _binary_platform(filename: str) -> str | None:
    lowered = filename.lower()
    for suffix, family in _INSTALLER_SUFFIXES.items():
        if lowered.endswith(suffix):
            return family
    match = _AFTER_VERSION_RE.search(lowered)
    if match is None:
        return None
    tail = lowered[match.start() :]
    for family, pattern in _BINARY_MARKERS.items():
        if pattern.search(tail):
            return family
    return None


@dataclass(frozen=True)
class Filters:
    # project → version specifiers (an empty tuple: every version).
    allow: Mapping[str, tuple[SpecifierSet, ...]] = field(default_factory=dict)
    block: frozenset[str] = frozenset()
    exclude_platforms: frozenset[str] = frozenset()
    # CPython versions as wheel tags write them: "310", "311".
    python_versions: frozenset[str] = frozenset()
    prereleases: bool = True
    keep_latest: int = 0
    max_file_size: int = 0

    @classmethod
    def parse(
        cls,
        *,
        allow: Iterable[str] = (),
        block: Iterable[str] = (),
        exclude_platforms: Iterable[str] = (),
        python_versions: Iterable[str] = (),
        prereleases: bool = True,
        keep_latest: int = 0,
        max_file_size: int = 0,
    ) -> Filters:
        allowed: dict[str, list[SpecifierSet]] = {}
        for entry in allow:
            name, specifier = _parse_allow(entry)
            allowed.setdefault(name, []).append(specifier)
        blocked = set()
        for entry in block:
            if not is_valid_project_name(entry.strip()):
                raise FilterError(f"block: {entry!r} is not a project name")
            blocked.add(normalize(entry.strip()))
        platforms = set()
        for entry in exclude_platforms:
            if entry not in PLATFORMS:
                raise FilterError(
                    f"exclude-platforms: {entry!r} is not one of {', '.join(PLATFORMS)}"
                )
            platforms.add(entry)
        versions = set()
        for entry in python_versions:
            match = _PY_VERSION_RE.match(entry.strip())
            if match is None:
                raise FilterError(f'python-versions: {entry!r} is not like "3.11"')
            versions.add(match.group(1) + match.group(2))
        if keep_latest < 0 or max_file_size < 0:
            raise FilterError("keep-latest and max-file-size cannot be negative")
        return cls(
            allow={
                name: () if any(not str(s) for s in specs) else tuple(specs)
                for name, specs in allowed.items()
            },
            block=frozenset(blocked),
            exclude_platforms=frozenset(platforms),
            python_versions=frozenset(versions),
            prereleases=prereleases,
            keep_latest=keep_latest,
            max_file_size=max_file_size,
        )

    def fingerprint(self) -> str:
        """Changes when what the filters keep could change (a full re-check is then due)."""
        doc: dict[str, Any] = {
            "allow": {k: sorted(str(s) for s in v) for k, v in sorted(self.allow.items())},
            "block": sorted(self.block),
            "exclude_platforms": sorted(self.exclude_platforms),
            "python_versions": sorted(self.python_versions),
            "prereleases": self.prereleases,
            "keep_latest": self.keep_latest,
            "max_file_size": self.max_file_size,
        }
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]

    def project_allowed(self, project: str) -> bool:
        name = normalize(project)
        if name in self.block:
            return False
        return not self.allow or name in self.allow

    def version_allowed(self, project: str, version: Version | None) -> bool:
        """Does ``allow`` (and ``prereleases``) accept this version of ``project``?"""
        specs = self.allow.get(normalize(project), ())
        if version is None:
            return not specs
        if not self.prereleases and (version.is_prerelease or version.is_devrelease):
            return False
        return not specs or any(s.contains(version, prereleases=True) for s in specs)

    @property
    def _filters_files(self) -> bool:
        return bool(self.max_file_size or self.exclude_platforms or self.python_versions)

    def file_allowed(self, file: DistFile) -> bool:
        """Platform, Python version and size filters, which do not depend on the version."""
        if self.max_file_size and file.size is not None and file.size > self.max_file_size:
            return False
        if is_wheel(file.filename):
            return self._wheel_allowed(file.filename)
        if self.exclude_platforms:
            family = _binary_platform(file.filename)
            if family is not None and family in self.exclude_platforms:
                return False
        return True

    def _wheel_allowed(self, filename: str) -> bool:
        if not self.exclude_platforms and not self.python_versions:
            return True
        try:
            tags = parse_wheel_filename(filename)[3]
        except (InvalidWheelFilename, InvalidVersion):
            return True
        if self.exclude_platforms and all(
            platform_family(t.platform) in self.exclude_platforms for t in tags
        ):
            return False
        if self.python_versions:
            return any(self._python_tag_kept(t.interpreter, t.abi) for t in tags)
        return True

    def _python_tag_kept(self, interpreter: str, abi: str) -> bool:
        if abi == "abi3" or interpreter.startswith("py"):
            return True
        match = _CPYTHON_RE.match(interpreter)
        if match is None:
            return True  # another implementation: not what python-versions is about
        return match.group(1) in self.python_versions

    def apply(self, page: ProjectPage) -> ProjectPage:
        """The page as the mirror keeps it: the files that survived, and their versions."""
        if page.project_status == "quarantined":
            return dataclasses.replace(page, files=(), versions=())
        by_version = bool(self.allow.get(page.name)) or not self.prereleases or self.keep_latest
        if not by_version and not self._filters_files:
            return page  # nothing to cut (and no version to parse per file)
        kept: list[tuple[DistFile, Version | None]] = []
        for file in page.files:
            version = _version_of(file.filename) if by_version else None
            if (not by_version or self.version_allowed(page.name, version)) and (
                self.file_allowed(file)
            ):
                kept.append((file, version))
        latest: set[Version] | None = None
        if self.keep_latest:
            present = {v for _, v in kept if v is not None}
            latest = set(sorted(present, reverse=True)[: self.keep_latest])
            kept = [(f, v) for f, v in kept if v is not None and v in latest]
        files = tuple(f for f, _ in kept)
        filtering_versions = (
            latest is not None or not self.prereleases or bool(self.allow.get(page.name))
        )
        if not filtering_versions:
            return page if files == page.files else dataclasses.replace(page, files=files)
        listed = page.versions if page.versions is not None else derive_versions(page.files)
        versions = tuple(
            text for text in listed if self._listed_version_kept(page.name, text, latest)
        )
        return dataclasses.replace(page, files=files, versions=versions)

    def _listed_version_kept(self, project: str, text: str, latest: set[Version] | None) -> bool:
        version = _parse_version(text)
        if not self.version_allowed(project, version):
            return False
        return latest is None or (version is not None and version in latest)


def _parse_allow(entry: str) -> tuple[str, SpecifierSet]:
    try:
        requirement = Requirement(entry)
    except InvalidRequirement as exc:
        raise FilterError(
            f"allow: {entry!r} is neither a project name nor a requirement like 'django>=4' ({exc})"
        ) from exc
    if requirement.url or requirement.marker is not None:
        raise FilterError(f"allow: {entry!r}: URLs and markers are not supported")
    return normalize(requirement.name), requirement.specifier


def _parse_version(text: str) -> Version | None:
    try:
        return Version(text)
    except InvalidVersion:
        return None


def _version_of(filename: str) -> Version | None:
    text = version_from_filename(filename)
    return None if text is None else _parse_version(text)
