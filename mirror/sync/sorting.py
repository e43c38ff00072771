"""Sorting a project list that may not fit in memory, and joining two sorted lists.

``ExternalSorter`` spills ``(name, serial)`` records into bucket files by the name's first
two characters (in ``tmp/``, removed afterwards) and sorts one bucket at a time: prefix
buckets in order give names in order, and memory is bounded by the largest bucket (about
1/1000 of the list) plus the spill buffer.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from types import TracebackType

from mirror.sync.journal import read_lines

FLUSH_AT = 20_000
Record = tuple[str, int | None]


def _bucket_name(name: str) -> str:
    return name[:2].encode("utf-8").hex()


class ExternalSorter:
    def __init__(self, tmp_root: Path, *, flush_at: int = FLUSH_AT) -> None:
        self.directory = tmp_root / f"sort-{secrets.token_hex(6)}"
        self.flush_at = flush_at
        self.count = 0
        self._buffers: dict[str, list[str]] = {}
        self._buffered = 0

    async def __aenter__(self) -> ExternalSorter:
        await asyncio.get_running_loop().run_in_executor(None, self.directory.mkdir)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        directory = self.directory
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: shutil.rmtree(directory, ignore_errors=True)
        )

    async def add(self, records: list[Record]) -> None:
        for name, serial in records:
            line = f"{name} {'-' if serial is None else serial}\n"
            self._buffers.setdefault(_bucket_name(name), []).append(line)
            self._buffered += 1
            self.count += 1
        if self._buffered >= self.flush_at:
            await self._flush()

    async def _flush(self) -> None:
        buffers, self._buffers, self._buffered = self._buffers, {}, 0
        directory = self.directory

        def spill() -> None:
            for bucket, lines in buffers.items():
                with (directory / bucket).open("a", encoding="utf-8") as handle:
                    handle.writelines(lines)

        await asyncio.get_running_loop().run_in_executor(None, spill)

    async def sorted(self) -> AsyncIterator[list[Record]]:
        """Every record, ordered by name, one bucket per batch."""
        await self._flush()
        loop = asyncio.get_running_loop()
        buckets = await loop.run_in_executor(None, os.listdir, self.directory)
        for bucket in sorted(buckets, key=bytes.fromhex):
            records: list[Record] = []
            async for lines in read_lines(self.directory / bucket):
                for line in lines:
                    name, _, serial = line.partition(" ")
                    records.append((name, int(serial) if serial.isdigit() else None))
            records.sort(key=lambda record: record[0])
            yield records


async def _grouped(batches: AsyncIterator[list[Record]]) -> AsyncIterator[Record]:
    """Records one by one, equal names folded into one (the highest serial wins)."""
    pending: Record | None = None
    async for batch in batches:
        for name, serial in batch:
            if pending is not None and pending[0] == name:
                if serial is not None and (pending[1] is None or serial > pending[1]):
                    pending = (name, serial)
                continue
            if pending is not None:
                yield pending
            pending = (name, serial)
    if pending is not None:
        yield pending


async def merge_join(
    left: AsyncIterator[list[Record]], right: AsyncIterator[list[Record]]
) -> AsyncIterator[tuple[str, Record | None, Record | None]]:
    """Full outer join of two name-sorted record streams: (name, left, right)."""
    a = _grouped(left)
    b = _grouped(right)
    x = await anext(a, None)
    y = await anext(b, None)
    while x is not None or y is not None:
        if y is None or (x is not None and x[0] < y[0]):
            assert x is not None
            yield x[0], x, None
            x = await anext(a, None)
        elif x is None or y[0] < x[0]:
            yield y[0], None, y
            y = await anext(b, None)
        else:
            yield x[0], x, y
            x = await anext(a, None)
            y = await anext(b, None)
