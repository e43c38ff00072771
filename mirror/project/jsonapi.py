"""A project's JSON API answers (``/pypi/<p>/json``, ``/pypi/<p>/<version>/json``),
written for the ``ProjectKeeper``: always cut to the served page (``core.jsonapi``), so
they never list a file or version the page does not keep.

The sync stores the project's answer with the page (``store``); pull-through fetches an
answer when it is asked for (``refresh``) and, when a page changes, cuts the held answers
to it at once (``cut``) — nginx serves them from disk as they are.
"""

from __future__ import annotations

from enum import Enum

from mirror.core import layout
from mirror.core.jsonapi import JsonApiError, filter_json_api, mirror_json_api, version_listed
from mirror.core.model import ProjectPage
from mirror.core.record import JsonApiMeta, ProjectRecord
from mirror.core.verdict import Answer
from mirror.errors import UpstreamNotFound
from mirror.log import get_logger
from mirror.project.offload import OFF_LOOP_BYTES
from mirror.project.pages import PageStore
from mirror.project.source import UpstreamSource
from mirror.storage import Storage

log = get_logger("mirror.jsonapi")


class JsonResult(Enum):
    MISS = "miss"
    REVALIDATED = "revalidated"


class JsonApiStore:
    def __init__(
        self, storage: Storage, pages: PageStore, source: UpstreamSource | None, filters: str
    ) -> None:
        self.storage = storage
        self.pages = pages
        self.source = source
        #: A large answer is rewritten off the event loop.
        self.cpu = pages.cpu
        #: Fingerprint of the filters the answers are cut with.
        self.filters = filters

    async def refresh(self, project: str, version: str | None, record: ProjectRecord) -> JsonResult:
        """Fetch the JSON API answer again (conditionally) and cut it to the served page.

        Raises UpstreamNotFound when the upstream has none or the page does not keep
        ``version``.
        """
        assert self.source is not None
        page = await self.pages.served_page(project)
        if page is None:
            raise UpstreamNotFound(f"simple/{project}/")
        if version is not None and not version_listed(page, version):
            await self.pages.remove_json(project, version)
            raise UpstreamNotFound(f"pypi/{project}/{version}/json (not kept by the mirror)")
        meta = await self.pages.json_meta(project, version)
        present = await self.storage.exists(layout.json_api_rel(project, version))
        usable = meta if meta is not None and present else None
        etag = usable.etag if usable and usable.filters == self.filters else None
        json = await self.source.json_api(project, version, etag)
        if json.answer is Answer.NOT_FOUND:
            await self.pages.remove_json(project, version)
            raise UpstreamNotFound(layout.json_api_rel(project, version))
        served_serial = record.meta.last_serial
        lagging = (
            json.serial is not None and served_serial is not None and json.serial < served_serial
        )
        await self.store(
            project, version, json.answer, json.body, json.etag, page, record, current=not lagging
        )
        return JsonResult.REVALIDATED if usable else JsonResult.MISS

    async def cut(self, project: str, page: ProjectPage) -> None:
        """Cut the held JSON API answers to a new page at once, so that they never list a
        file it does not (nginx serves them as they are); a request fetches them anew."""
        held: list[str | None] = [None]
        async for names in self.storage.iter_names(layout.json_api_dir(project)):
            held += [n for n in names if n != "json" and layout.is_safe_version(n)]
        for version in held:
            rel = layout.json_api_rel(project, version)
            data = await self.storage.read_bytes(rel)
            if data is None:
                continue
            if version is not None and not version_listed(page, version):
                await self.pages.remove_json(project, version)
                continue
            try:
                body = await self.cpu.run(len(data) >= OFF_LOOP_BYTES, filter_json_api, data, page)
            except JsonApiError:
                await self.pages.remove_json(project, version)
                continue
            if body != data:
                await self.storage.write_bytes(rel, body)

    async def store(
        self,
        project: str,
        version: str | None,
        answer: Answer,
        body: bytes,
        etag: str | None,
        page: ProjectPage,
        record: ProjectRecord,
        *,
        current: bool = True,
    ) -> None:
        """Write (or drop) a JSON API answer cut to ``page``. ``current``: it is at least
        as new as the page; if not (a lagging CDN), it is fetched again next time."""
        assert self.source is not None
        made_for = record.meta.fetched_at if current else None
        meta = JsonApiMeta(etag, made_for, self.filters)
        if answer is Answer.NOT_FOUND:
            await self.pages.remove_json(project, version)
        elif answer is Answer.NOT_MODIFIED:
            await self.pages.write_json_meta(project, version, meta)
        else:
            large = len(body) >= OFF_LOOP_BYTES
            try:
                served = await self.cpu.run(
                    large, mirror_json_api, body, self.source.is_allowed, page
                )
            except JsonApiError as exc:
                log.warning("upstream_json_malformed", project=project, error=str(exc))
                return
            await self.pages.write_json(project, version, served, meta)
