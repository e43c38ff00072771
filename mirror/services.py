"""The one place that builds the mirror's services from the configuration: for ``serve``,
for ``sync`` and for the tests, so they all fetch, verify and write projects alike.

::

    UpstreamClient ─┬─ TufTrust ([tuf] mode = "verify")
                    └─ UpstreamSource ── FileStore ── ProjectKeeper (filters)
                                                        ├─ PageCache ─┬─ FileCache
                                                        │             └─ JsonApiCache
                                                        └─ (sync) SyncEngine, ChangelogFollower
    RootCache, CacheUsage + Evictor (serve only: the cache's size; [cache] max-size)
    CircuitBreaker: shared by PageCache, JsonApiCache and RootCache (one upstream)
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

from mirror.cache.breaker import CircuitBreaker
from mirror.cache.eviction import Evictor
from mirror.cache.files import FileCache
from mirror.cache.flights import RetryAwareClient
from mirror.cache.hot import FILE_ENTRY_LIMIT, HotBytes, file_bytes, page_bytes
from mirror.cache.jsonapi import JsonApiCache
from mirror.cache.pages import PageCache
from mirror.cache.root import RootCache
from mirror.cache.usage import CacheUsage
from mirror.config import Config, SyncMode, TufMode
from mirror.core.filters import FilterError, Filters
from mirror.errors import ConfigError
from mirror.metrics import Metrics
from mirror.project.files import FileStore
from mirror.project.keeper import ProjectKeeper
from mirror.project.source import UpstreamSource
from mirror.storage import Storage
from mirror.upstream.client import UpstreamClient

if TYPE_CHECKING:
    from mirror.sync.follow import ChangelogFollower
    from mirror.trust.service import TufTrust


class Purpose(Enum):
    SERVE = "serve"
    SYNC = "sync"


@dataclass
class Services:
    config: Config
    storage: Storage
    metrics: Metrics
    keeper: ProjectKeeper
    pages: PageCache
    files: FileCache
    jsonapi: JsonApiCache
    root: RootCache
    hot_pages: HotBytes
    hot_files: HotBytes
    breaker: CircuitBreaker
    upstream: UpstreamClient | None = None
    trust: TufTrust | None = None
    evictor: Evictor | None = None
    usage: CacheUsage | None = None
    # serve with [sync] interval > 0: the changelog follower running in this process.
    follower: ChangelogFollower | None = None


def filters_from_config(config: Config) -> Filters:
    """The ``[sync]`` filters; a bad entry is a ConfigError naming the key and the file."""
    sync = config.sync
    try:
        return Filters.parse(
            allow=sync.allow,
            block=sync.block,
            exclude_platforms=sync.exclude_platforms,
            python_versions=sync.python_versions,
            prereleases=sync.prereleases,
            keep_latest=sync.keep_latest,
            max_file_size=sync.max_file_size,
        )
    except FilterError as exc:
        raise ConfigError(f"[sync] {exc}", source=config.source) from exc


def _page_ttl(config: Config, purpose: Purpose) -> float:
    """A sync, and ``serve`` beside one (mode = "mirror"), keep pages fresh by the
    changelog, not by a TTL."""
    if purpose is Purpose.SYNC or config.sync.mode is SyncMode.MIRROR:
        return math.inf
    return float(config.serve.index_ttl)


@asynccontextmanager
async def open_services(
    config: Config,
    storage: Storage,
    *,
    purpose: Purpose = Purpose.SERVE,
    metrics: Metrics | None = None,
) -> AsyncIterator[Services]:
    metrics = metrics or Metrics()
    offline = purpose is Purpose.SERVE and config.serve.offline
    session = None if offline else UpstreamClient.make_session(config.upstream)
    # The client tells a request waiting on a revalidation when an attempt failed, so
    # that its retries go on in the background (cache.flights).
    upstream = None if session is None else RetryAwareClient(config.upstream, session)
    trust: TufTrust | None = None
    keeper: ProjectKeeper | None = None
    files: FileStore | None = None
    caches: list[PageCache | JsonApiCache | RootCache | CircuitBreaker] = []
    try:
        if session is not None and config.tuf.mode is TufMode.VERIFY:
            # python-tuf is imported only when trust is on (it is the largest import).
            from mirror.trust.service import TufTrust

            trust = await TufTrust.open(config, storage, session, metrics)
            await trust.maybe_refresh()  # failures are recorded and reported in status
        source = None if upstream is None else UpstreamSource(upstream, trust)
        files = FileStore(
            storage,
            source,
            metrics,
            trust=trust,
            max_file_size=config.upstream.max_file_size,
            claims=purpose is Purpose.SERVE,
        )
        keeper = ProjectKeeper(
            storage,
            source,
            files,
            filters_from_config(config),
            file_workers=config.sync.file_workers,
        )
        breaker = CircuitBreaker(
            threshold=config.serve.breaker_failures,
            backoff=config.serve.breaker_backoff,
            probe_timeout=config.upstream.timeout,
            metrics=metrics,
        )
        # A request waits this long on the upstream for what is held, and at most
        # [upstream] timeout for what is not (the client's retries go on behind it).
        revalidate_timeout = config.serve.revalidate_timeout
        miss_timeout = config.upstream.timeout
        pages = PageCache(
            keeper,
            ttl=_page_ttl(config, purpose),
            negative_ttl=config.serve.negative_ttl,
            revalidate_timeout=revalidate_timeout,
            miss_timeout=miss_timeout,
            breaker=breaker,
        )
        jsonapi = JsonApiCache(pages)
        root = RootCache(
            storage,
            upstream,
            ttl=_page_ttl(config, purpose),
            revalidate_timeout=revalidate_timeout,
            miss_timeout=miss_timeout,
            breaker=breaker,
        )
        # Closed first: what they have in flight is cancelled before the session closes.
        caches += [pages, jsonapi, root, breaker]
        evictor = None
        usage = None
        file_cache = FileCache(pages)
        if purpose is Purpose.SERVE:
            # Runs whatever max-size says: its first walk makes the cache's size known.
            usage = CacheUsage(storage, metrics)
            evictor = Evictor(
                storage,
                config.cache.max_size,
                metrics,
                lambda rel: rel in file_cache.readers or rel in file_cache.downloading,
                usage,
                interval=config.cache.evict_interval,
            )
            files.on_commit = usage.added

            def evicted(rel: str) -> None:
                file_cache.forget_present(rel)
                hot_files.forget(rel)

            evictor.on_evict = evicted
        hot_pages = HotBytes(storage, page_bytes, max_bytes=config.serve.page_memory)
        keeper.pages.watchers.append(hot_pages.forget_project)
        hot_files = HotBytes(
            storage, file_bytes, max_bytes=config.serve.file_memory, max_entry=FILE_ENTRY_LIMIT
        )
        await keeper.intents.replay()
        if usage is not None:  # after the replay: the start-up walk counts what it left
            keeper.intents.on_removed = usage.removed
        yield Services(
            config=config,
            storage=storage,
            metrics=metrics,
            keeper=keeper,
            pages=pages,
            files=file_cache,
            jsonapi=jsonapi,
            root=root,
            hot_pages=hot_pages,
            hot_files=hot_files,
            breaker=breaker,
            upstream=upstream,
            trust=trust,
            evictor=evictor,
            usage=usage,
        )
    finally:
        for cache in caches:
            await cache.close()
        if keeper is not None:
            await keeper.close()
        if files is not None:
            await files.close()
        if trust is not None:
            await trust.close()
        if session is not None:
            await session.close()
