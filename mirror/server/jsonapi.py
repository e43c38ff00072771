"""``/pypi/<project>/json`` and ``/pypi/<project>/<version>/json``."""

from __future__ import annotations

from aiohttp import web

from mirror.core import layout
from mirror.core.layout import is_safe_version
from mirror.core.names import is_valid_project_name, normalize
from mirror.errors import StorageError, UpstreamError, UpstreamNotFound
from mirror.server.errors import upstream_failure
from mirror.server.keys import CACHE_RESULT, services
from mirror.server.simple import held_despite
from mirror.server.stored import stored_response

JSON_HEADERS = {
    "Content-Type": "application/json",
    "Cache-Control": "max-age=600, public",
    "Vary": "Accept-Encoding",
}


async def json_api(request: web.Request) -> web.StreamResponse:
    svc = services(request)
    raw = request.match_info["project"]
    version = request.match_info.get("version")
    if not is_valid_project_name(raw):
        raise web.HTTPNotFound(text=f"{raw[:100]!r} is not a valid project name\n")
    if version is not None and not is_safe_version(version):
        raise web.HTTPNotFound(text=f"{version[:100]!r} is not a valid version\n")
    project = normalize(raw)
    if project != raw:
        suffix = f"{version}/json" if version else "json"
        raise web.HTTPMovedPermanently(f"/pypi/{project}/{suffix}")
    rel = layout.json_api_rel(project, version)
    try:
        result = await svc.jsonapi.ensure(project, version)
    except UpstreamNotFound as exc:
        raise web.HTTPNotFound(text=f"project {project!r} {version or ''} not found\n") from exc
    except UpstreamError as exc:
        raise upstream_failure(exc, f"JSON of {project!r}") from exc
    except (OSError, StorageError) as exc:
        result = await held_despite(svc, rel, exc, f"the JSON API answer of {project}")
    request[CACHE_RESULT] = result
    svc.metrics.cache_results.labels("json", result.value).inc()
    return await stored_response(request, svc.storage, rel, dict(JSON_HEADERS))
