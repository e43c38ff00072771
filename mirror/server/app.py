"""The app factory: routes, and the services that live as long as the app."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator

from aiohttp import web

from mirror.config import Config
from mirror.core import layout
from mirror.log import get_logger
from mirror.metrics import Metrics
from mirror.server import auth, health, home, jsonapi, ops, packages, simple, tuf
from mirror.server.keys import CONFIG, METRICS, REQUEST_IDS, SERVICES, STORAGE, WORKER
from mirror.server.lifecycle import LIFECYCLE, RESPONSE_STARTED, Lifecycle
from mirror.server.middleware import request_context
from mirror.server.requestids import RequestIds
from mirror.services import open_services
from mirror.storage import Storage, open_storage
from mirror.sync.follow import ChangelogFollower

log = get_logger("mirror.server")


async def _services_ctx(app: web.Application, *, primary: bool) -> AsyncIterator[None]:
    """The services; the primary process (the only one, or worker 0) also runs the
    evictor and the changelog follower."""
    config = app[CONFIG]
    storage = app[STORAGE]
    storage.defer_renames()
    async with open_services(config, storage, metrics=app[METRICS]) as svc:
        app[SERVICES].append(svc)
        barriers = asyncio.create_task(_barriers(storage))
        evictor_task = None
        legacy = asyncio.create_task(_remove_legacy(storage)) if primary else None
        if primary and svc.evictor is not None:
            evictor_task = asyncio.create_task(svc.evictor.run())
        if primary and svc.upstream is not None and config.sync.interval > 0:
            svc.follower = ChangelogFollower(svc)
            svc.follower.start()
        try:
            yield
        finally:
            for task in (barriers, legacy):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            if svc.follower is not None:
                await svc.follower.stop()
            if evictor_task is not None:
                evictor_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await evictor_task
            app[SERVICES].clear()


BARRIER_INTERVAL = 1.0


async def _remove_legacy(storage: Storage) -> None:
    """What earlier versions wrote and nothing reads any more (``layout.LEGACY_TREES``)."""
    for prefix in layout.LEGACY_TREES:
        try:
            removed = await storage.delete_tree(prefix)
        except OSError as exc:
            log.warning("legacy_cleanup_failed", path=prefix, error=str(exc))
            continue
        if removed:
            log.info("legacy_removed", path=prefix, files=removed)


async def _barriers(storage: Storage) -> None:
    """Make the renames of this process durable once a second (and at the end): what a
    power loss can take back of pull-through is at most a second of re-fetchable work."""
    try:
        while True:
            await asyncio.sleep(BARRIER_INTERVAL)
            try:
                await storage.barrier()
            except OSError as exc:
                log.warning("storage_barrier_failed", error=str(exc))
    finally:
        with contextlib.suppress(OSError):
            await storage.barrier()


def create_app(
    config: Config, storage: Storage | None = None, *, worker: int | None = None
) -> web.Application:
    """The mirror's aiohttp application; ``storage`` is opened from the config if not given.
    ``worker``: this process is worker K of several; the only process, or worker 0, runs
    the background work."""
    primary = worker in (None, 0)
    app = web.Application(middlewares=[request_context], client_max_size=64 * 1024)
    app[CONFIG] = config
    app[STORAGE] = storage if storage is not None else open_storage(config.storage)
    app[METRICS] = Metrics()
    app[REQUEST_IDS] = RequestIds()
    app[WORKER] = worker
    app[SERVICES] = []
    app[LIFECYCLE] = Lifecycle()
    auth.install(app, config)  # with [serve] auth-file only: no middleware without it
    app.cleanup_ctx.append(functools.partial(_services_ctx, primary=primary))
    app[health.STORAGE_PROBE] = health.StorageProbe(app[STORAGE])
    app.router.add_get("/", home.index)
    app.router.add_get("/health", ops.health)
    app.router.add_get("/healthz", health.healthz)
    app.router.add_get("/readyz", health.readyz)
    app.router.add_get("/metrics", ops.metrics)
    app.router.add_get("/simple", simple.root_redirect)
    app.router.add_get("/simple/", simple.root_page)
    app.router.add_get("/simple/{project}", simple.project_redirect)
    app.router.add_get("/simple/{project}/", simple.project_page)
    app.router.add_get("/packages/{tail:.+}", packages.package_file)
    app.router.add_get("/pypi/{project}/json", jsonapi.json_api)
    app.router.add_get("/tuf/{name}", tuf.metadata)
    app.router.add_get("/pypi/{project}/{version}/json", jsonapi.json_api)
    app.on_response_prepare.append(_on_prepare)
    return app


async def _on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    """Index pages depend on Accept too (FileResponse sets only Accept-Encoding); once the
    answer began, a shutdown can only cut it off; while stopping, no keep-alive."""
    request[RESPONSE_STARTED] = True
    if request.app[LIFECYCLE].stopping:
        response.force_close()
        response.headers["Connection"] = "close"  # its headers are made before this hook
    if request.path.startswith("/simple/") and response.status in (200, 304):
        response.headers["Vary"] = "Accept, Accept-Encoding"
