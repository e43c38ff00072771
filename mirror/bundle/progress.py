"""One progress line on a terminal (rewritten in place, at most ten times a second);
nothing when stderr is not a terminal (the structlog events say what happened)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from mirror.sync.progress import human_bytes


class LineProgress:
    def __init__(self, verb: str, stream: TextIO | None = None, *, tty: bool | None = None) -> None:
        self.verb = verb
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.files = 0
        self.bytes = 0
        self.projects = 0
        self.phase = ""
        self.started = time.monotonic()
        self._drawn = 0.0
        self._width = 0

    def file(self, size: int) -> None:
        self.files += 1
        self.bytes += size
        self.draw()

    def project(self) -> None:
        self.projects += 1
        self.draw()

    def set_phase(self, phase: str) -> None:
        self.phase = phase
        self.draw(force=True)

    def draw(self, *, force: bool = False) -> None:
        if not self.tty:
            return
        now = time.monotonic()
        if not force and now - self._drawn < 0.1:
            return
        self._drawn = now
        rate = human_bytes(self.bytes / max(now - self.started, 1e-6))
        text = (
            f"{self.verb}{' ' + self.phase if self.phase else ''}: projects {self.projects}  "
            f"files {self.files}  {human_bytes(self.bytes)}  {rate}/s"
        )
        pad = max(self._width - len(text), 0)
        self._width = len(text)
        self.stream.write("\r" + text + " " * pad)
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
