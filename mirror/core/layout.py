"""Where things live under the storage root (pure: paths as strings, no file system).

::

    web/simple/index.html, index.v1_json, index.v1_html    root project list
    web/simple/<project>/index.html, index.v1_html, index.v1_json   (+ .gz siblings)
    web/pypi/<project>/json, web/pypi/<project>/<version>/json
    web/packages/aa/bb/<60 hex>/<filename>   (+ <filename>.metadata)
    state/pages/<project>.json     upstream page as parsed, with upstream URLs (derived data)
    state/negative/<project>       "upstream has no such project", as of its mtime
    tmp/                           temp files for atomic renames

The ``web/`` tree is bandersnatch-compatible so that a static server can serve it as is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from urllib.parse import unquote, urlsplit

from mirror.core.names import is_valid_filename

WEB = "web"
STATE = "state"
TMP = "tmp"

_HEX64_SPLIT = re.compile(r"^([0-9a-f]{2})/([0-9a-f]{2})/([0-9a-f]{60})/([^/]+)$")
_URL_PACKAGES = re.compile(r"/packages/([0-9a-f]{2})/([0-9a-f]{2})/([0-9a-f]{60})/([^/]+)$")
_VERSION_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+!-]{0,127}$")


class PathDigest(Enum):
    """Which digest the 64 hex characters of a ``/packages/`` path are."""

    BLAKE2B_256 = "blake2b_256"
    SHA256 = "sha256"


@dataclass(frozen=True)
class PackagePath:
    """A file's place under ``packages/``: ``aa/bb/<60 hex>/<filename>``."""

    digest: str
    filename: str

    @property
    def rel(self) -> str:
        return f"{self.digest[:2]}/{self.digest[2:4]}/{self.digest[4:]}/{self.filename}"

    @property
    def web(self) -> str:
        return f"{WEB}/packages/{self.rel}"

    @property
    def web_metadata(self) -> str:
        return f"{self.web}.metadata"

    @property
    def url_path(self) -> str:
        return f"/packages/{self.rel}"


def parse_package_path(rel: str) -> PackagePath | None:
    """``aa/bb/<60 hex>/<filename>`` as requested by a client, or None if not of that form."""
    match = _HEX64_SPLIT.match(rel)
    if not match:
        return None
    filename = match.group(4)
    if not is_valid_filename(filename):
        return None
    return PackagePath(match.group(1) + match.group(2) + match.group(3), filename)


def package_path_for(
    url: str, filename: str, sha256: str | None
) -> tuple[PackagePath, PathDigest] | None:
    """The mirror's path for an upstream file.

    A PyPI-shaped URL keeps its path (its 64 hex are the blake2b-256 of the file); any
    other URL gets a path made from the file's sha256. Without either the file cannot be
    verified and has no place in the mirror.
    """
    if not is_valid_filename(filename):
        return None
    path = unquote(urlsplit(url).path)
    match = _URL_PACKAGES.search(path)
    if match and match.group(4) == filename:
        digest = match.group(1) + match.group(2) + match.group(3)
        return PackagePath(digest, filename), PathDigest.BLAKE2B_256
    if sha256 and re.fullmatch(r"[0-9a-f]{64}", sha256):
        return PackagePath(sha256, filename), PathDigest.SHA256
    return None


def simple_page(project: str, name: str) -> str:
    """``name`` is one of ``index.html``, ``index.v1_html``, ``index.v1_json``."""
    return f"{WEB}/simple/{project}/{name}"


def simple_root(name: str) -> str:
    return f"{WEB}/simple/{name}"


def json_api(project: str) -> str:
    return f"{WEB}/pypi/{project}/json"


def is_safe_version(version: str) -> bool:
    return bool(_VERSION_SAFE.match(version)) and ".." not in version


def json_api_version(project: str, version: str) -> str:
    if not is_safe_version(version):
        raise ValueError(f"unsafe version string {version!r}")
    return f"{WEB}/pypi/{project}/{version}/json"


def state_page(project: str) -> str:
    return f"{STATE}/pages/{project}.json"


def state_negative(project: str) -> str:
    return f"{STATE}/negative/{project}"
