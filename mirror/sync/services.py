"""The objects a sync needs outside ``serve``: upstream client, page and file caches, and
TUF trust when ``[tuf] mode = "verify"`` — the same ones ``serve`` uses, so the sync
verifies exactly as pull-through does."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from mirror.cache.files import FileCache
from mirror.cache.pages import PageCache
from mirror.config import Config
from mirror.metrics import Metrics
from mirror.storage import FileSystemStorage
from mirror.upstream.client import UpstreamClient


@dataclass(frozen=True)
class SyncServices:
    upstream: UpstreamClient
    pages: PageCache
    files: FileCache


@asynccontextmanager
async def sync_services(config: Config, storage: FileSystemStorage) -> AsyncIterator[SyncServices]:
    session = UpstreamClient.make_session(config.upstream)
    trust = None
    try:
        upstream = UpstreamClient(config.upstream, session)
        metrics = Metrics()
        if config.tuf.mode == "verify":
            from mirror.trust.service import TufTrust

            trust = await TufTrust.open(config, storage, session, metrics)
            await trust.maybe_refresh()
        pages = PageCache(
            storage,
            upstream,
            ttl=math.inf,
            negative_ttl=config.serve.negative_ttl,
            trust=trust,
        )
        files = FileCache(storage, upstream, pages, metrics, trust=trust)
        try:
            yield SyncServices(upstream, pages, files)
        finally:
            await files.close()
    finally:
        if trust is not None:
            await trust.close()
        await session.close()
