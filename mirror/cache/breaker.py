"""The upstream circuit breaker: after repeated upstream failures, serve what is held at once.

::

    CLOSED ──(``threshold`` failures in a row)──▶ OPEN ──(back-off passed)──▶ HALF_OPEN
       ▲                                           ▲                              │
       └──────────(any upstream answer)────────────┴───(the probe failed: back-off x2)

- CLOSED: a request for a stale page waits (at most ``[serve] revalidate-timeout``) on its
  revalidation. Every upstream failure (refused, timed out, 5xx after retries, or no answer
  within the revalidation's deadline) counts; any answer resets the count.
- OPEN: stale pages are served at once and not revalidated, for a back-off that starts at
  ``[serve] breaker-backoff`` seconds and doubles after each failed probe (up to
  ``MAX_BACKOFF``). Requests for what is not held still go to the upstream (nothing else
  could answer them), bounded by ``[upstream] timeout``; an answer closes the breaker.
- HALF_OPEN: one probe runs in the background — the operation that failed last, again
  (a page's revalidation, the JSON API's, the root list's) — while requests are still
  served from what is held. Its answer closes the breaker, its failure opens it again.

Keys (one per page, JSON answer, root list) that failed also back off on their own for
the first back-off period, so that one broken page does not make each of its requests
wait again while the upstream answers for the others.

Each ``serve`` process has its own breaker; ``/health`` and the
``pypi_mirror_upstream_breaker_open`` gauge report it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from enum import Enum

from mirror.log import get_logger
from mirror.metrics import Metrics

log = get_logger("mirror.breaker")

#: The longest back-off between two probes, in seconds.
MAX_BACKOFF = 300.0
#: Keys remembered as recently failed (the oldest are forgotten first).
FAILED_KEYS = 10_000

Probe = Callable[[], Awaitable[object]]


class BreakerState(Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


class CircuitBreaker:
    def __init__(
        self,
        *,
        threshold: int = 3,
        backoff: float = 10.0,
        probe_timeout: float = 30.0,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        #: Upstream failures in a row that open the breaker; 0 = never open.
        self.threshold = threshold
        self.base_backoff = backoff
        self.probe_timeout = probe_timeout
        self.metrics = metrics
        self.clock = clock
        self.state = BreakerState.CLOSED
        self.failures = 0
        self.backoff = backoff
        self.last_error = ""
        self.changed_at = clock()
        self.probes = 0
        self._retry_at = 0.0
        self._probe: Probe | None = None
        self._prober: asyncio.Task[None] | None = None
        self._failed: OrderedDict[str, float] = OrderedDict()
        self._report()

    # -- what callers ask ---------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """May a request wait on the upstream to revalidate what is held?"""
        return self.state is BreakerState.CLOSED

    def may_revalidate(self, key: str) -> bool:
        """Should a stale ``key`` be revalidated now (else it is served as held)?"""
        if self.state is not BreakerState.CLOSED:
            return False
        failed_at = self._failed.get(key)
        if failed_at is None:
            return True
        if self.clock() - failed_at < self.base_backoff:
            return False
        del self._failed[key]
        return True

    def status(self) -> dict[str, object]:
        """For ``/health``."""
        body: dict[str, object] = {
            "state": self.state.value,
            "failures": self.failures,
            "since": datetime.fromtimestamp(
                time.time() - (self.clock() - self.changed_at), UTC
            ).isoformat(timespec="seconds"),
        }
        if self.state is not BreakerState.CLOSED:
            body["last_error"] = self.last_error
            body["next_probe_in"] = round(max(0.0, self._retry_at - self.clock()), 3)
            body["probes"] = self.probes
        return body

    # -- what callers report --------------------------------------------------------------

    def succeeded(self, key: str) -> None:
        """The upstream answered (whatever it said) for ``key``."""
        self._failed.pop(key, None)
        self.failures = 0
        if self.state is BreakerState.CLOSED:
            return
        log.info(
            "upstream_breaker_closed",
            key=key,
            after_seconds=round(self.clock() - self.changed_at, 3),
            probes=self.probes,
        )
        self._set(BreakerState.CLOSED)
        self._failed.clear()  # the upstream is back: every key may ask again
        self.backoff = self.base_backoff
        self.probes = 0
        self._probe = None
        prober, self._prober = self._prober, None
        if prober is not None and prober is not asyncio.current_task():
            prober.cancel()

    def failed(self, key: str, reason: str, probe: Probe, *, count: bool = True) -> None:
        """The upstream failed for ``key``; ``probe`` tries that again (for HALF_OPEN).
        ``count=False``: this failure was counted already (its deadline passed before)."""
        self._failed[key] = self.clock()
        self._failed.move_to_end(key)
        while len(self._failed) > FAILED_KEYS:
            self._failed.popitem(last=False)
        self.last_error = reason
        self._probe = probe
        if not count:
            return
        self.failures += 1
        if self.state is not BreakerState.CLOSED or not self.threshold:
            return
        if self.failures >= self.threshold:
            self._open(reason)

    async def close(self) -> None:
        prober, self._prober = self._prober, None
        if prober is not None:
            prober.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await prober

    # -- inside ---------------------------------------------------------------------------

    def _open(self, reason: str) -> None:
        self._set(BreakerState.OPEN)
        self._retry_at = self.clock() + self.backoff
        log.warning(
            "upstream_breaker_opened",
            failures=self.failures,
            error=reason,
            backoff_seconds=self.backoff,
        )
        if self.metrics is not None:
            self.metrics.breaker_openings.inc()
        if self._prober is None or self._prober.done():
            self._prober = asyncio.create_task(self._probe_loop())

    def _set(self, state: BreakerState) -> None:
        self.state = state
        self.changed_at = self.clock()
        self._report()

    def _report(self) -> None:
        if self.metrics is not None:
            self.metrics.breaker_open.set(0 if self.state is BreakerState.CLOSED else 1)

    async def _probe_loop(self) -> None:
        """While not closed: wait out the back-off, then try the last failed operation."""
        while not self.closed:
            await asyncio.sleep(max(0.0, self._retry_at - self.clock()))
            probe = self._probe
            if probe is None or self.closed:
                return
            self._set(BreakerState.HALF_OPEN)
            self.probes += 1
            log.info("upstream_probe_started", probe=self.probes, error=self.last_error)
            try:
                await asyncio.wait_for(probe(), self.probe_timeout)
            except TimeoutError:
                self.last_error = f"the probe had no answer within {self.probe_timeout:g} s"
            except Exception as exc:  # the probe's own failure was reported by its flight
                self.last_error = str(exc) or type(exc).__name__
            if self.state is BreakerState.HALF_OPEN:
                # No answer came (an answer closes the breaker): back off longer.
                self.backoff = min(self.backoff * 2, max(MAX_BACKOFF, self.base_backoff))
                self._set(BreakerState.OPEN)
                self._retry_at = self.clock() + self.backoff
                log.warning(
                    "upstream_probe_failed",
                    probe=self.probes,
                    error=self.last_error,
                    backoff_seconds=self.backoff,
                )
