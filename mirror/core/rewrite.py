"""Point an upstream page's file URLs at the mirror, and find a file by its mirror path."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from mirror.core.layout import PackagePath, PathDigest, package_path_for
from mirror.core.model import DistFile, ProjectPage

# Project pages live at /simple/<project>/, so this reaches /packages/ from there; relative
# links keep the tree servable under any prefix (as bandersnatch does).
PAGE_TO_PACKAGES = "../../packages/"


@dataclass(frozen=True)
class RejectedFile:
    filename: str
    url: str
    reason: str


@dataclass(frozen=True)
class MirroredFile:
    file: DistFile
    path: PackagePath
    path_digest: PathDigest

    def expected_digests(self) -> dict[str, str]:
        """What the downloaded bytes must hash to: the page's hashes and the path's digest."""
        digests = {k: v.lower() for k, v in self.file.hashes.items()}
        if self.path_digest is PathDigest.BLAKE2B_256:
            digests["blake2b_256"] = self.path.digest
        else:
            digests["sha256"] = self.path.digest
        return digests


def mirrored_files(
    page: ProjectPage, is_allowed: Callable[[str], bool]
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
        kept.append(MirroredFile(file, placed[0], placed[1]))
    return kept, rejected


def rewrite_page(
    page: ProjectPage,
    is_allowed: Callable[[str], bool],
    local_metadata: Mapping[str, str],
    *,
    prefix: str = PAGE_TO_PACKAGES,
) -> tuple[ProjectPage, list[RejectedFile]]:
    """The page as the mirror serves it.

    ``local_metadata`` maps a filename to the sha256 of a ``.metadata`` file the mirror made
    itself (from the cached wheel) where upstream offered none.
    """
    kept, rejected = mirrored_files(page, is_allowed)
    files = []
    for item in kept:
        changes: dict[str, object] = {"url": prefix + item.path.rel}
        if not item.file.core_metadata and item.file.filename in local_metadata:
            changes["core_metadata"] = {"sha256": local_metadata[item.file.filename]}
        files.append(dataclasses.replace(item.file, **changes))  # type: ignore[arg-type]
    return dataclasses.replace(page, files=tuple(files)), rejected


def find_file(
    page: ProjectPage, path: PackagePath, is_allowed: Callable[[str], bool]
) -> MirroredFile | None:
    kept, _ = mirrored_files(page, is_allowed)
    for item in kept:
        if item.path == path:
            return item
    return None
