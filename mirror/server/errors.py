"""Upstream and integrity failures as one-line HTTP answers."""

from __future__ import annotations

from aiohttp import web

from mirror.errors import (
    IntegrityError,
    MirrorError,
    StorageError,
    UpstreamProtocolError,
    UpstreamTimeout,
    UpstreamTooLarge,
)


def upstream_failure(exc: MirrorError, what: str) -> web.HTTPException:
    if isinstance(exc, UpstreamTimeout):
        return web.HTTPGatewayTimeout(text=f"upstream timed out fetching {what}: {exc}\n")
    if isinstance(exc, StorageError):
        return web.HTTPServiceUnavailable(text=f"the mirror cannot store {what}: {exc}\n")
    if isinstance(exc, UpstreamTooLarge):
        return web.HTTPBadGateway(
            text=f"upstream answer for {what} is too large ({exc}); see [upstream] max-page-size\n"
        )
    if isinstance(exc, UpstreamProtocolError):
        return web.HTTPBadGateway(text=f"upstream sent a malformed answer for {what}: {exc}\n")
    if isinstance(exc, IntegrityError):
        return web.HTTPBadGateway(text=f"{what} failed verification: {exc}\n")
    return web.HTTPBadGateway(text=f"upstream unavailable for {what} and nothing cached: {exc}\n")
