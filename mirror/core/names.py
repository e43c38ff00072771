"""Project names and distribution filenames (PEP 503 / PEP 508, via ``packaging``).

Everything here is total: malformed input gives ``False``, ``None`` or an empty list,
never an exception, because the input is often a path segment from an HTTP request.
"""

from __future__ import annotations

import re
from functools import lru_cache

from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

MAX_NAME_LENGTH = 200
MAX_FILENAME_BYTES = 255

_NORMALIZE_RE = re.compile(r"[-_.]+")
PROJECT_NAME_RE = re.compile(r"^([A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9])$", re.IGNORECASE)
# Unicode category Cc (C0 and C1 controls, DEL) plus the path separators.
_UNSAFE_CHAR_RE = re.compile(r"[\x00-\x1f\x7f-\x9f/\\]")

# Longest first, so ".tar.gz" is stripped before ".gz" could be considered.
_ARCHIVE_SUFFIXES = (
    ".tar.bz2",
    ".tar.gz",
    ".tar.xz",
    ".tar.Z",
    ".tar.zst",
    ".tbz2",
    ".tbz",
    ".tgz",
    ".txz",
    ".tar",
    ".zip",
    ".whl",
    ".egg",
    ".exe",
    ".msi",
    ".rpm",
    ".dmg",
    ".deb",
)


def normalize(name: str) -> str:
    """PEP 503 normalised form of a project name."""
    return _NORMALIZE_RE.sub("-", name).lower()


def is_valid_project_name(name: str) -> bool:
    """A PEP 508 name of at most ``MAX_NAME_LENGTH`` characters."""
    return len(name) <= MAX_NAME_LENGTH and PROJECT_NAME_RE.match(name) is not None


def is_valid_filename(filename: str) -> bool:
    """True for a safe single path component: no separators, controls, or dot-files."""
    if not filename or filename.startswith("."):
        return False
    try:
        if len(filename.encode("utf-8")) > MAX_FILENAME_BYTES:
            return False
    except UnicodeEncodeError:  # lone surrogates
        return False
    return _UNSAFE_CHAR_RE.search(filename) is None


def is_wheel(filename: str) -> bool:
    return filename.endswith(".whl")


def _strip_archive_suffix(filename: str) -> str | None:
    for suffix in _ARCHIVE_SUFFIXES:
        if filename.endswith(suffix) and len(filename) > len(suffix):
            return filename[: -len(suffix)]
    return None


def _parsed_name(filename: str) -> str | None:
    try:
        if is_wheel(filename):
            return str(parse_wheel_filename(filename)[0])
        return str(parse_sdist_filename(filename)[0])
    except (InvalidWheelFilename, InvalidSdistFilename, InvalidVersion):
        return None


def _prefix_candidates(stem: str) -> list[str]:
    """Name prefixes of a legacy ``name-version-...`` stem, most plausible first.

    Legacy filenames cannot be split reliably (``foo-bar-1.0`` or ``foo-2-1.0``), so
    every prefix that is a valid name is offered: first those followed by a part that
    starts with a digit (shortest first: names rarely contain version-like parts), then
    the rest, longest first.
    """
    parts = stem.split("-")
    likely: list[str] = []
    unlikely: list[str] = []
    for end in range(1, len(parts)):
        prefix = "-".join(parts[:end])
        if not is_valid_project_name(prefix):
            continue
        if parts[end][:1].isdigit():
            likely.append(normalize(prefix))
        else:
            unlikely.insert(0, normalize(prefix))
    return likely + unlikely


def project_candidates_from_filename(filename: str) -> list[str]:
    """Normalised project names ``filename`` may belong to, most likely first."""
    if not is_valid_filename(filename):
        return []
    candidates: list[str] = []
    parsed = _parsed_name(filename)
    if parsed is not None:
        candidates.append(parsed)
    stem = _strip_archive_suffix(filename)
    if stem is not None:
        candidates.extend(_prefix_candidates(stem))
    return list(dict.fromkeys(candidates))


def version_from_filename(filename: str) -> str | None:
    """The normalised version of a wheel, sdist or egg filename, else None."""
    raw: str | None = None
    if is_wheel(filename):
        parts = filename[: -len(".whl")].split("-")
        raw = parts[1] if len(parts) in (5, 6) else None
    elif filename.endswith(".egg"):
        parts = filename[: -len(".egg")].split("-")
        raw = parts[1].replace("_", "-") if len(parts) >= 2 else None
    else:
        for suffix in (".tar.gz", ".zip"):
            if filename.endswith(suffix):
                name, _, raw = filename[: -len(suffix)].rpartition("-")
                raw = raw if name else None
    return None if raw is None else _normalized_version(raw)


@lru_cache(maxsize=4096)
def _normalized_version(raw: str) -> str | None:
    # Cached: a page lists many files per version, and Version() is a regex parse.
    try:
        return str(Version(raw))
    except InvalidVersion:
        return None
