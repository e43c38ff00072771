"""``/tuf/<name>``: the upstream's TUF metadata, verbatim, as this mirror verified it.

Served from ``web/tuf/`` (so nginx can serve the same tree): ``timestamp.json``,
``N.root.json`` (every version), ``N.snapshot.json``, ``N.targets.json``,
``N.<role>.json``. A TUF client pointed at ``<mirror>/tuf/`` with the same pinned root
verifies the mirror's files exactly as it would verify the upstream's.

``timestamp.json`` first refreshes the mirror's metadata when a refresh is due; a delegated
role the mirror has not needed yet is fetched and verified on demand. Nothing unverified
is ever served here.
"""

from __future__ import annotations

from aiohttp import web

from mirror.cache.pages import CacheResult
from mirror.core import layout
from mirror.server.keys import CACHE_RESULT, services
from mirror.server.stored import stored_response
from mirror.trust.paths import parse_metadata_name

VERSIONED_CACHE_CONTROL = "max-age=365000000, immutable, public"
TIMESTAMP_CACHE_CONTROL = "no-cache"


async def metadata(request: web.Request) -> web.StreamResponse:
    svc = services(request)
    name = request.match_info["name"]
    parsed = parse_metadata_name(name)
    if parsed is None:
        raise web.HTTPNotFound(
            text="not TUF metadata: expected /tuf/timestamp.json or /tuf/N.<role>.json\n"
        )
    version, _role = parsed
    trust = svc.trust
    rel = layout.web_tuf(name)
    if version is None and trust is not None:
        await trust.maybe_refresh()
    info = await svc.storage.stat(rel)
    if info is None and trust is not None and await trust.ensure_metadata(name):
        request[CACHE_RESULT] = CacheResult.MISS
        info = await svc.storage.stat(rel)
    elif info is not None:
        request[CACHE_RESULT] = CacheResult.HIT
    if info is None:
        raise web.HTTPNotFound(text=f"{name} is not held by this mirror\n")
    headers = {
        "Content-Type": "application/json",
        "Cache-Control": TIMESTAMP_CACHE_CONTROL if version is None else VERSIONED_CACHE_CONTROL,
    }
    return await stored_response(request, svc.storage, rel, headers)
