"""Request ids, the canonical access line, no traceback ever to a client, and the 503 of a
request the shutdown's grace left unanswered.

The access line is written by ``AccessLogger``, which aiohttp calls after the response was
sent (so it knows the bytes really sent, also for sendfile responses) — also for a request
its HTTP parser rejected, which never reaches the app (no route, no middleware: aiohttp
answers 400 itself). The middleware binds the request id, turns unexpected exceptions into
a plain 500, and answers 503 "shutting down" for a request cancelled when the grace ended
(``server.lifecycle``).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

import structlog
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError

from mirror.log import get_logger
from mirror.server.keys import CACHE_RESULT, METRICS, REQUEST_ID, REQUEST_IDS
from mirror.server.lifecycle import LIFECYCLE, RESPONSE_STARTED, SHUTTING_DOWN

log = get_logger("mirror.access")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: A client's own ``X-Request-Id`` is kept when it is this (else one is made up): it is
#: sent back in a header and logged.
CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=@-]{1,64}")
#: Route label and ``error`` length of a request the HTTP parser rejected.
REJECTED = "rejected"
REASON_LIMIT = 200
RETRY_AFTER = "5"
#: The user a request was authenticated as (``server.auth``), for the access line.
AUTH_USER = web.RequestKey("auth_user", str)


def _route_name(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def _bytes_sent(request: web.BaseRequest, response: web.StreamResponse) -> int:
    """Body bytes: sendfile responses do not count their body in ``body_length``."""
    if not response.prepared or request.method == "HEAD" or response.status == 304:
        return 0
    if isinstance(response, web.FileResponse) and response.content_length is not None:
        return response.content_length
    if response.content_length is not None:  # body_length counts the headers too
        return min(response.content_length, response.body_length)
    return response.body_length


def _request_id(request: web.Request) -> str:
    given = request.headers.get("X-Request-Id")
    if given is not None and CLIENT_REQUEST_ID.fullmatch(given):
        return given
    return request.app[REQUEST_IDS].next()


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    request_id = _request_id(request)
    request[REQUEST_ID] = request_id
    lifecycle = request.app[LIFECYCLE]
    if lifecycle.expired:
        return _shutting_down(request_id)
    lifecycle.track(request)
    structlog.contextvars.bind_contextvars(request_id=request_id)
    try:
        response = await handler(request)
    except (web.HTTPException, ConnectionResetError):
        raise  # an answer aiohttp sends, or a client that is gone: nothing to add
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if not lifecycle.expired or request.get(RESPONSE_STARTED) or task is None:
            raise  # not the shutdown's, or too late for another answer: cut off
        task.uncancel()
        return _shutting_down(request_id)
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


def _shutting_down(request_id: str) -> web.Response:
    response = web.Response(
        status=503,
        text=f"{SHUTTING_DOWN}; ask again\n",
        headers={"Retry-After": RETRY_AFTER, "X-Request-Id": request_id},
    )
    response.force_close()
    return response


class AccessLogger(AbstractAccessLogger):
    """One ``request`` event per request, and the request metrics — also for a request
    the HTTP parser rejected (``route`` "rejected", its reason in ``error``), for which
    the app is the one bound by ``runner_options(app)``."""

    #: The app whose metrics and request ids count the requests that never reached it.
    bound_app: ClassVar[web.Application | None] = None

    def __init__(self, logger: logging.Logger, log_format: str) -> None:
        super().__init__(logger, log_format)
        # The line costs more than the request it describes: skip it when info is off.
        self._lines = logger.isEnabledFor(logging.INFO)

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        request_id = request.get(REQUEST_ID)
        if request_id is None or not isinstance(request, web.Request):
            self._rejected(request, response, time)
            return
        sent = _bytes_sent(request, response)
        request.app[METRICS].observe_request(_route_name(request), response.status, time, sent)
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
            user=request.get(AUTH_USER),
            request_id=request_id,
        )

    def _rejected(
        self, request: web.BaseRequest, response: web.StreamResponse, time: float
    ) -> None:
        """A request aiohttp answered before the app saw it: the parser rejected it."""
        app = self.bound_app
        sent = _bytes_sent(request, response)
        if app is not None:
            app[METRICS].observe_request(REJECTED, response.status, time, sent)
        if not self._lines:
            return
        text = response.text if isinstance(response, web.Response) else None
        reason = (text or "").split("\n", 1)[0].strip().rstrip(":")[:REASON_LIMIT]
        log.info(
            "request",
            method=None,
            path=None,
            status=response.status,
            bytes=sent,
            duration_ms=round(time * 1000, 2),
            cache=None,
            remote=request.remote,
            user=None,
            request_id=app[REQUEST_IDS].next() if app is not None else None,
            error=reason or None,
        )


def runner_options(app: web.Application | None = None) -> dict[str, Any]:
    """Keyword arguments for ``web.AppRunner`` that enable the access line (and, with
    ``app``, count the requests the HTTP parser rejected in its metrics)."""
    logger_class = AccessLogger
    if app is not None:

        class BoundAccessLogger(AccessLogger):
            bound_app = app

        logger_class = BoundAccessLogger
    return {"access_log_class": logger_class, "access_log": logging.getLogger("mirror.access")}


class ParserRejections(logging.Filter):
    """aiohttp logs each request its HTTP parser rejected as an error with a traceback. It
    is the client's doing, and its ``request`` line (status 400, ``error``) tells it: the
    record is turned into a debug line with the reason and no traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            record.exc_info, record.exc_text = None, None
            record.error = (exc.message or str(exc)).split("\n", 1)[0].strip().rstrip(":")
        return True


def quiet_parser_rejections() -> None:
    server = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, ParserRejections) for f in server.filters):
        server.addFilter(ParserRejections())
