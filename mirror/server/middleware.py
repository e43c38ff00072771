"""One canonical access line per request, request ids, and no traceback ever to a client."""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from mirror.log import get_logger
from mirror.server.keys import CACHE_RESULT, METRICS

log = get_logger("mirror.access")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _route_name(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def _bytes_sent(request: web.Request, response: web.StreamResponse | None) -> int:
    """Body bytes: sendfile responses do not count their body in ``body_length``."""
    if response is None or not response.prepared or request.method == "HEAD":
        return 0
    if response.content_length is not None and response.status in (200, 206):
        return response.content_length
    return response.body_length


@web.middleware
async def access_log(request: web.Request, handler: Handler) -> web.StreamResponse:
    request_id = request.headers.get("X-Request-Id", "")[:64] or secrets.token_hex(8)
    structlog.contextvars.bind_contextvars(request_id=request_id)
    started = time.perf_counter()
    status = 500
    response: web.StreamResponse | None = None
    try:
        try:
            response = await handler(request)
            status = response.status
        except web.HTTPException as exc:
            status = exc.status
            raise
        except Exception:
            log.exception("request_failed", method=request.method, path=request.path)
            response = web.Response(
                status=500,
                text="internal error; see the mirror's log for request " + request_id + "\n",
            )
            status = 500
        if not response.prepared:
            response.headers.setdefault("X-Request-Id", request_id)
            try:
                # Send it here so that the access line knows the bytes really sent.
                await response.prepare(request)
                await response.write_eof()
            except (ConnectionResetError, ConnectionError):
                status = 499
        return response
    finally:
        duration = time.perf_counter() - started
        sent = _bytes_sent(request, response)
        route = _route_name(request)
        metrics = request.app[METRICS]
        metrics.requests.labels(route, str(status)).inc()
        metrics.request_seconds.labels(route).observe(duration)
        metrics.bytes_served.inc(sent)
        log.info(
            "request",
            method=request.method,
            path=request.path,
            status=status,
            bytes=sent,
            duration_ms=round(duration * 1000, 2),
            cache=request.get(CACHE_RESULT),
            remote=request.remote,
        )
        structlog.contextvars.unbind_contextvars("request_id")
