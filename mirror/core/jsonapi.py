"""The JSON API (``/pypi/<project>/json``, ``/pypi/<project>/<version>/json``) as the
mirror serves it (pure): file URLs pointed at the mirror, and cut down to what the
project's served page keeps, so the JSON API never lists a file the page does not (the
same filters, the same trust decision: a file stays only with the page's sha256)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from packaging.version import InvalidVersion, Version

from mirror.core.index import derive_versions
from mirror.core.layout import package_path_for
from mirror.core.model import ProjectPage


class JsonApiError(ValueError):
    pass


def _rewrite_files(files: object, is_allowed: Callable[[str], bool], prefix: str) -> list[Any]:
    if not isinstance(files, list):
        raise JsonApiError("expected a list of files")
    kept = []
    for item in files:
        if not isinstance(item, dict):
            raise JsonApiError("expected a file object")
        url, filename = item.get("url"), item.get("filename")
        digests = item.get("digests")
        sha256 = digests.get("sha256") if isinstance(digests, dict) else None
        if not isinstance(url, str) or not isinstance(filename, str) or not is_allowed(url):
            continue
        placed = package_path_for(url, filename, sha256 if isinstance(sha256, str) else None)
        if placed is None:
            continue
        kept.append({**item, "url": prefix + placed[0].rel})
    return kept


def _load(data: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise JsonApiError(f"not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise JsonApiError("expected a JSON object")
    return doc


def _dump(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


def rewrite_json_api(
    data: bytes, is_allowed: Callable[[str], bool], prefix: str = "/packages/"
) -> bytes:
    """Rewrite ``urls`` and ``releases`` file URLs; files on other hosts are left out."""
    doc = _load(data)
    if "urls" in doc:
        doc["urls"] = _rewrite_files(doc["urls"], is_allowed, prefix)
    releases = doc.get("releases")
    if releases is not None:
        if not isinstance(releases, dict):
            raise JsonApiError("expected 'releases' to be an object")
        doc["releases"] = {
            str(version): _rewrite_files(files, is_allowed, prefix)
            for version, files in releases.items()
        }
    return _dump(doc)


def _same_version(a: str, b: str) -> bool:
    try:
        return Version(a) == Version(b)
    except InvalidVersion:
        return a == b


def version_listed(page: ProjectPage, version: str) -> bool:
    """Does the served page keep ``version`` (PEP 700 ``versions``, or its files')?"""
    listed = page.versions if page.versions is not None else derive_versions(page.files)
    return any(_same_version(version, v) for v in listed)


def filter_json_api(data: bytes, page: ProjectPage) -> bytes:
    """Cut a (rewritten) JSON API document down to the files and versions ``page`` keeps.

    A file stays when the page lists its filename and, where both state one, the same
    sha256; a release stays when the page keeps its version or one of its files.
    """
    doc = _load(data)
    digests = {f.filename: f.sha256 for f in page.files}

    def kept(file: object) -> bool:
        if not isinstance(file, dict) or file.get("filename") not in digests:
            return False
        ours = digests[file["filename"]]
        theirs = file.get("digests")
        sha256 = theirs.get("sha256") if isinstance(theirs, dict) else None
        return ours is None or sha256 is None or str(sha256).lower() == ours

    def keep(files: object) -> object:
        return [f for f in files if kept(f)] if isinstance(files, list) else files

    if "urls" in doc:
        doc["urls"] = keep(doc["urls"])
    releases = doc.get("releases")
    if isinstance(releases, dict):
        doc["releases"] = {
            version: keep(files)
            for version, files in releases.items()
            if version_listed(page, str(version)) or keep(files)
        }
    return _dump(doc)


def mirror_json_api(data: bytes, is_allowed: Callable[[str], bool], page: ProjectPage) -> bytes:
    """The upstream's JSON API answer as the mirror serves it beside ``page``."""
    return filter_json_api(rewrite_json_api(data, is_allowed), page)
