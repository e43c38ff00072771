"""Operator endpoints: ``/health``, ``/metrics`` (``/`` is ``home``; ``/healthz`` and
``/readyz`` are ``health``)."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from mirror.server.keys import METRICS, WORKER, services
from mirror.services import Services


async def health(request: web.Request) -> web.StreamResponse:
    svc = services(request)
    usage = svc.usage.current() if svc.usage is not None else None
    body: dict[str, object] = {
        "status": "ok",
        "mode": "offline" if svc.pages.offline else "pull-through",
        "upstream": svc.config.upstream.url,
        # All workers' total, known once the start-up walk finished (cache.usage).
        "cache_bytes": usage.bytes if usage is not None else None,
        "cache_files": usage.files if usage is not None else None,
        "cache_max_bytes": svc.config.cache.max_size or None,
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
