"""Small asyncio building blocks: a bounded worker pool over items, and one lock per key."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import TypeVar

from mirror.errors import IntegrityError, MirrorError, StorageError

T = TypeVar("T")


async def bounded(items: Iterable[T], workers: int, fn: Callable[[T], Awaitable[None]]) -> None:
    """Run ``fn`` over ``items`` with at most ``workers`` at once; after the first error no
    new item starts, the running ones finish, then the error is raised: an integrity
    failure first, a storage error (``OSError``) as a one-line ``StorageError``. Anything
    the mirror does not know propagates as it is."""
    iterator = iter(items)
    errors: list[Exception] = []

    async def worker() -> None:
        for item in iterator:
            if errors:
                return
            try:
                await fn(item)
            except Exception as exc:  # collected: the first one is raised below
                errors.append(exc)
                return

    async with asyncio.TaskGroup() as group:
        for _ in range(workers):
            group.create_task(worker())
    if not errors:
        return
    first = next((e for e in errors if isinstance(e, IntegrityError)), errors[0])
    if isinstance(first, OSError) and not isinstance(first, MirrorError):
        raise StorageError(
            f"storage error: {first}; fix it (disk space, permissions) and run again"
        ) from first
    raise first


class KeyedLocks:
    """One ``asyncio.Lock`` per key, kept only while someone holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    def locked(self, key: str) -> bool:
        entry = self._locks.get(key)
        return entry is not None and entry[0].locked()

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)
