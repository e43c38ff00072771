"""Blocking file calls off the event loop, shared by the filesystem backend's modules."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import IO, TypeVar

T = TypeVar("T")


async def blocking(fn: Callable[..., T], *args: object) -> T:
    """``fn(*args)`` in the default executor."""
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


class FileReader:
    """A ``ByteReader`` over an open file."""

    def __init__(self, handle: IO[bytes]) -> None:
        self._handle = handle

    async def read(self, size: int) -> bytes:
        return await blocking(self._handle.read, size)

    async def close(self) -> None:
        await blocking(self._handle.close)
