"""What `serve` writes: file bytes synced before every rename; the renames made durable by
a barrier once a second rather than one directory sync per file."""

from __future__ import annotations

import asyncio
from pathlib import Path

from mirror.storage.filesystem import FileSystemStorage
from tests.conftest import RunningMirror
from tests.fakepypi import FakePyPI, build_wheel


async def test_serve_makes_its_renames_durable_within_a_second(
    tmp_path: Path, upstream: FakePyPI, mirror: RunningMirror
) -> None:
    upstream.add_file("demo", build_wheel(tmp_path, "demo", "1.0"))
    storage = mirror.services.storage
    assert isinstance(storage, FileSystemStorage)
    status, _, _ = await mirror.get("/simple/demo/")
    assert status == 200
    for _ in range(60):  # the next barrier (a bounded wait)
        if not storage._dirty:
            break
        await asyncio.sleep(0.05)
    assert not storage._dirty
