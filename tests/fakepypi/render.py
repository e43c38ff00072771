"""Render the fake index's pages: PEP 503 HTML, PEP 691 JSON (with PEP 592/658/700/714/792
fields as PyPI emits them) and the ``/pypi/<project>/json`` API. Pure functions of state."""

from __future__ import annotations

import hashlib
import html
import json
import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from packaging.version import InvalidVersion, Version

from .model import FileRecord, Project, Release, version_key

__all__ = [
    "API_VERSION",
    "HTML",
    "JSON",
    "TEXT_HTML",
    "json_api",
    "negotiate",
    "simple_project",
    "simple_root",
    "synthetic_entries",
]

API_VERSION = "1.4"
JSON = "application/vnd.pypi.simple.v1+json"
HTML = "application/vnd.pypi.simple.v1+html"
TEXT_HTML = "text/html"
# Offer order breaks ties, as in Warehouse (text/html first).
_OFFERS = (TEXT_HTML, HTML, JSON)


def negotiate(accept: str | None, format_param: str | None = None) -> str | None:
    """Pick the content type for a simple page; None means 406 Not Acceptable.

    ``?format=`` wins when given. No Accept header means text/html. Otherwise the offer
    with the highest q wins; on equal q a more specific match wins (an explicit type over
    ``*/*``), then text/html, v1+html, v1+json in that order.
    """
    if format_param:
        return format_param if format_param in _OFFERS else None
    if not accept or not accept.strip():
        return TEXT_HTML
    ranges: list[tuple[str, float]] = []
    for item in accept.split(","):
        parts = [p.strip() for p in item.split(";")]
        media = parts[0].lower()
        if not media:
            continue
        q = 1.0
        for param in parts[1:]:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = 0.0
        ranges.append((media, q))
    best: tuple[float, int, int] | None = None
    chosen: str | None = None
    for index, offer in enumerate(_OFFERS):
        main = offer.split("/")[0]
        match: tuple[int, float] | None = None  # (specificity, q) of the most specific range
        for media, q in ranges:
            if media == offer:
                spec = 2
            elif media == f"{main}/*":
                spec = 1
            elif media == "*/*":
                spec = 0
            else:
                continue
            if match is None or spec > match[0]:
                match = (spec, q)
        if match is None or match[1] <= 0:
            continue
        score = (match[1], match[0], -index)
        if best is None or score > best:
            best, chosen = score, offer
    return chosen


# -- simple API ----------------------------------------------------------------------------


def _dumps(data: Any) -> bytes:
    return json.dumps(data, sort_keys=False, separators=(",", ":")).encode("utf-8")


def simple_root(projects: Sequence[tuple[Project, int]], serial: int, content_type: str) -> bytes:
    """The ``/simple/`` list; ``projects`` are (project, serial to show) pairs."""
    ordered = sorted(projects, key=lambda item: item[0].normalized)
    if content_type == JSON:
        return _dumps(
            {
                "meta": {"api-version": API_VERSION, "_last-serial": serial},
                "projects": [{"name": p.name, "_last-serial": s} for p, s in ordered],
            }
        )
    lines = [
        "<!DOCTYPE html>",
        "<html>",
        "  <head>",
        f'    <meta name="pypi:repository-version" content="{API_VERSION}">',
        "    <title>Simple index</title>",
        "  </head>",
        "  <body>",
        *(f'    <a href="/simple/{p.normalized}/">{html.escape(p.name)}</a>' for p, _ in ordered),
        "  </body>",
        "</html>",
        f"<!--SERIAL {serial}-->",
    ]
    return ("\n".join(lines) + "\n").encode("utf-8")


def _extra_link_entry(link: str) -> dict[str, Any]:
    parts = urlsplit(link)
    filename = parts.path.rstrip("/").rsplit("/", 1)[-1] or "file"
    digest = hashlib.sha256(link.encode()).hexdigest()
    if parts.fragment.startswith("sha256="):
        digest = parts.fragment.removeprefix("sha256=")
    url = link.split("#", 1)[0]
    return {"filename": filename, "url": url, "hashes": {"sha256": digest}}


def _file_entry(record: FileRecord) -> dict[str, Any]:
    metadata_sha = record.metadata_sha256
    return {
        "filename": record.filename,
        "url": record.url,
        "hashes": {"sha256": record.sha256},
        "requires-python": record.requires_python,
        "size": record.size,
        "upload-time": record.upload_time_iso,
        "yanked": record.yanked,
        "core-metadata": {"sha256": metadata_sha} if metadata_sha else False,
        "provenance": None,
    }


def synthetic_entries(project: Project, count: int, base_url: str, content_type: str) -> bytes:
    """``count`` made-up wheels of ``project`` as page entries (JSON objects joined by
    commas, or HTML anchors), each shaped like PyPI's (about 450 bytes of JSON): listed,
    never downloadable. Cheap to make, so that a test can ask for a page of 100 MB."""
    stem = re.sub(r"[-_.]+", "_", project.normalized)
    base = base_url.rstrip("/")
    if content_type == JSON:
        template = (
            '{{"filename":"{f}","url":"{b}/packages/{h:.2}/{h2}/{h60}/{f}",'
            '"hashes":{{"sha256":"{s}"}},"requires-python":">=3.8","size":{n},'
            '"upload-time":"2024-01-01T00:00:00.000000Z","yanked":false,'
            '"core-metadata":{{"sha256":"{s}"}},"provenance":null}}'
        )
        sep = ","
    else:
        template = (
            '    <a href="{b}/packages/{h:.2}/{h2}/{h60}/{f}#sha256={s}" '
            'data-requires-python="&gt;=3.8" data-dist-info-metadata="sha256={s}" '
            'data-core-metadata="sha256={s}">{f}</a><br />\n'
        )
        sep = ""
    parts = []
    for i in range(count):
        h = f"{i:064x}"
        parts.append(
            template.format(
                f=f"{stem}-0.{i}-py3-none-any.whl",
                b=base,
                h=h,
                h2=h[2:4],
                h60=h[4:],
                s=f"{i:064x}"[::-1],
                n=1000 + i,
            )
        )
    return sep.join(parts).encode()


def _visible_files(project: Project) -> list[FileRecord]:
    return [] if project.status == "quarantined" else project.files()


def simple_project(
    project: Project, serial: int, content_type: str, extra_links: Sequence[str] = ()
) -> bytes:
    """A project page in JSON (PEP 691) or HTML (PEP 503) with ``serial`` as last serial."""
    files = _visible_files(project)
    extras = [_extra_link_entry(link) for link in extra_links]
    if content_type == JSON:
        status: dict[str, str] = {"status": project.status}
        if project.status_reason:
            status["reason"] = project.status_reason
        versions = sorted({f.version for f in files}, key=version_key)
        return _dumps(
            {
                "meta": {"api-version": API_VERSION, "_last-serial": serial},
                "name": project.normalized,
                "versions": versions,
                "files": [_file_entry(f) for f in files] + extras,
                "alternate-locations": [],
                "project-status": status,
            }
        )
    name = html.escape(project.normalized)
    head = [f'    <meta name="pypi:repository-version" content="{API_VERSION}">']
    if project.status != "active":
        head.append(f'    <meta name="pypi:project-status" content="{project.status}">')
        if project.status_reason:
            reason = html.escape(project.status_reason)
            head.append(f'    <meta name="pypi:project-status-reason" content="{reason}">')
    anchors = []
    for f in files:
        attrs = [f'href="{html.escape(f.url)}#sha256={f.sha256}"']
        if f.requires_python:
            attrs.append(f'data-requires-python="{html.escape(f.requires_python)}"')
        if f.yanked is not False:
            reason = f.yanked if isinstance(f.yanked, str) else ""
            attrs.append(f'data-yanked="{html.escape(reason)}"')
        if sha := f.metadata_sha256:
            attrs.append(f'data-dist-info-metadata="sha256={sha}"')
            attrs.append(f'data-core-metadata="sha256={sha}"')
        anchors.append(f"    <a {' '.join(attrs)}>{html.escape(f.filename)}</a><br />")
    for extra in extras:
        href = html.escape(f"{extra['url']}#sha256={extra['hashes']['sha256']}")
        anchors.append(f'    <a href="{href}">{html.escape(extra["filename"])}</a><br />')
    lines = [
        "<!DOCTYPE html>",
        "<html>",
        "  <head>",
        *head,
        f"    <title>Links for {name}</title>",
        "  </head>",
        "  <body>",
        f"    <h1>Links for {name}</h1>",
        *anchors,
        "  </body>",
        "</html>",
        f"<!--SERIAL {serial}-->",
    ]
    return ("\n".join(lines) + "\n").encode("utf-8")


# -- JSON API ------------------------------------------------------------------------------


def _is_prerelease(version: str) -> bool:
    try:
        return Version(version).is_prerelease
    except InvalidVersion:
        return False


def latest_release(project: Project) -> Release | None:
    """Like PyPI: the highest non-yanked final release, else the highest non-yanked
    pre-release, else the highest release."""
    releases = sorted(project.releases.values(), key=lambda r: version_key(r.version))

    def yanked(r: Release) -> bool:
        return bool(r.files) and all(f.yanked is not False for f in r.files.values())

    for candidates in (
        [r for r in releases if not yanked(r) and not _is_prerelease(r.version)],
        [r for r in releases if not yanked(r)],
        releases,
    ):
        if candidates:
            return candidates[-1]
    return None


def _api_file(record: FileRecord) -> dict[str, Any]:
    return {
        "comment_text": "",
        "digests": {
            "blake2b_256": record.blake2b_256,
            "md5": record.md5,
            "sha256": record.sha256,
        },
        "downloads": -1,
        "filename": record.filename,
        "has_sig": False,
        "md5_digest": record.md5,
        "packagetype": record.packagetype,
        "python_version": record.python_version,
        "requires_python": record.requires_python,
        "size": record.size,
        "upload_time": record.upload_time.strftime("%Y-%m-%dT%H:%M:%S"),
        "upload_time_iso_8601": record.upload_time_iso,
        "url": record.url,
        "yanked": record.yanked is not False,
        "yanked_reason": record.yanked if isinstance(record.yanked, str) else None,
    }


def json_api(
    project: Project, release: Release, serial: int, base_url: str, *, with_releases: bool
) -> bytes:
    """``/pypi/<project>/json`` (``with_releases``) or ``/pypi/<project>/<version>/json``."""
    meta = release.metadata
    files = sorted(release.files.values(), key=lambda f: f.filename)
    requires_dist = meta.get_all("Requires-Dist") if meta is not None else None
    release_yanked = bool(files) and all(f.yanked is not False for f in files)
    reasons = [f.yanked for f in files if isinstance(f.yanked, str)]
    info: dict[str, Any] = {
        "author": meta.get("Author", "") if meta is not None else "",
        "author_email": meta.get("Author-email", "") if meta is not None else "",
        "bugtrack_url": None,
        "classifiers": meta.get_all("Classifier") or [] if meta is not None else [],
        "description": "",
        "description_content_type": None,
        "docs_url": None,
        "download_url": None,
        "downloads": {"last_day": -1, "last_month": -1, "last_week": -1},
        "dynamic": None,
        "home_page": None,
        "keywords": None,
        "license": None,
        "license_expression": None,
        "license_files": None,
        "maintainer": None,
        "maintainer_email": None,
        "name": project.name,
        "package_url": f"{base_url}project/{project.name}/",
        "platform": None,
        "project_url": f"{base_url}project/{project.name}/",
        "project_urls": None,
        "provides_extra": None,
        "release_url": f"{base_url}project/{project.name}/{release.version}/",
        "requires_dist": list(requires_dist) if requires_dist else None,
        "requires_python": (meta.get("Requires-Python") if meta is not None else None)
        or next((f.requires_python for f in files if f.requires_python), None),
        "summary": meta.get("Summary") if meta is not None else None,
        "version": release.version,
        "yanked": release_yanked,
        "yanked_reason": reasons[0] if release_yanked and reasons else None,
    }
    body: dict[str, Any] = {"info": info, "last_serial": serial}
    if with_releases:
        ordered = sorted(project.releases.values(), key=lambda r: version_key(r.version))
        body["releases"] = {
            r.version: [_api_file(f) for f in sorted(r.files.values(), key=lambda f: f.filename)]
            for r in ordered
        }
    body["urls"] = [_api_file(f) for f in files]
    body["vulnerabilities"] = []
    return _dumps(body)
