"""Sync progress: counters the engine updates, and a reporter that shows them.

On a TTY the reporter redraws one status line (projects done/total, files, bytes, rate);
otherwise it logs a ``sync_progress`` event every ``log_interval`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import TextIO

from mirror.log import get_logger

log = get_logger("mirror.sync.progress")


def human_bytes(size: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


@dataclass
class Progress:
    total: int = 0
    done: int = 0
    files: int = 0
    bytes: int = 0
    removed: int = 0
    deferred: int = 0
    failed: int = 0
    started: float = field(default_factory=time.monotonic)

    def elapsed(self) -> float:
        return max(time.monotonic() - self.started, 1e-6)

    def line(self) -> str:
        rate = human_bytes(self.bytes / self.elapsed())
        parts = [
            f"projects {self.done}/{self.total}",
            f"files +{self.files}",
            human_bytes(self.bytes),
            f"{rate}/s",
        ]
        if self.removed:
            parts.append(f"removed {self.removed}")
        if self.deferred:
            parts.append(f"deferred {self.deferred}")
        if self.failed:
            parts.append(f"failed {self.failed}")
        return "  ".join(parts)


class ProgressReporter:
    def __init__(
        self,
        progress: Progress,
        stream: TextIO,
        *,
        tty: bool,
        interval: float = 0.25,
        log_interval: float = 10.0,
    ) -> None:
        self.progress = progress
        self.stream = stream
        self.tty = tty
        self.interval = interval if tty else log_interval
        self._task: asyncio.Task[None] | None = None
        self._width = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._draw()
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self._draw()

    def _draw(self) -> None:
        p = self.progress
        if not self.tty:
            log.info(
                "sync_progress",
                projects_done=p.done,
                projects_total=p.total,
                files=p.files,
                bytes=p.bytes,
                bytes_per_second=round(p.bytes / p.elapsed()),
                deferred=p.deferred,
                failed=p.failed,
            )
            return
        text = p.line()
        pad = max(self._width - len(text), 0)
        self._width = len(text)
        self.stream.write("\r" + text + " " * pad)
        self.stream.flush()
