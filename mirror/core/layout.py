"""Where things live under the storage root (pure: paths as strings, no file system).

Every path the mirror uses is spelled here and nowhere else.

::

    web/simple/index.html, index.v1_html, index.v1_json     root project list (+ .gz)
    web/simple/<project>/index.html, index.v1_json          the project's page (+ .gz)
    web/simple/<project>/index.v1_html                      hard link to index.html (+ .gz)
    web/pypi/<project>/json, web/pypi/<project>/<version>/json      JSON API
    web/packages/aa/bb/<60 hex>/<filename>   (+ <filename>.metadata)
    web/tuf/timestamp.json, N.<role>.json    TUF metadata as verified, re-served verbatim
    state/projects/<project>.json   when the page was fetched, its ETag and serial, and the
                                    upstream URLs of its files (``core.record``)
    state/pypi/<project>/json.meta  (and <version>/json.meta): the JSON API's freshness
    state/prune/<project>/<owner>   files to delete unless the page lists them (``project.intents``)
    state/root.meta                 the root list's freshness
    state/sync/                     the sync's state, run journal, deferred list, lock
    state/tuf/                      python-tuf's trusted metadata, its lock, the last status
    state/bundle/                   air-gap bundles (``mirror.bundle``): this mirror's
                                    identity, the last export, the last import, the import
                                    journal
    tmp/                            temp files for atomic renames (the filesystem backend's)

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
_PLAIN_PATH_END = re.compile(r"[!-~][^?#%\x00-\x20\x7f]*\Z")
_VERSION_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+!-]{0,127}$")


class PathDigest(Enum):
    """Which digest the 64 hex characters of a ``/packages/`` path are."""

    BLAKE2B_256 = "blake2b_256"
    SHA256 = "sha256"


@dataclass(frozen=True, slots=True)
class PackagePath:
    """A file's place under ``packages/``: ``aa/bb/<60 hex>/<filename>``."""

    digest: str
    filename: str

    @property
    def rel(self) -> str:
        return f"{self.digest[:2]}/{self.digest[2:4]}/{self.digest[4:]}/{self.filename}"

    @property
    def web(self) -> str:
        return f"{WEB_PACKAGES}/{self.rel}"

    @property
    def web_metadata(self) -> str:
        return f"{self.web}{METADATA_SUFFIX}"

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
    # A URL without a query, fragment, escapes or what urlsplit strips ends in its path.
    path = url if _PLAIN_PATH_END.match(url) else unquote(urlsplit(url).path)
    match = _URL_PACKAGES.search(path)
    if match and match.group(4) == filename:
        digest = match.group(1) + match.group(2) + match.group(3)
        return PackagePath(digest, filename), PathDigest.BLAKE2B_256
    if sha256 and re.fullmatch(r"[0-9a-f]{64}", sha256):
        return PackagePath(sha256, filename), PathDigest.SHA256
    return None


WEB_SIMPLE = f"{WEB}/simple"
WEB_PACKAGES = f"{WEB}/packages"
WEB_PYPI = f"{WEB}/pypi"
WEB_TUF = f"{WEB}/tuf"

#: The forms of a project page (and of the root list), by the name of their file.
PAGE_HTML = "index.html"
PAGE_V1_HTML = "index.v1_html"
PAGE_V1_JSON = "index.v1_json"
PAGE_FILES = (PAGE_HTML, PAGE_V1_HTML, PAGE_V1_JSON)
GZIP_SUFFIX = ".gz"
METADATA_SUFFIX = ".metadata"

ROOT_META = f"{STATE}/root.meta"
PRUNE_DIR = f"{STATE}/prune"
SYNC_DIR = f"{STATE}/sync"
SYNC_STATE = f"{SYNC_DIR}/state.json"
SYNC_LOCK = f"{SYNC_DIR}/lock"
SYNC_RUN_DIR = f"{SYNC_DIR}/run"
SYNC_RUN_META = f"{SYNC_RUN_DIR}/run.json"
SYNC_PLAN = f"{SYNC_RUN_DIR}/todo"
SYNC_PROGRESS = f"{SYNC_RUN_DIR}/progress"
SYNC_DEFERRED_PREFIX = "deferred-"
CACHE_CURSOR = f"{SYNC_DIR}/cache-cursor"
TUF_DIR = f"{STATE}/tuf"
TUF_METADATA_DIR = f"{TUF_DIR}/metadata"
TUF_LOCK = f"{TUF_DIR}/lock"
TUF_STATUS = f"{TUF_DIR}/status.json"


BUNDLE_DIR = f"{STATE}/bundle"
#: A random id naming this mirror as the source of the bundles it exports.
BUNDLE_IDENTITY = f"{BUNDLE_DIR}/identity"
#: The last export: its serial (or sequence number) and when it started.
BUNDLE_EXPORT = f"{BUNDLE_DIR}/export.json"
#: The projects held at the last export, one name a line (removals of the next one).
BUNDLE_EXPORTED = f"{BUNDLE_DIR}/exported-projects"
#: The last bundle applied here: its source, serial (or sequence number) and id.
BUNDLE_IMPORTED = f"{BUNDLE_DIR}/imported.json"
#: The import being applied (present from the first change to the last).
BUNDLE_JOURNAL = f"{BUNDLE_DIR}/import-journal.json"
#: One export or import at a time.
BUNDLE_LOCK = f"{BUNDLE_DIR}/lock"
#: Tar members of a bundle that are not store paths.
BUNDLE_MEMBER_PREFIX = "bundle/"


def is_web_path(rel: str) -> bool:
    return rel.startswith(WEB + "/")


def metadata_rel(rel: str) -> str:
    """The ``.metadata`` beside a stored distribution file."""
    return rel + METADATA_SUFFIX


def simple_page(project: str, name: str) -> str:
    """``name`` is one of ``index.html``, ``index.v1_html``, ``index.v1_json``."""
    return f"{WEB}/simple/{project}/{name}"


def simple_root(name: str) -> str:
    return f"{WEB_SIMPLE}/{name}"


def json_api(project: str) -> str:
    return f"{WEB_PYPI}/{project}/json"


def json_api_dir(project: str) -> str:
    return f"{WEB_PYPI}/{project}"


def is_safe_version(version: str) -> bool:
    return bool(_VERSION_SAFE.match(version)) and ".." not in version


def json_api_version(project: str, version: str) -> str:
    if not is_safe_version(version):
        raise ValueError(f"unsafe version string {version!r}")
    return f"{WEB_PYPI}/{project}/{version}/json"


def json_api_rel(project: str, version: str | None) -> str:
    return json_api(project) if version is None else json_api_version(project, version)


def json_api_meta(project: str, version: str | None) -> str:
    """The freshness record of a JSON API answer, beside it in ``state/``."""
    return f"{STATE}/{json_api_rel(project, version).removeprefix(WEB + '/')}.meta"


def json_api_meta_dir(project: str) -> str:
    return f"{STATE}/pypi/{project}"


def project_record(project: str) -> str:
    return f"{STATE}/projects/{project}.json"


def ready_probe(owner: str) -> str:
    """Written and deleted by ``/readyz`` to see that the store takes writes."""
    return f"{STATE}/ready.{owner}"


#: Trees earlier versions wrote that nothing reads any more; the serving primary removes
#: them in the background at start-up (``state/negative``: a file per unknown name, now an
#: in-memory bounded cache, ``cache.pages``).
LEGACY_TREES = (f"{STATE}/negative",)


def prune_dir(project: str) -> str:
    return f"{PRUNE_DIR}/{project}"


def prune_intent(project: str, owner: str) -> str:
    """The files a writer (``<host>.<pid>``) may leave unlisted for ``project``."""
    return f"{PRUNE_DIR}/{project}/{owner}"


def sync_deferred(run_id: str) -> str:
    return f"{SYNC_DIR}/{SYNC_DEFERRED_PREFIX}{run_id}"


def web_tuf(name: str) -> str:
    """A published TUF metadata file (``timestamp.json``, ``N.<role>.json``)."""
    return f"{WEB_TUF}/{name}"


def tuf_metadata(name: str) -> str:
    """A file in python-tuf's trusted metadata directory."""
    return f"{TUF_METADATA_DIR}/{name}"
