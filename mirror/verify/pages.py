"""A project's stored page forms checked against each other, and what they reference (pure).

The JSON form (``index.v1_json``) is the page the mirror reads back; ``index.html`` must
parse and list the same files with the same hashes and ``.metadata``; ``index.v1_html``
must hold ``index.html``'s bytes; a gzip sibling must hold its file's bytes. A page whose
JSON form is unreadable but whose HTML form parses is still walked (from the HTML form),
so its files are not reported as unreferenced.
"""

from __future__ import annotations

import dataclasses
import gzip
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from mirror.core import layout
from mirror.core.index import PageParseError, parse_project_html, parse_project_json, preferred_hash
from mirror.core.jsonapi import JsonApiError, filter_json_api
from mirror.core.layout import PackagePath, parse_package_path
from mirror.core.model import DistFile, ProjectPage
from mirror.core.rewrite import PAGE_TO_PACKAGES, served_path

#: The base URL HTML forms are parsed against (nothing is fetched from it).
_BASE = "https://mirror.invalid"

#: What a page promises about a file's ``.metadata``.
META_NONE = "?"  # nothing advertised
META_ANY = "*"  # advertised without a digest


@dataclass(frozen=True, slots=True)
class Reference:
    """A file a page lists: where it is held, and what it must be."""

    path: PackagePath
    sha256: str | None
    size: int | None
    metadata: str  # sha256 hex, META_ANY or META_NONE


@dataclass
class PageCheck:
    project: str
    #: The page as served, read from the JSON form (or from the HTML form when only that
    #: one parses); None when neither does.
    page: ProjectPage | None = None
    from_html: bool = False
    problems: list[tuple[str, str]] = field(default_factory=list)  # (path, what is wrong)


@dataclass(frozen=True)
class PageBytes:
    """The stored bytes of a project's page forms (None: absent)."""

    project: str
    forms: Mapping[str, bytes | None]  # by storage path, gzip siblings included


def form_paths(project: str) -> list[str]:
    """Every file of a project's page: the three forms and their gzip siblings."""
    rels = [layout.simple_page(project, name) for name in layout.PAGE_FILES]
    return rels + [rel + layout.GZIP_SUFFIX for rel in rels]


def _html_view(page: ProjectPage) -> ProjectPage:
    """A page parsed from the HTML form with its links relative again, as served."""
    prefix = f"{_BASE}/packages/"
    files = tuple(
        file.relinked(PAGE_TO_PACKAGES + file.url[len(prefix) :], file.core_metadata)
        if file.url.startswith(prefix)
        else file
        for file in page.files
    )
    return dataclasses.replace(page, files=files)


def _core(value: bool | Mapping[str, str]) -> str | None:
    if value is False:
        return None
    if value is True:
        return "true"
    best = preferred_hash(value)
    return "true" if best is None else f"{best[0]}={best[1]}"


def _summary(file: DistFile) -> tuple[str, str, tuple[str, str] | None, str | None]:
    return (
        file.filename,
        file.url.split("#", 1)[0],
        preferred_hash(file.hashes),
        _core(file.core_metadata),
    )


def check_page(data: PageBytes) -> PageCheck:
    """Every form of one project's page, checked; the usable page (CPU: run it off the loop)."""
    project = data.project
    forms = data.forms
    html_rel = layout.simple_page(project, layout.PAGE_HTML)
    v1_html_rel = layout.simple_page(project, layout.PAGE_V1_HTML)
    json_rel = layout.simple_page(project, layout.PAGE_V1_JSON)
    check = PageCheck(project)
    json_page = html_page = None
    raw_json, raw_html = forms.get(json_rel), forms.get(html_rel)
    if raw_json is None:
        check.problems.append((json_rel, "absent"))
    else:
        try:
            json_page = parse_project_json(raw_json)
            if json_page.name != project:
                check.problems.append((json_rel, f"names project {json_page.name!r}"))
                json_page = None  # never written back under another project's name
        except PageParseError as exc:
            check.problems.append((json_rel, f"does not parse: {exc}"))
    if raw_html is None:
        check.problems.append((html_rel, "absent"))
    else:
        try:
            html_page = _html_view(
                parse_project_html(raw_html, project, f"{_BASE}/simple/{project}/")
            )
        except PageParseError as exc:
            check.problems.append((html_rel, f"does not parse: {exc}"))
    if json_page is not None and html_page is not None:
        ours = [_summary(f) for f in json_page.files]
        theirs = [_summary(f) for f in html_page.files]
        if ours != theirs:
            check.problems.append(
                (html_rel, f"lists other files, hashes or .metadata than {layout.PAGE_V1_JSON}")
            )
    if forms.get(v1_html_rel) != raw_html and raw_html is not None:
        check.problems.append((v1_html_rel, "does not hold index.html's bytes"))
    for rel in (json_rel, html_rel, v1_html_rel):
        packed = forms.get(rel + layout.GZIP_SUFFIX)
        if packed is None:
            continue
        try:
            same = gzip.decompress(packed) == forms.get(rel)
        except (OSError, EOFError, zlib.error):
            same = False
        if not same:
            check.problems.append((rel + layout.GZIP_SUFFIX, f"does not hold {rel}'s bytes"))
    if json_page is not None:
        check.page = json_page
    elif html_page is not None:
        check.page, check.from_html = html_page, True
    return check


def references(page: ProjectPage) -> Iterator[Reference]:
    """The files a served page links into ``packages/``."""
    for file in page.files:
        path = served_path(file)
        if path is None:
            continue
        core = file.core_metadata
        if isinstance(core, Mapping):
            metadata = str(core.get("sha256", META_ANY)).lower()
        else:
            metadata = META_ANY if core else META_NONE
        yield Reference(path, file.sha256, file.size, metadata)


def check_json_api(data: bytes, page: ProjectPage) -> str | None:
    """What is wrong with a held JSON API answer beside ``page`` (None: nothing)."""
    try:
        cut = filter_json_api(data, page)
    except JsonApiError as exc:
        return f"does not parse: {exc}"
    if cut != data:
        return "lists files or releases its page does not"
    return None


def package_rel(rel: str) -> PackagePath | None:
    """The package path of a file under ``web/packages/`` (None: not of that form)."""
    prefix = layout.WEB_PACKAGES + "/"
    if not rel.startswith(prefix):
        return None
    return parse_package_path(rel[len(prefix) :])
