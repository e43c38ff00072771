"""Typed application keys: everything a handler needs hangs off the app, nothing is global."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from mirror.cache.eviction import Evictor
from mirror.cache.files import FileCache
from mirror.cache.jsonapi import JsonApiCache
from mirror.cache.pages import PageCache
from mirror.cache.root import RootCache
from mirror.config import Config
from mirror.metrics import Metrics
from mirror.storage import FileSystemStorage
from mirror.sync.follow import ChangelogFollower
from mirror.trust.service import TufTrust
from mirror.upstream.client import UpstreamClient


@dataclass
class Services:
    """Built in the app's cleanup context (they need the running loop), read by handlers."""

    config: Config
    storage: FileSystemStorage
    metrics: Metrics
    pages: PageCache
    root: RootCache
    files: FileCache
    jsonapi: JsonApiCache
    upstream: UpstreamClient | None = None
    evictor: Evictor | None = None
    trust: TufTrust | None = None
    # serve with [sync] interval > 0: the changelog follower running in this process.
    follower: ChangelogFollower | None = None


CONFIG = web.AppKey("config", Config)
STORAGE = web.AppKey("storage", FileSystemStorage)
METRICS = web.AppKey("metrics", Metrics)
SERVICES = web.AppKey("services", list[Services])

# Per-request: what the cache did, for the access line.
CACHE_RESULT = web.RequestKey("cache_result", str)
REQUEST_ID = web.RequestKey("request_id", str)


def services(request: web.Request) -> Services:
    return request.app[SERVICES][0]
