"""The app factory: routes, and the services that live as long as the app."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator

from aiohttp import web

from mirror.cache.eviction import Evictor
from mirror.cache.files import FileCache
from mirror.cache.jsonapi import JsonApiCache
from mirror.cache.pages import PageCache
from mirror.cache.root import RootCache
from mirror.config import Config
from mirror.log import get_logger
from mirror.metrics import Metrics
from mirror.server import jsonapi, ops, packages, simple, tuf
from mirror.server.keys import CONFIG, METRICS, SERVICES, STORAGE, Services
from mirror.server.middleware import request_context
from mirror.storage import FileSystemStorage
from mirror.sync.engine import filters_from_config, mirror_page_filter
from mirror.sync.follow import ChangelogFollower
from mirror.trust.service import TufTrust
from mirror.upstream.client import UpstreamClient

log = get_logger("mirror.server")


def build_services(
    config: Config,
    storage: FileSystemStorage,
    metrics: Metrics,
    upstream: UpstreamClient | None,
    trust: TufTrust | None = None,
) -> Services:
    ttl: float = config.serve.index_ttl
    page_filter = None
    if config.sync.mode == "mirror":
        # The sync owns the web root: it keeps the pages fresh (not the TTL), and a miss
        # fetched through is cut down by the same [sync] filters.
        ttl = math.inf
        page_filter = mirror_page_filter(filters_from_config(config))
    pages = PageCache(
        storage,
        upstream,
        ttl=ttl,
        negative_ttl=config.serve.negative_ttl,
        trust=trust,
        page_filter=page_filter,
    )
    evictor = None
    if config.cache.max_size:
        evictor = Evictor(
            storage,
            config.cache.max_size,
            metrics,
            lambda _rel: False,
            interval=config.cache.evict_interval,
        )
    files = FileCache(
        storage,
        upstream,
        pages,
        metrics,
        on_commit=evictor.note_commit if evictor else None,
        trust=trust,
    )
    if evictor is not None:
        evictor.in_use = lambda rel: rel in files.readers or rel in files.downloading
        evictor.on_evict = files.forget_present
    return Services(
        config=config,
        storage=storage,
        metrics=metrics,
        pages=pages,
        root=RootCache(storage, upstream, ttl=ttl),
        files=files,
        jsonapi=JsonApiCache(storage, upstream, ttl=ttl),
        upstream=upstream,
        evictor=evictor,
        trust=trust,
    )


async def _services_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    upstream: UpstreamClient | None = None
    session = None
    if not config.serve.offline:
        session = UpstreamClient.make_session(config.upstream)
        upstream = UpstreamClient(config.upstream, session)
    trust = None
    if session is not None and config.tuf.mode == "verify":
        trust = await TufTrust.open(config, app[STORAGE], session, app[METRICS])
        await trust.maybe_refresh()  # failures are recorded and reported in /health
    svc = build_services(config, app[STORAGE], app[METRICS], upstream, trust)
    app[SERVICES].append(svc)
    evictor_task = asyncio.create_task(svc.evictor.run()) if svc.evictor else None
    if upstream is not None and config.sync.interval > 0:
        svc.follower = ChangelogFollower(
            config, app[STORAGE], upstream, svc.pages, svc.files, filters_from_config(config)
        )
        svc.follower.start()
    try:
        yield
    finally:
        if svc.follower is not None:
            await svc.follower.stop()
        if evictor_task is not None:
            evictor_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await evictor_task
        await svc.files.close()
        if trust is not None:
            await trust.close()
        if session is not None:
            await session.close()
        app[SERVICES].clear()


def create_app(config: Config, storage: FileSystemStorage | None = None) -> web.Application:
    """The mirror's aiohttp application; ``storage`` is opened from the config if not given."""
    app = web.Application(middlewares=[request_context], client_max_size=64 * 1024)
    app[CONFIG] = config
    app[STORAGE] = storage if storage is not None else FileSystemStorage.open(config.storage.path)
    app[METRICS] = Metrics()
    app[SERVICES] = []
    app.cleanup_ctx.append(_services_ctx)
    app.router.add_get("/", ops.index)
    app.router.add_get("/health", ops.health)
    app.router.add_get("/metrics", ops.metrics)
    app.router.add_get("/simple", simple.root_redirect)
    app.router.add_get("/simple/", simple.root_page)
    app.router.add_get("/simple/{project}", simple.project_redirect)
    app.router.add_get("/simple/{project}/", simple.project_page)
    app.router.add_get("/packages/{tail:.+}", packages.package_file)
    app.router.add_get("/pypi/{project}/json", jsonapi.json_api)
    app.router.add_get("/tuf/{name}", tuf.metadata)
    app.router.add_get("/pypi/{project}/{version}/json", jsonapi.json_api)
    app.on_response_prepare.append(_vary_on_accept)
    return app


async def _vary_on_accept(request: web.Request, response: web.StreamResponse) -> None:
    """Index pages depend on Accept too (FileResponse sets only Accept-Encoding)."""
    if request.path.startswith("/simple/") and response.status in (200, 304):
        response.headers["Vary"] = "Accept, Accept-Encoding"
