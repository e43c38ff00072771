"""Line-oriented reading of a stored text file, streamed in batches (any backend)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from mirror.storage.base import Storage

CHUNK = 256 * 1024
BATCH = 2000


async def read_lines(storage: Storage, rel: str, batch: int = BATCH) -> AsyncIterator[list[str]]:
    """The non-empty lines of ``rel`` (stripped), ``batch`` at a time; nothing if missing."""
    reader = await storage.open_read(rel)
    if reader is None:
        return
    pending = b""
    lines: list[str] = []
    try:
        while True:
            chunk = await reader.read(CHUNK)
            if not chunk:
                break
            *complete, pending = (pending + chunk).split(b"\n")
            for raw in complete:
                line = raw.decode("utf-8", "replace").strip()
                if line:
                    lines.append(line)
            while len(lines) >= batch:
                yield lines[:batch]
                lines = lines[batch:]
        tail = pending.decode("utf-8", "replace").strip()
        if tail:
            lines.append(tail)
        if lines:
            yield lines
    finally:
        await reader.close()
