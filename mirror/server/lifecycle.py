"""How a serving process runs and ends: SIGTERM (or SIGINT) → stop accepting → a grace for
what is in flight → a clean answer for what is left → cleanup → exit 0.

1. The listening socket is closed at once (new connections are refused; with several
   workers each closes its own) and idle keep-alive connections are closed; a connection
   busy with a request closes after its response (sent with ``Connection: close``).
2. Requests in progress — from the middleware to the last byte sent — and file downloads
   (``FileStore``: also those no client waits for any more) get ``[serve] shutdown-grace``
   seconds to finish. The process goes on as soon as none is left.
3. When the grace ends, each request still in progress is cancelled: one whose response
   has not begun (waiting on a hung upstream, say) is answered 503 "shutting down" by the
   middleware; one whose response has begun is cut off (``request_cut_off``) — its client
   sees a short body, never a complete unverified file.
4. The app's cleanup (``cleanup_ctx``) cancels the downloads still running, whose temp
   files are removed, closes the upstream session and makes renames durable; bounded by
   ``CLEANUP_TIMEOUT``.

A worker (``--worker K``) also stops this way when its supervisor is gone (``kill -9`` of
the supervisor), so that it never outlives it holding the port.

SIGHUP stops nothing: it runs the app's ``Lifecycle.reloaders`` (the auth file is read
again, ``server.auth``). A worker starts with SIGHUP blocked (``server.workers``), so that
one arriving before its handler is in place waits for it instead of killing the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable, Coroutine
from typing import Any

from aiohttp import web

from mirror.log import get_logger
from mirror.server.keys import REQUEST_ID, SERVICES

log = get_logger("mirror.server")

# How often the end of the downloads (and the supervisor's life) is looked at.
POLL = 0.05
PARENT_POLL = 0.5
# After the grace: how long cancelled requests get to send their 503 (or be cut off), and
# how long the app's cleanup may take, before the process gives up waiting for them.
CUT_OFF_TIMEOUT = 1.0
CLEANUP_TIMEOUT = 3.0
# aiohttp's own wait per connection in the final cleanup (everything is answered by then).
CLOSE_TIMEOUT = 0.5
SHUTTING_DOWN = "shutting down"


class CannotListen(Exception):
    """The address is taken or not ours: ``errno`` says why (``server.run`` words it)."""

    def __init__(self, errno: int | None, message: str) -> None:
        super().__init__(message)
        self.errno = errno


class Lifecycle:
    """The requests in progress in one app, and how far its shutdown is."""

    def __init__(self) -> None:
        #: SIGTERM arrived: responses say ``Connection: close``.
        self.stopping = False
        #: The grace ended: a request cancelled now is answered 503 if it can be.
        self.expired = False
        self._requests: dict[asyncio.Task[Any], web.Request] = {}
        #: What SIGHUP runs: re-reading what can change without a restart.
        self.reloaders: list[Callable[[], Coroutine[Any, Any, None]]] = []

    def track(self, request: web.Request) -> None:
        """The request being handled in the current task, until that task (which also
        sends the response) is done."""
        task = asyncio.current_task()
        if task is None:
            return
        self._requests[task] = request
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[Any]) -> None:
        self._requests.pop(task, None)

    @property
    def in_flight(self) -> int:
        return len(self._requests)

    def expire(self) -> list[asyncio.Task[Any]]:
        """The grace is over: cancel every request still in progress (the middleware
        answers those whose response has not begun); the tasks cancelled."""
        self.expired = True
        cancelled = []
        for task, request in list(self._requests.items()):
            if task.done():
                continue
            if request.get(RESPONSE_STARTED):
                log.warning(
                    "request_cut_off",
                    method=request.method,
                    path=request.path,
                    request_id=request.get(REQUEST_ID),
                )
            task.cancel(SHUTTING_DOWN)
            cancelled.append(task)
        return cancelled


LIFECYCLE = web.AppKey("lifecycle", Lifecycle)
#: Set (by ``on_response_prepare``) once a response to the request has begun.
RESPONSE_STARTED = web.RequestKey("response_started", bool)


def downloads_running(app: web.Application) -> int:
    services = app.get(SERVICES)
    return len(services[0].files.downloading) if services else 0


async def serve_app(
    app: web.Application,
    *,
    host: str,
    port: int,
    grace: float,
    runner_options: dict[str, Any],
    worker: int | None = None,
    supervisor: int | None = None,
) -> int:
    """Serve ``app`` until SIGTERM or SIGINT (or, for a worker, the end of its
    supervisor), then shut down as the module says; the exit code. Raises CannotListen."""
    loop = asyncio.get_running_loop()
    role = "server" if worker is None else "worker"
    stop = asyncio.Event()
    why: list[str] = []

    def request_stop(reason: str) -> None:
        if not stop.is_set():
            why.append(reason)
            stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, request_stop, signal.Signals(signum).name)
    reloading: set[asyncio.Task[None]] = set()

    def reload() -> None:
        reloaders = app[LIFECYCLE].reloaders
        if not reloaders:
            log.info("reload_ignored", reason="nothing to re-read ([serve] auth-file is unset)")
        for reloader in reloaders:
            task = asyncio.create_task(reloader())
            reloading.add(task)
            task.add_done_callback(reloading.discard)

    loop.add_signal_handler(signal.SIGHUP, reload)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})  # blocked by a supervisor
    watch = None
    if supervisor is not None:
        watch = asyncio.create_task(_watch_parent(supervisor, request_stop))
    runner = web.AppRunner(
        app, handle_signals=False, shutdown_timeout=CLOSE_TIMEOUT, **runner_options
    )
    await runner.setup()
    stopping_at = loop.time()
    try:
        if not stop.is_set():
            site = web.TCPSite(runner, host, port, reuse_port=worker is not None)
            try:
                await site.start()
            except OSError as exc:
                raise CannotListen(exc.errno, exc.strerror or str(exc)) from exc
            await stop.wait()
        stopping_at = loop.time()
        await _drain(app, runner, grace, role, why[0] if why else "signal")
    finally:
        if watch is not None:
            watch.cancel()
        finished = await _cleanup(runner)
    log.info(f"{role}_stopped", seconds=round(loop.time() - stopping_at, 3))
    return 0 if finished else 1


async def _cleanup(runner: web.AppRunner) -> bool:
    """The app's cleanup (downloads cancelled, session closed); False if it overran."""
    cleanup = asyncio.create_task(runner.cleanup())
    done, _ = await asyncio.wait({cleanup}, timeout=CLEANUP_TIMEOUT)
    if not done:
        log.error("shutdown_cleanup_timeout", seconds=CLEANUP_TIMEOUT)
        return False
    cleanup.result()
    return True


async def _drain(
    app: web.Application, runner: web.AppRunner, grace: float, role: str, why: str
) -> None:
    loop = asyncio.get_running_loop()
    lifecycle = app[LIFECYCLE]
    started = loop.time()
    deadline = started + grace
    lifecycle.stopping = True
    for site in list(runner.sites):
        await site.stop()  # new connections are refused from now on
    server = runner.server
    log.info(
        f"{role}_stopping",
        reason=why,
        grace=grace,
        requests=lifecycle.in_flight,
        downloads=downloads_running(app),
    )
    closing = None
    if server is not None:
        await asyncio.sleep(0)  # requests just accepted get to their handlers
        server.pre_shutdown()  # idle connections close; busy ones after their response
        # aiohttp's own wait for each connection; the grace is enforced below.
        closing = asyncio.create_task(server.shutdown(grace + CUT_OFF_TIMEOUT))
    while lifecycle.in_flight or downloads_running(app):
        left = deadline - loop.time()
        if left <= 0:
            break
        await asyncio.sleep(min(POLL, left))
    if lifecycle.in_flight or downloads_running(app):
        log.warning(
            "shutdown_grace_expired",
            requests=lifecycle.in_flight,
            downloads=downloads_running(app),
        )
        cancelled = lifecycle.expire()
        if cancelled:
            await asyncio.wait(cancelled, timeout=CUT_OFF_TIMEOUT)
    if closing is not None:
        await asyncio.wait({closing}, timeout=CUT_OFF_TIMEOUT)
        if closing.done():
            with contextlib.suppress(Exception, asyncio.CancelledError):
                closing.result()


async def _watch_parent(parent: int, request_stop: Any) -> None:
    """A worker whose supervisor died (``kill -9``) stops too — also one that was still
    starting then (its parent is no longer the supervisor it was started by)."""
    while os.getppid() == parent:  # noqa: ASYNC110 - no event tells of a parent's death
        await asyncio.sleep(PARENT_POLL)
    log.warning("supervisor_gone", supervisor=parent)
    request_stop("supervisor_gone")
