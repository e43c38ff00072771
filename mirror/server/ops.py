"""Operator endpoints: ``/``, ``/health``, ``/metrics``."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from mirror.server.keys import METRICS, WORKER, services
from mirror.services import Services

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
    if svc.upstream is not None:
        body["upstream_breaker"] = svc.breaker.status()
        if not svc.breaker.closed:
            body["status"] = "degraded"  # stored copies are served without asking upstream
    body["changelog"] = _changelog(svc, request.app[WORKER])
    return web.json_response(body)


def _changelog(svc: Services, worker: int | None) -> dict[str, object]:
    """Whether this process follows the upstream's changelog (``[sync] interval``)."""
    follower = svc.follower
    if follower is None:
        on = svc.upstream is not None and svc.config.sync.interval > 0
        return {"state": "in worker 0" if on and worker else "off"}
    state = "unavailable" if follower.unavailable else "following"
    body: dict[str, object] = {
        "state": state,
        "mode": svc.config.sync.mode,
        "interval": svc.config.sync.interval,
        "rounds": follower.rounds,
    }
    if follower.unavailable:
        body["error"] = follower.unavailable
    return body


async def metrics(request: web.Request) -> web.StreamResponse:
    data = request.app[METRICS].exposition()
    return web.Response(body=data, headers={"Content-Type": CONTENT_TYPE_LATEST})
