"""``/simple/`` and ``/simple/<project>/`` (PEP 503 HTML and PEP 691 JSON)."""

from __future__ import annotations

import hashlib

from aiohttp import web

from mirror.cache.hot import HeldBytes
from mirror.cache.pages import CacheResult
from mirror.core import layout
from mirror.core.index import render_project_html, render_project_json
from mirror.core.names import is_valid_project_name, normalize
from mirror.core.negotiate import IndexFormat, MalformedAccept, accepts_gzip, choose_format
from mirror.errors import IntegrityError, StorageError, UpstreamError, UpstreamNotFound
from mirror.log import get_logger
from mirror.server.errors import as_storage_error, storage_unavailable, upstream_failure
from mirror.server.keys import CACHE_RESULT, services
from mirror.server.stored import stored_response
from mirror.services import Services

log = get_logger("mirror.simple")

PAGE_CACHE_CONTROL = "max-age=600, public"
FILE_FOR_FORMAT = {
    IndexFormat.HTML_LEGACY: layout.PAGE_HTML,
    IndexFormat.HTML_V1: layout.PAGE_V1_HTML,
    IndexFormat.JSON_V1: layout.PAGE_V1_JSON,
}
MAX_QUERY_LENGTH = 2048


def negotiate(request: web.Request) -> IndexFormat:
    if len(request.query_string) > MAX_QUERY_LENGTH:
        raise web.HTTPBadRequest(text="query string too long\n")
    format_param = request.query.get("format")
    if format_param is not None:
        # "?format=application/vnd.pypi.simple.v1+json" unencoded turns "+" into a space.
        format_param = format_param.replace(" ", "+")
    try:
        fmt = choose_format(request.headers.get("Accept"), format_param)
    except MalformedAccept as exc:
        raise web.HTTPBadRequest(text=f"malformed Accept header: {exc}\n") from exc
    if fmt is None:
        supported = ", ".join(f.value for f in IndexFormat)
        raise web.HTTPNotAcceptable(
            text=f"none of the requested types is available; supported: {supported}\n"
        )
    return fmt


def page_headers(fmt: IndexFormat, serial: int | None) -> dict[str, str]:
    headers = {
        "Content-Type": fmt.content_type,
        "Cache-Control": PAGE_CACHE_CONTROL,
        "Vary": "Accept, Accept-Encoding",
    }
    if serial is not None:
        headers["X-PyPI-Last-Serial"] = str(serial)
    return headers


def _redirect(location: str, query: str) -> web.HTTPMovedPermanently:
    return web.HTTPMovedPermanently(location + (f"?{query}" if query else ""))


async def root_page(request: web.Request) -> web.StreamResponse:
    svc = services(request)
    fmt = negotiate(request)
    rel = layout.simple_root(FILE_FOR_FORMAT[fmt])
    try:
        result = await svc.root.ensure()
    except UpstreamError as exc:
        raise upstream_failure(exc, "the project list") from exc
    except (OSError, StorageError) as exc:
        result = await held_despite(svc, rel, exc, "the project list")
    request[CACHE_RESULT] = result
    svc.metrics.cache_results.labels("root", result.value).inc()
    return await stored_response(request, svc.storage, rel, page_headers(fmt, None))


async def root_redirect(request: web.Request) -> web.StreamResponse:
    raise _redirect("/simple/", request.query_string)


async def project_redirect(request: web.Request) -> web.StreamResponse:
    project = request.match_info["project"]
    if not is_valid_project_name(project):
        raise web.HTTPNotFound(text=f"{project[:100]!r} is not a valid project name\n")
    raise _redirect(f"/simple/{normalize(project)}/", request.query_string)


async def project_page(request: web.Request) -> web.StreamResponse:
    svc = services(request)
    raw = request.match_info["project"]
    if not is_valid_project_name(raw):
        raise web.HTTPNotFound(text=f"{raw[:100]!r} is not a valid project name\n")
    project = normalize(raw)
    if project != raw:
        raise _redirect(f"/simple/{project}/", request.query_string)
    fmt = negotiate(request)
    try:
        result = await svc.pages.ensure(project)
    except UpstreamNotFound as exc:
        request[CACHE_RESULT] = CacheResult.NEGATIVE
        raise web.HTTPNotFound(text=f"project {project!r} not found\n") from exc
    except (UpstreamError, IntegrityError) as exc:
        raise upstream_failure(exc, f"project {project!r}") from exc
    except (OSError, StorageError) as exc:
        page_rel = layout.simple_page(project, layout.PAGE_V1_JSON)
        result = await held_despite(svc, page_rel, exc, f"the page of {project}")
    request[CACHE_RESULT] = result
    svc.metrics.cache_results.labels("page", result.value).inc()
    record = await svc.pages.served_record(project)
    serial = record.meta.last_serial if record else None
    if svc.pages.offline:
        return await _offline_page(request, project, fmt, serial)
    rel = layout.simple_page(project, FILE_FOR_FORMAT[fmt])
    page = await svc.hot_pages.get(rel)
    if page is None:
        return await stored_response(request, svc.storage, rel, page_headers(fmt, serial))
    return _page_response(request, page, page_headers(fmt, serial))


async def held_despite(
    svc: Services, rel: str, exc: OSError | StorageError, what: str
) -> CacheResult:
    """What to answer when ``what`` could not be brought up to date because the store
    cannot take it (a full disk): the copy held at ``rel`` (stale), or a 503."""
    error = as_storage_error(exc, what, svc.storage.describe())
    if await svc.storage.exists(rel):
        log.warning("storage_stale_served", what=what, error=str(error))
        return CacheResult.STALE
    log.warning("storage_write_failed", what=what, error=str(error))
    raise storage_unavailable(error, what) from exc


def _page_response(
    request: web.Request, page: HeldBytes, headers: dict[str, str]
) -> web.StreamResponse:
    """A page from memory: gzip when the client takes it, 304 when it has it already."""
    packed = page.packed is not None and accepts_gzip(request.headers.get("Accept-Encoding", ""))
    etag = page.packed_etag if packed and page.packed_etag else page.etag
    headers["ETag"] = etag
    if etag in request.headers.get("If-None-Match", ""):
        del headers["Content-Type"]
        return web.Response(status=304, headers=headers)
    if packed and page.packed is not None:
        headers["Content-Encoding"] = "gzip"
        return web.Response(body=page.packed, headers=headers)
    return web.Response(body=page.plain, headers=headers)


async def _offline_page(
    request: web.Request, project: str, fmt: IndexFormat, serial: int | None
) -> web.StreamResponse:
    """Offline: list only what is held here, rendered per request."""
    page = await services(request).keeper.offline_page(project)
    if page is None:
        raise web.HTTPNotFound(text=f"project {project!r} not found\n")
    body = render_project_json(page) if fmt is IndexFormat.JSON_V1 else render_project_html(page)
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    headers = page_headers(fmt, serial)
    headers["ETag"] = etag
    if etag in request.headers.get("If-None-Match", ""):
        return web.Response(
            status=304, headers={k: v for k, v in headers.items() if k != "Content-Type"}
        )
    response = web.Response(body=body, headers=headers)
    response.enable_compression()
    request[CACHE_RESULT] = CacheResult.HIT
    return response
