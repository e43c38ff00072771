"""An upstream page as the mirror serves it, and a served page back to upstream URLs (pure).

``mirror_view`` turns a (filtered) upstream page into the page the mirror serves: files on
hosts that are not the configured upstream are dropped (``RejectedFile``), every kept file
gets its place under ``packages/`` and a link there, and its ``core-metadata`` says what
the mirror will answer for ``<file>.metadata`` (``core.metadata``).

``held_file`` goes the other way for a miss: the served page gives a file's hashes and
size, the project's record its upstream URL.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import unquote

from mirror.core.layout import PackagePath, PathDigest, package_path_for, parse_package_path
from mirror.core.metadata import MetadataSource, advertised_metadata, metadata_source
from mirror.core.model import DistFile, ProjectPage
from mirror.core.record import ProjectRecord

# Project pages live at /simple/<project>/, so this reaches /packages/ from there; relative
# links keep the tree servable under any prefix (as bandersnatch does).
PAGE_TO_PACKAGES = "../../packages/"


@dataclass(frozen=True)
class RejectedFile:
    filename: str
    url: str
    reason: str


@dataclass(frozen=True, slots=True)
class MirroredFile:
    file: DistFile  # as the upstream lists it: its URL is the upstream's
    path: PackagePath
    path_digest: PathDigest
    metadata: MetadataSource

    def expected_digests(self) -> dict[str, str]:
        """What the downloaded bytes must hash to: the page's hashes and the path's digest."""
        digests = {k: v.lower() for k, v in self.file.hashes.items()}
        if self.path_digest is PathDigest.BLAKE2B_256:
            digests["blake2b_256"] = self.path.digest
        else:
            digests["sha256"] = self.path.digest
        return digests

    @property
    def metadata_url(self) -> str:
        return self.file.url.split("#", 1)[0] + ".metadata"


@dataclass(frozen=True)
class MirrorView:
    page: ProjectPage  # as served: links into packages/, metadata as advertised
    files: list[MirroredFile]
    rejected: list[RejectedFile]


def mirrored_files(
    page: ProjectPage, is_allowed: Callable[[str], bool], *, signed_files_only: bool
) -> tuple[list[MirroredFile], list[RejectedFile]]:
    kept: list[MirroredFile] = []
    rejected: list[RejectedFile] = []
    for file in page.files:
        if not is_allowed(file.url):
            rejected.append(RejectedFile(file.filename, file.url, "not a configured upstream host"))
            continue
        placed = package_path_for(file.url, file.filename, file.sha256)
        if placed is None:
            rejected.append(
                RejectedFile(file.filename, file.url, "no sha256 and no /packages/ digest path")
            )
            continue
        source = metadata_source(file, signed_files_only=signed_files_only)
        kept.append(MirroredFile(file, placed[0], placed[1], source))
    return kept, rejected


def mirror_view(
    page: ProjectPage,
    is_allowed: Callable[[str], bool],
    *,
    signed_files_only: bool,
    extracted: Mapping[str, str],
) -> MirrorView:
    """The page as the mirror serves it. ``extracted`` maps a filename to the sha256 of the
    ``.metadata`` the mirror extracted from that wheel."""
    items, rejected = mirrored_files(page, is_allowed, signed_files_only=signed_files_only)
    files = []
    for item in items:
        core = advertised_metadata(item.file, item.metadata, extracted.get(item.file.filename))
        files.append(item.file.relinked(PAGE_TO_PACKAGES + item.path.rel, core))
    return MirrorView(dataclasses.replace(page, files=tuple(files)), items, rejected)


def served_path(file: DistFile) -> PackagePath | None:
    """Where a file of a served page is held (its link into packages/), or None."""
    url = file.url.split("#", 1)[0]
    for prefix in (PAGE_TO_PACKAGES, "/packages/"):
        if url.startswith(prefix):
            return parse_package_path(unquote(url[len(prefix) :]))
    return None


def listed_paths(page: ProjectPage) -> set[PackagePath]:
    """The package paths a served page links to."""
    return {path for file in page.files if (path := served_path(file)) is not None}


def extracted_metadata(page: ProjectPage) -> dict[str, str]:
    """sha256 of each ``.metadata`` a served page advertises, by filename: what a re-render
    of the same files carries over for the wheels whose metadata the mirror extracted."""
    found: dict[str, str] = {}
    for file in page.files:
        core = file.core_metadata
        if isinstance(core, Mapping) and "sha256" in core:
            found[file.filename] = core["sha256"]
    return found


def held_file(
    page: ProjectPage, record: ProjectRecord, path: PackagePath, *, signed_files_only: bool
) -> MirroredFile | None:
    """The file ``path`` of a served page, with its upstream URL from the record; None
    when the page does not list it or the record does not know where it comes from."""
    for file in page.files:
        if served_path(file) != path:
            continue
        url = record.upstream_url(path)
        if url is None:
            return None
        digest = PathDigest.SHA256 if file.sha256 == path.digest else PathDigest.BLAKE2B_256
        upstream = dataclasses.replace(file, url=url)
        source = metadata_source(upstream, signed_files_only=signed_files_only)
        return MirroredFile(upstream, path, digest, source)
    return None


def with_extracted(page: ProjectPage, filename: str, sha256: str) -> ProjectPage:
    """A served page advertising the ``.metadata`` just extracted for ``filename``."""
    files = tuple(
        dataclasses.replace(f, core_metadata={"sha256": sha256}) if f.filename == filename else f
        for f in page.files
    )
    return dataclasses.replace(page, files=files)
