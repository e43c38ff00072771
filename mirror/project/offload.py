"""CPU-bound work on large pages, off the event loop.

Parsing, filtering, rewriting and rendering a project page costs time in proportion to its
files: microseconds for most projects, seconds for one that lists hundreds of thousands.
Small work runs inline (a thread hop would cost more than the work); large work runs on a
few threads of its own, never on the default executor, whose threads serve every
request's file I/O: a burst of huge pages must not leave the other clients waiting for a
``stat``. The core's functions are pure, and none of them holds the interpreter for long
(pages are decoded and rendered file by file), so the event loop keeps its turns while a
thread works.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import threading
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")

#: A page (or any input) of at least this many bytes is worked on off the event loop.
OFF_LOOP_BYTES = 256 * 1024
#: A page listing at least this many files is worked on off the event loop.
OFF_LOOP_FILES = 1000
#: Threads for large work (more would only contend for the interpreter).
CPU_THREADS = 2


class CpuWork:
    """Runs a function inline when its input is small, on its own threads when large."""

    def __init__(self, threads: int = CPU_THREADS) -> None:
        self.threads = threads
        self._executor: ThreadPoolExecutor | None = None

    async def run(self, large: bool, fn: Callable[..., T], *args: object) -> T:
        if not large:
            return fn(*args)
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.threads, thread_name_prefix="mirror-cpu")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, _without_gc, functools.partial(fn, *args))

    def close(self) -> None:
        """Stop the threads (work already started finishes on its own)."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None


async def wait_all(*steps: Awaitable[object]) -> None:
    """Run ``steps`` at once and wait for every one of them — unlike a plain gather, none
    is left running when one fails (a writer must not be aborted while it writes) — then
    raise the first failure."""
    results = await asyncio.gather(*steps, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result


class _Collector:
    """The cyclic garbage collector paused while large work runs (counted: several may
    run at once). Building a page's hundreds of thousands of objects triggers full
    collections that walk every object while holding the interpreter, a stall of the
    event loop of a few hundred milliseconds each; the work creates no cycles, and what
    the rest of the process leaves meanwhile is collected once it is done."""

    lock = threading.Lock()
    paused = 0
    was_enabled = True


@contextlib.contextmanager
def _paused_gc() -> Iterator[None]:
    with _Collector.lock:
        _Collector.paused += 1
        if _Collector.paused == 1:
            _Collector.was_enabled = gc.isenabled()
            gc.disable()
    try:
        yield
    finally:
        with _Collector.lock:
            _Collector.paused -= 1
            if _Collector.paused == 0 and _Collector.was_enabled:
                gc.enable()


def _without_gc(work: Callable[[], T]) -> T:
    with _paused_gc():
        return work()
