"""``GET /``: a page for people — what the mirror is doing and how to point clients at it.

Rendered by Jinja2 with autoescaping from ``templates/home.html`` (the environment is
made once): every value, the request's own ``Host`` included, is escaped. No script and
nothing loaded from elsewhere; the CSS is inline. The numbers are those of ``/health``
and ``/metrics`` (summed over the workers), the sync state of ``pypi-mirror status``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime

import jinja2
from aiohttp import web

from mirror.cache.pages import CacheResult
from mirror.config import SyncMode
from mirror.core import layout
from mirror.errors import StorageError
from mirror.metrics import sample_key
from mirror.server.keys import WORKER, services
from mirror.services import Services
from mirror.sync.journal import load_state
from mirror.sync.progress import human_bytes

#: The kinds of lookup the hit rates are given for (``cache_results`` labels).
KINDS = ("page", "file", "json", "root")


@functools.cache
def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("mirror.server", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


@dataclass(frozen=True)
class HitRate:
    kind: str
    from_store: int
    total: int

    @property
    def percent(self) -> str:
        return f"{100 * self.from_store / self.total:.1f} %" if self.total else "-"


async def index(request: web.Request) -> web.StreamResponse:
    base = f"{request.scheme}://{request.host}"
    context = {"index_url": f"{base}/simple/", "base": base, **await _context(request)}
    html = environment().get_template("home.html").render(context)
    return web.Response(text=html, content_type="text/html", charset="utf-8")


async def _context(request: web.Request) -> dict[str, object]:
    svc = services(request)
    config = svc.config
    usage = svc.usage.current() if svc.usage is not None else None
    return {
        "mode": _mode(svc),
        "upstream": config.upstream.url,
        "upstream_state": _upstream_state(svc),
        "breaker": svc.breaker.status() if svc.upstream is not None else None,
        "cache_bytes": human_bytes(usage.bytes) if usage is not None else None,
        "cache_files": usage.files if usage is not None else None,
        "max_size": human_bytes(config.cache.max_size) if config.cache.max_size else None,
        "hit_rates": _hit_rates(svc),
        "sync": await _sync(svc, request.app[WORKER]),
        "trust": svc.trust.status() if svc.trust is not None else None,
        "tuf_mode": config.tuf.mode.value,
        "worker": request.app[WORKER],
        "now": _when(datetime.now(UTC).timestamp()),
    }


def _mode(svc: Services) -> str:
    if svc.upstream is None:
        return "offline cache (the upstream is never contacted)"
    if svc.config.sync.mode is SyncMode.MIRROR:
        return "mirror (pages kept by the sync; misses fetched through)"
    return "pull-through cache"


def _upstream_state(svc: Services) -> str:
    if svc.upstream is None:
        return "not contacted (offline)"
    breaker = svc.breaker
    if not breaker.closed:
        return f"failing: circuit breaker {breaker.state.value}, stored copies served"
    if breaker.failures:
        return f"the last {breaker.failures} request(s) failed"
    return "reachable"


def _hit_rates(svc: Services) -> list[HitRate]:
    values = svc.metrics.values("counter_")
    rates = []
    for kind in KINDS:
        counts = {
            result: int(
                values.get(
                    sample_key(
                        "pypi_mirror_cache_results_total", {"kind": kind, "result": result.value}
                    ),
                    0,
                )
            )
            for result in CacheResult
        }
        total = sum(counts.values())
        rates.append(HitRate(kind, sum(n for r, n in counts.items() if r.from_store), total))
    everything = HitRate("all", sum(r.from_store for r in rates), sum(r.total for r in rates))
    return [*rates, everything]


async def _sync(svc: Services, worker: int | None) -> dict[str, object]:
    """The last sync run and the serial (mirror mode), or the changelog follower (cache)."""
    config = svc.config
    body: dict[str, object] = {
        "mode": config.sync.mode.value,
        "interval": config.sync.interval,
    }
    try:
        state = await load_state(svc.storage)
    except StorageError as exc:
        body["error"] = str(exc)
        return body
    body["serial"] = state.serial
    run = state.last_run
    if run is not None:
        lag = max(run.target - state.serial, 0) if run.target and state.serial else None
        body["last_run"] = {
            "started": _when(run.started),
            "finished": _when(run.finished),
            "result": run.result.value,
            "reason": run.reason,
            "projects": run.projects,
            "files": run.files,
            "bytes": human_bytes(run.bytes),
            "target": run.target,
            "lag": lag,
        }
    if config.sync.mode is SyncMode.CACHE:
        cursor = await svc.storage.read_bytes(layout.CACHE_CURSOR, limit=64)
        text = cursor.decode("ascii", "replace").strip() if cursor else ""
        body["cursor"] = cursor_serial = int(text) if text.isdigit() else None
        known = svc.follower.upstream_serial if svc.follower is not None else None
        if known is not None and cursor_serial is not None:
            body["upstream_serial"] = known
            body["lag"] = max(known - cursor_serial, 0)
    follower = svc.follower
    if follower is not None:
        body["follower"] = (
            f"unavailable: {follower.unavailable}"
            if follower.unavailable
            else f"following, {follower.rounds} round(s) done"
        )
    elif svc.upstream is not None and config.sync.interval > 0:
        body["follower"] = "runs in worker 0" if worker else "starting"
    else:
        body["follower"] = "off"
    return body


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
