"""Sorting a project list that may not fit in memory, and joining two sorted lists.

``ExternalSorter`` holds at most ``flush_at`` ``(name, serial)`` records; each time that
many arrived they are sorted and spilled as one run file (in ``tmp/``, removed
afterwards). ``sorted()`` merges the runs (``heapq.merge``, one line per run in memory)
and yields the records in name order, a batch at a time. Once ``fan_in`` runs exist they
are first merged into one, so open files stay bounded too. Memory is therefore bounded by
``flush_at`` however the names are distributed (bucketing by prefix is not: a corpus whose
names share a prefix, or PyPI's many ``py*`` names, would land in one bucket).
"""

from __future__ import annotations

import asyncio
import heapq
import os
import secrets
import shutil
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType

FLUSH_AT = 10_000
FAN_IN = 64
BATCH = 1000
Record = tuple[str, int | None]


def _line_name(line: str) -> str:
    return line.partition(" ")[0]


def _parse(line: str) -> Record:
    name, _, serial = line.rstrip("\n").partition(" ")
    return name, int(serial) if serial.isdigit() else None


def _merged(handles: Sequence[Iterable[str]]) -> Iterator[str]:
    return heapq.merge(*handles, key=_line_name)


class ExternalSorter:
    def __init__(self, tmp_root: Path, *, flush_at: int = FLUSH_AT, fan_in: int = FAN_IN) -> None:
        self.directory = tmp_root / f"sort-{secrets.token_hex(6)}"
        self.flush_at = flush_at
        self.fan_in = max(2, fan_in)
        self.count = 0
        self._buffer: list[str] = []
        self._runs: list[Path] = []
        self._made = 0

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
            self._buffer.append(f"{name} {'-' if serial is None else serial}\n")
            self.count += 1
            if len(self._buffer) >= self.flush_at:
                await self._flush()

    def _new_run(self) -> Path:
        self._made += 1
        return self.directory / f"run-{self._made}"

    async def _flush(self) -> None:
        lines, self._buffer = self._buffer, []
        if not lines:
            return
        run = self._new_run()
        merge_into = self._new_run() if len(self._runs) + 1 >= self.fan_in else None
        runs = self._runs

        def spill() -> None:
            lines.sort(key=_line_name)
            with run.open("w", encoding="utf-8") as handle:
                handle.writelines(lines)
            lines.clear()
            runs.append(run)
            if merge_into is not None:
                # Too many runs to merge at once later: fold them into one now.
                with ExitStack() as stack, merge_into.open("w", encoding="utf-8") as out:
                    handles = [stack.enter_context(p.open(encoding="utf-8")) for p in runs]
                    out.writelines(_merged(handles))
                for path in runs:
                    os.unlink(path)
                runs[:] = [merge_into]

        await asyncio.get_running_loop().run_in_executor(None, spill)

    async def sorted(self) -> AsyncIterator[list[Record]]:
        """Every record, ordered by name, in batches of up to ``BATCH``."""
        if not self._runs:
            # Everything fits in the buffer: no file needed.
            lines, self._buffer = self._buffer, []
            lines.sort(key=_line_name)
            for start in range(0, len(lines), BATCH):
                yield [_parse(line) for line in lines[start : start + BATCH]]
            return
        await self._flush()
        loop = asyncio.get_running_loop()
        runs = list(self._runs)
        with ExitStack() as stack:

            def open_runs() -> Iterator[str]:
                return _merged([stack.enter_context(p.open(encoding="utf-8")) for p in runs])

            merged = await loop.run_in_executor(None, open_runs)

            def take() -> list[Record]:
                return [_parse(line) for _, line in zip(range(BATCH), merged, strict=False)]

            while batch := await loop.run_in_executor(None, take):
                yield batch


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
