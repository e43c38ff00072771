"""Request ids, the canonical access line, and no traceback ever to a client.

The access line is written by ``AccessLogger``, which aiohttp calls after the response was
sent (so it knows the bytes really sent, also for sendfile responses); the middleware only
binds the request id and turns unexpected exceptions into a plain 500.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from mirror.log import get_logger
from mirror.server.keys import CACHE_RESULT, METRICS, REQUEST_ID, REQUEST_IDS

log = get_logger("mirror.access")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _route_name(request: web.BaseRequest) -> str:
    if not isinstance(request, web.Request):
        return "unmatched"
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def _bytes_sent(request: web.BaseRequest, response: web.StreamResponse) -> int:
    """Body bytes: sendfile responses do not count their body in ``body_length``."""
    if not response.prepared or request.method == "HEAD" or response.status == 304:
        return 0
    if isinstance(response, web.FileResponse) and response.content_length is not None:
        return response.content_length
    if response.content_length is not None and response.status in (200, 206):
        return min(response.content_length, response.body_length)
    return response.body_length


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    request_id = request.headers.get("X-Request-Id", "")[:64] or request.app[REQUEST_IDS].next()
    request[REQUEST_ID] = request_id
    structlog.contextvars.bind_contextvars(request_id=request_id)
    try:
        response = await handler(request)
    except (web.HTTPException, ConnectionResetError):
        raise  # an answer aiohttp sends, or a client that is gone: nothing to add
    except Exception:
        log.exception("request_failed", method=request.method, path=request.path)
        return web.Response(
            status=500,
            text=f"internal error; see the mirror's log for request {request_id}\n",
        )
    finally:
        structlog.contextvars.unbind_contextvars("request_id")
    if not response.prepared:
        response.headers.setdefault("X-Request-Id", request_id)
    return response


class AccessLogger(AbstractAccessLogger):
    """One ``request`` event per request, and the request metrics."""

    def __init__(self, logger: logging.Logger, log_format: str) -> None:
        super().__init__(logger, log_format)
        # The line costs more than the request it describes: skip it when info is off.
        self._lines = logger.isEnabledFor(logging.INFO)

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        sent = _bytes_sent(request, response)
        route = _route_name(request)
        assert isinstance(request, web.Request)
        request.app[METRICS].observe_request(route, response.status, time, sent)
        if not self._lines:
            return
        cache = request.get(CACHE_RESULT)
        log.info(
            "request",
            method=request.method,
            path=request.path,
            status=response.status,
            bytes=sent,
            duration_ms=round(time * 1000, 2),
            cache=cache.value if cache is not None else None,
            remote=request.remote,
            request_id=request.get(REQUEST_ID),
        )


def runner_options() -> dict[str, Any]:
    """Keyword arguments for ``web.AppRunner`` / ``web.run_app`` that enable the access line."""
    return {"access_log_class": AccessLogger, "access_log": logging.getLogger("mirror.access")}
