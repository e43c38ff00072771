"""``/healthz`` (the process is alive) and ``/readyz`` (should a load balancer send it
traffic?), for probes: cheap, JSON, 200 or 503.

``/readyz`` has one entry per check, each ``ok``, ``degraded`` or ``failing`` with a
one-line ``reason`` unless ok. Any failing check makes it 503 (``not-ready``); degraded
ones leave it 200 (``degraded``):

- ``storage``: a tiny file is written and deleted through the ``Storage`` Protocol; the
  outcome is reused for ``STORAGE_TTL`` seconds and concurrent probes share one check, so
  a probe every second costs one small write every two seconds.
- ``upstream``: never asked per probe. Offline mode is ok (failing if the cache holds no
  file: nothing could be served); otherwise the last known outcome of this process's
  upstream requests (the circuit breaker's count of failures in a row): degraded while
  the last ones failed.
- ``breaker``: this process's circuit breaker (``cache.breaker``). Open (or probing) is
  *degraded*, not failing: the cache keeps serving what it holds while the upstream is
  down, which is what a load balancer should keep sending traffic to — unless the cache
  holds no file at all, when nothing can be served (failing).
- ``trust`` (``[tuf] mode = "verify"``): refused, expired or unavailable TUF metadata is
  failing — the mirror refuses all new content then; stale metadata (the last refresh
  failed, what is trusted has not expired) is degraded.
- ``lifecycle``: failing while the process shuts down (SIGTERM), so that traffic drains.

Each worker answers for itself (its own breaker): with several workers a probe sees the
one the kernel gave its connection to.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from dataclasses import dataclass
from enum import Enum

from aiohttp import web

from mirror.core import layout
from mirror.server.keys import SERVICES, WORKER
from mirror.server.lifecycle import LIFECYCLE
from mirror.services import Services
from mirror.storage import Storage
from mirror.trust.base import TrustState

#: How long one storage check answers for (seconds), and how long it may take.
STORAGE_TTL = 2.0
STORAGE_TIMEOUT = 2.0


class Check(Enum):
    OK = "ok"
    DEGRADED = "degraded"
    FAILING = "failing"


class Readiness(Enum):
    READY = "ready"
    DEGRADED = "degraded"
    NOT_READY = "not-ready"


@dataclass(frozen=True)
class Outcome:
    state: Check
    reason: str = ""

    def body(self) -> dict[str, object]:
        body: dict[str, object] = {"status": self.state.value}
        if self.reason:
            body["reason"] = self.reason
        return body


OK = Outcome(Check.OK)


async def healthz(request: web.Request) -> web.StreamResponse:
    return web.json_response({"status": "alive", "worker": request.app[WORKER], "pid": os.getpid()})


async def readyz(request: web.Request) -> web.StreamResponse:
    checks: dict[str, Outcome] = {}
    if request.app[LIFECYCLE].stopping:
        checks["lifecycle"] = Outcome(Check.FAILING, "shutting down")
    found = request.app[SERVICES]
    if not found:
        checks["lifecycle"] = Outcome(Check.FAILING, "starting: the services are not up yet")
    else:
        svc = found[0]
        checks["storage"] = await request.app[STORAGE_PROBE].check()
        checks["upstream"] = upstream_check(svc)
        checks["breaker"] = breaker_check(svc)
        checks["trust"] = trust_check(svc)
    states = {outcome.state for outcome in checks.values()}
    if Check.FAILING in states:
        overall = Readiness.NOT_READY
    elif Check.DEGRADED in states:
        overall = Readiness.DEGRADED
    else:
        overall = Readiness.READY
    body = {
        "status": overall.value,
        "worker": request.app[WORKER],
        "checks": {name: outcome.body() for name, outcome in checks.items()},
    }
    return web.json_response(body, status=503 if overall is Readiness.NOT_READY else 200)


# -- the checks ---------------------------------------------------------------------------


class StorageProbe:
    """One write+delete at a time per store, its outcome reused for ``STORAGE_TTL``."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.rel = layout.ready_probe(f"{socket.gethostname()}.{os.getpid()}")
        self.outcome: Outcome | None = None
        self.checked_at = 0.0
        self.running: asyncio.Task[Outcome] | None = None

    async def check(self) -> Outcome:
        fresh = time.monotonic() - self.checked_at < STORAGE_TTL
        if self.outcome is not None and fresh:
            return self.outcome
        if self.running is None or self.running.done():
            self.running = asyncio.create_task(self._write_and_delete())
        # Shared by concurrent probes; a probe that gives up does not cancel it.
        return await asyncio.shield(self.running)

    async def _write_and_delete(self) -> Outcome:
        try:
            async with asyncio.timeout(STORAGE_TIMEOUT):
                await self.storage.write_bytes(self.rel, b"ready\n", durable=False)
                await self.storage.delete(self.rel)
        except TimeoutError:
            outcome = Outcome(
                Check.FAILING,
                f"a write to {self.storage.describe()} had no answer within {STORAGE_TIMEOUT:g} s",
            )
        except OSError as exc:
            reason = exc.strerror or str(exc)
            outcome = Outcome(Check.FAILING, f"cannot write to {self.storage.describe()}: {reason}")
        else:
            outcome = OK
        self.outcome, self.checked_at = outcome, time.monotonic()
        return outcome


#: The app's storage check (``create_app``).
STORAGE_PROBE = web.AppKey("storage_probe", StorageProbe)


def upstream_check(svc: Services) -> Outcome:
    if svc.upstream is None:  # offline: the upstream is never contacted
        if nothing_stored(svc):
            return Outcome(Check.FAILING, "offline, and the cache holds no file to serve")
        return OK
    breaker = svc.breaker
    if breaker.failures:
        return Outcome(
            Check.DEGRADED,
            f"the last {breaker.failures} upstream request(s) failed: {breaker.last_error}",
        )
    return OK


def breaker_check(svc: Services) -> Outcome:
    breaker = svc.breaker
    if svc.upstream is None or breaker.closed:
        return OK
    status = breaker.status()
    why = (
        f"circuit breaker {breaker.state.value} after upstream failures "
        f"({breaker.last_error}); next probe in {status.get('next_probe_in', 0)} s"
    )
    if nothing_stored(svc):
        return Outcome(Check.FAILING, f"{why}, and the cache holds no file to serve")
    return Outcome(Check.DEGRADED, f"{why}: stored copies are served without asking upstream")


def trust_check(svc: Services) -> Outcome:
    if svc.trust is None:
        return OK
    state = svc.trust.state()
    if state is TrustState.OK:
        return OK
    error = svc.trust.status().get("last_error") or "no detail recorded"
    if state is TrustState.STALE:
        return Outcome(
            Check.DEGRADED, f"TUF metadata not refreshed ({error}); it has not expired yet"
        )
    if state is TrustState.STARTING:
        return Outcome(Check.FAILING, "TUF metadata not loaded yet")
    return Outcome(Check.FAILING, f"TUF metadata {state.value}: new content is refused ({error})")


def nothing_stored(svc: Services) -> bool:
    """The cache holds no distribution file (False while that is not known yet)."""
    usage = svc.usage.current() if svc.usage is not None else None
    return usage is not None and usage.files == 0
