"""The JSON API (``/pypi/<project>/json``) with file URLs pointed at the mirror."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from mirror.core.layout import package_path_for


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


def rewrite_json_api(
    data: bytes, is_allowed: Callable[[str], bool], prefix: str = "/packages/"
) -> bytes:
    """Rewrite ``urls`` and ``releases`` file URLs; files on other hosts are left out."""
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise JsonApiError(f"not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise JsonApiError("expected a JSON object")
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
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"), sort_keys=False).encode()
