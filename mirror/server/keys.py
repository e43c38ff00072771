"""Typed application keys: everything a handler needs hangs off the app, nothing is global."""

from __future__ import annotations

from aiohttp import web

from mirror.cache.pages import CacheResult
from mirror.config import Config
from mirror.metrics import Metrics
from mirror.server.requestids import RequestIds
from mirror.services import Services
from mirror.storage import Storage

CONFIG = web.AppKey("config", Config)
REQUEST_IDS = web.AppKey("request_ids", RequestIds)
# Which of several `serve` workers this process is (None: the only process).
WORKER: web.AppKey[int | None] = web.AppKey("worker")
STORAGE = web.AppKey("storage", Storage)
METRICS = web.AppKey("metrics", Metrics)
# Built in the app's cleanup context (they need the running loop), read by handlers.
SERVICES = web.AppKey("services", list[Services])

# Per-request: what the cache did, for the access line.
CACHE_RESULT = web.RequestKey("cache_result", CacheResult)
REQUEST_ID = web.RequestKey("request_id", str)


def services(request: web.Request) -> Services:
    return request.app[SERVICES][0]
