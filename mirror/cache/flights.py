"""One upstream operation per key at a time, and bounded waits on it.

A request that holds a copy waits on the revalidation at most ``[serve]
revalidate-timeout``, and no longer than the first failed attempt: when the upstream
client is about to retry (refused, timed out, 5xx), the held copy is served at once and
the retries with their back-off go on in the background (stale-while-revalidate) — retries
never stack behind a waiting client. Whatever the operation finally brings serves the next
request. A request that holds nothing waits at most ``[upstream] timeout`` (retries
included), then gets an ``UpstreamTimeout`` (a 504), and the operation goes on too.

Every operation's outcome is reported to the ``CircuitBreaker`` once: an answer (whatever
it says) as a success; a transport failure (``UpstreamUnavailable``), a failed attempt a
request was waiting on, or a waiting request's deadline passing, as a failure, with the
operation itself as the breaker's probe. A failure bumps nothing on disk: the held copy
keeps its age and stays stale.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from mirror.cache.breaker import CircuitBreaker
from mirror.errors import MirrorError, UpstreamTimeout, UpstreamUnavailable
from mirror.log import get_logger
from mirror.upstream.client import UpstreamClient

log = get_logger("mirror.flights")

T = TypeVar("T")

# Set in an operation's task: called when the upstream client retries within it.
_attempt_failed: contextvars.ContextVar[Callable[[], None] | None] = contextvars.ContextVar(
    "attempt_failed", default=None
)


class RetryAwareClient(UpstreamClient):
    """The upstream client, telling the operation it runs in that an attempt failed and a
    retry (after a back-off) follows, so that a request waiting on it stops waiting."""

    async def _backoff(self, attempt: int) -> None:
        noted = _attempt_failed.get()
        if noted is not None:
            noted()
        await super()._backoff(attempt)


@dataclass
class Flight(Generic[T]):
    task: asyncio.Task[T]
    #: An attempt failed (the client retries in the background).
    faltered: asyncio.Event = field(default_factory=asyncio.Event)
    #: A waiting request gave up on it: later requests that hold a copy do not wait on
    #: this operation again.
    slow: bool = False
    #: The breaker counted a failure of this operation already.
    counted: bool = False


class Flights(Generic[T]):
    def __init__(
        self,
        breaker: CircuitBreaker,
        *,
        revalidate_timeout: float,
        miss_timeout: float,
        late_is_failure: bool = True,
    ) -> None:
        self.breaker = breaker
        self.revalidate_timeout = revalidate_timeout
        self.miss_timeout = miss_timeout
        # False where a long answer is normal (the root list: 30 MB from PyPI): passing a
        # deadline then is not held against the upstream; a failed attempt still is.
        self.late_is_failure = late_is_failure
        self._flights: dict[str, Flight[T]] = {}

    def __contains__(self, key: str) -> bool:
        return key in self._flights

    def start(self, key: str, operation: Callable[[], Awaitable[T]]) -> Flight[T]:
        """The operation in flight for ``key``, or ``operation()`` started now."""
        flight = self._flights.get(key)
        if flight is not None:
            return flight
        faltered = asyncio.Event()

        async def run() -> T:
            _attempt_failed.set(faltered.set)  # this task's context only
            return await operation()

        task = asyncio.ensure_future(run())
        flight = Flight(task, faltered)
        self._flights[key] = flight

        def landed(done: asyncio.Task[T]) -> None:
            if self._flights.get(key) is flight:
                del self._flights[key]
            if done.cancelled():
                return
            exc = done.exception()
            if exc is None:
                self.breaker.succeeded(key)
            elif isinstance(exc, UpstreamUnavailable):
                self.breaker.failed(
                    key, str(exc), lambda: self.wait(key, operation), count=not flight.counted
                )
            elif isinstance(exc, MirrorError):
                self.breaker.succeeded(key)  # the upstream answered, however badly

        task.add_done_callback(landed)
        return flight

    async def wait(self, key: str, operation: Callable[[], Awaitable[T]]) -> T:
        """Start (or join) the operation and wait for it however long it takes."""
        return await asyncio.shield(self.start(key, operation).task)

    async def revalidate(
        self, key: str, operation: Callable[[], Awaitable[T]], what: str
    ) -> T | None:
        """For a request that holds a copy: the operation's result, or None when the held
        copy is to be served now (the breaker is open, ``key`` failed a moment ago, an
        attempt failed, or no answer came within ``revalidate-timeout``). Raises what the
        operation raised when it ended first."""
        flight = self._flights.get(key)
        if flight is None:
            if not self.breaker.may_revalidate(key):
                return None
            flight = self.start(key, operation)
        elif flight.slow or not self.breaker.closed:
            return None  # (an open breaker's probe, say, runs without anyone waiting)
        seconds = self.revalidate_timeout
        faltered = asyncio.ensure_future(flight.faltered.wait())
        try:
            done, _pending = await asyncio.wait(
                (flight.task, faltered), timeout=seconds, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            faltered.cancel()
        if flight.task in done:
            return flight.task.result()
        if flight.faltered.is_set():
            self._give_up(key, operation, flight, f"{what}: an upstream attempt failed")
            log.info("upstream_retry_in_background", what=what)
        else:
            self._late(key, operation, flight, what, seconds)
        return None

    async def fetch(
        self,
        key: str,
        operation: Callable[[], Awaitable[T]],
        what: str,
        seconds: float | None = None,
    ) -> T:
        """For a request that holds nothing: the result within ``seconds`` (default
        ``[upstream] timeout``), or UpstreamTimeout while the operation goes on."""
        seconds = self.miss_timeout if seconds is None else seconds
        flight = self.start(key, operation)
        try:
            return await asyncio.wait_for(asyncio.shield(flight.task), seconds)
        except TimeoutError:
            if flight.task.done():  # it ended just as the deadline passed
                return flight.task.result()
        self._late(key, operation, flight, what, seconds)
        raise UpstreamTimeout(f"{what}: no answer from the upstream within {seconds:g} s")

    def _late(
        self,
        key: str,
        operation: Callable[[], Awaitable[T]],
        flight: Flight[T],
        what: str,
        seconds: float,
    ) -> None:
        if flight.slow:
            return
        log.warning("upstream_answer_late", what=what, waited_seconds=seconds)
        if not self.late_is_failure:
            flight.slow = True
            return
        reason = f"{what}: no answer from the upstream within {seconds:g} s"
        self._give_up(key, operation, flight, reason)

    def _give_up(
        self, key: str, operation: Callable[[], Awaitable[T]], flight: Flight[T], reason: str
    ) -> None:
        """A waiting request stopped waiting on ``flight``: a failure, counted once."""
        flight.slow = True
        if flight.counted:
            return
        flight.counted = True
        self.breaker.failed(key, reason, lambda: self.wait(key, operation))

    async def close(self) -> None:
        """Cancel what is in flight (the app is stopping)."""
        tasks = [flight.task for flight in self._flights.values()]
        self._flights.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
