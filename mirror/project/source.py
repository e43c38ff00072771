"""Where a project's pages come from: the upstream (or, in the TUF ``index`` scheme, the page
TUF verified), parsed into the one model; and its JSON API answers.

A 404 is an answer here (``Answer.NOT_FOUND``), not an error: whether it means "gone" or
"not yet" is the core's decision (``core.verdict``). Transport trouble raises
``UpstreamError``, a page TUF refuses ``TrustError``, a page that cannot be parsed
``UpstreamProtocolError``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from mirror.config import TufTargets
from mirror.core.index import (
    PageParseError,
    absolute_url,
    decode_page,
    parse_project_html,
    parse_project_json,
)
from mirror.core.model import DistFile, ProjectPage
from mirror.core.verdict import Answer
from mirror.errors import UpstreamNotFound, UpstreamProtocolError
from mirror.project.offload import OFF_LOOP_BYTES, CpuWork
from mirror.trust.base import Trust
from mirror.upstream.client import PageResponse, UpstreamClient

UPSTREAM_ACCEPT = (
    "application/vnd.pypi.simple.v1+json, "
    "application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01"
)


@dataclass(frozen=True)
class PageAnswer:
    answer: Answer
    page: ProjectPage | None = None
    serial: int | None = None
    etag: str | None = None


@dataclass(frozen=True)
class JsonAnswer:
    answer: Answer
    body: bytes = b""
    serial: int | None = None
    etag: str | None = None


def parse_upstream_page(
    body: bytes | str, content_type: str, project: str, page_url: str
) -> ProjectPage:
    """Either format (its bytes, or its text) into the model, with every file URL made
    absolute.

    CPU-bound for a large page (seconds for hundreds of thousands of files):
    ``UpstreamSource`` runs it off the event loop when the page is large."""
    try:
        if _is_json(content_type):
            page = parse_project_json(body, base_url=page_url)
        else:
            page = parse_project_html(body, project, page_url)
            page = dataclasses.replace(page, files=_absolute(page.files, page_url))
    except PageParseError as exc:
        raise UpstreamProtocolError(f"upstream page for {project} is malformed: {exc}") from exc
    if page.name != project:
        raise UpstreamProtocolError(
            f"upstream answered simple/{project}/ with the page of {page.name!r}"
        )
    return page


class _Body:
    """A page's body passed on with its only reference: a large one is let go as soon
    as it is decoded, before its files are parsed."""

    def __init__(self, data: bytes) -> None:
        self._data: bytes | None = data

    def take(self) -> bytes:
        data, self._data = self._data, None
        assert data is not None, "already taken"
        return data


def _is_json(content_type: str) -> bool:
    return "json" in content_type.lower()


def _parse_taken(body: _Body, content_type: str, project: str, page_url: str) -> ProjectPage:
    """``parse_upstream_page`` of a body handed over: it is decoded and let go first."""
    kind = "JSON" if _is_json(content_type) else "HTML"
    try:
        text = decode_page(body.take(), kind)
    except PageParseError as exc:
        raise UpstreamProtocolError(f"upstream page for {project} is malformed: {exc}") from exc
    return parse_upstream_page(text, content_type, project, page_url)


def _absolute(files: tuple[DistFile, ...], page_url: str) -> tuple[DistFile, ...]:
    out = []
    for i, file in enumerate(files):
        url = absolute_url(page_url, file.url, f"anchor {i}")
        out.append(file if url == file.url else dataclasses.replace(file, url=url))
    return tuple(out)


class UpstreamSource:
    def __init__(self, upstream: UpstreamClient, trust: Trust | None) -> None:
        self.upstream = upstream
        self.trust = trust
        #: Where a large page is parsed (the keeper shares its own).
        self.cpu = CpuWork()

    @property
    def signed_files_only(self) -> bool:
        """TUF signs each distribution file, not the pages (the ``files`` scheme)."""
        return self.trust is not None and self.trust.scheme is TufTargets.FILES

    def is_allowed(self, url: str) -> bool:
        return self.upstream.is_allowed(url)

    async def page(self, project: str, etag: str | None = None) -> PageAnswer:
        try:
            response = await self._fetch(project, etag)
        except UpstreamNotFound:
            return PageAnswer(Answer.NOT_FOUND)
        if response.status == 304:
            return PageAnswer(Answer.NOT_MODIFIED, etag=etag)
        large = len(response.body) >= OFF_LOOP_BYTES
        body = _Body(response.body)
        response = dataclasses.replace(response, body=b"")
        page = await self.cpu.run(
            large, _parse_taken, body, response.content_type, project, response.url
        )
        serial = response.last_serial if response.last_serial is not None else page.last_serial
        return PageAnswer(Answer.PAGE, page, serial, response.etag)

    async def _fetch(self, project: str, etag: str | None) -> PageResponse:
        if self.trust is not None and self.trust.scheme is TufTargets.INDEX:
            trusted = await self.trust.index_page(project)
            return PageResponse(200, trusted.body, trusted.content_type, None, None, trusted.url)
        return await self.upstream.get_page(f"simple/{project}/", accept=UPSTREAM_ACCEPT, etag=etag)

    async def json_api(
        self, project: str, version: str | None = None, etag: str | None = None
    ) -> JsonAnswer:
        path = f"pypi/{project}/json" if version is None else f"pypi/{project}/{version}/json"
        try:
            response = await self.upstream.get_page(path, accept="application/json", etag=etag)
        except UpstreamNotFound:
            return JsonAnswer(Answer.NOT_FOUND)
        if response.status == 304:
            return JsonAnswer(Answer.NOT_MODIFIED, etag=etag)
        return JsonAnswer(Answer.PAGE, response.body, response.last_serial, response.etag)
