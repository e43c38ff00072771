"""Operator endpoints: ``/``, ``/health``, ``/metrics``."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from mirror.server.keys import METRICS, WORKER, services

INDEX_HTML = """<!DOCTYPE html>
<html><head><title>pypi-mirror</title></head><body>
<h1>pypi-mirror</h1>
<p>Simple index: <a href="/simple/">/simple/</a></p>
<p>Use it with <code>pip install --index-url {base}/simple/ PACKAGE</code>
or <code>uv pip install --index-url {base}/simple/ PACKAGE</code>.</p>
</body></html>
"""


async def index(request: web.Request) -> web.StreamResponse:
    base = f"{request.scheme}://{request.host}"
    return web.Response(text=INDEX_HTML.format(base=base), content_type="text/html")


async def health(request: web.Request) -> web.StreamResponse:
    svc = services(request)
    body: dict[str, object] = {
        "status": "ok",
        "mode": "offline" if svc.pages.offline else "pull-through",
        "upstream": svc.config.upstream.url,
        "cache_bytes": svc.evictor.total if svc.evictor else None,
        "worker": request.app[WORKER],
    }
    if svc.trust is not None:
        body["tuf"] = svc.trust.status()
        if svc.trust.state().degraded:
            body["status"] = "degraded"  # cached content is served; new content is refused
    else:
        body["tuf"] = {"mode": svc.config.tuf.mode}
    return web.json_response(body)


async def metrics(request: web.Request) -> web.StreamResponse:
    data = request.app[METRICS].exposition()
    return web.Response(body=data, headers={"Content-Type": CONTENT_TYPE_LATEST})
