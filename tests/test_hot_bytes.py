"""Pages and small files held in memory: bounded, dropped when this process changes them,
re-read when another process did (within the recheck interval), and answered with the
same validators as from disk."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

from mirror.cache.hot import HotBytes, file_bytes, page_bytes
from mirror.core import layout
from mirror.storage.filesystem import FileSystemStorage
from tests.conftest import RunningMirror
from tests.fakepypi import FakePyPI, build_sdist
from tests.test_pullthrough_files import fetch_page


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_a_page_changed_by_another_process_is_seen_after_the_recheck(
    tmp_path: Path,
) -> None:
    storage = FileSystemStorage.open(tmp_path)
    clock = Clock()
    hot = HotBytes(storage, page_bytes, max_bytes=1 << 20, recheck=1.0, clock=clock)
    rel = layout.simple_page("demo", layout.PAGE_V1_JSON)
    await storage.write_bytes(rel, b'{"v": 1}' * 200)
    first = await hot.get(rel)
    assert first is not None and first.packed is not None
    assert gzip.decompress(first.packed) == first.plain
    os.utime(tmp_path / rel, (1, 1))  # another process's write, here only its mtime
    await storage.write_bytes(rel, b'{"v": 2}' * 200)  # the same size
    assert await hot.get(rel) is first  # within the recheck: memory is trusted
    clock.now = 1.5
    second = await hot.get(rel)
    assert second is not None and second.plain == b'{"v": 2}' * 200
    assert second.etag != first.etag
    hot.forget_project("demo")  # a write in this process: dropped at once
    await storage.delete(rel)
    assert await hot.get(rel) is None


async def test_memory_stays_under_its_bound_and_large_files_are_not_held(
    tmp_path: Path,
) -> None:
    storage = FileSystemStorage.open(tmp_path)
    hot = HotBytes(storage, file_bytes, max_bytes=10_000, max_entry=4_000)
    for n in range(10):
        await storage.write_bytes(f"web/packages/f{n}", bytes(3_000))
        assert await hot.get(f"web/packages/f{n}") is not None
        assert hot._bytes <= 10_000
    await storage.write_bytes("web/packages/big", bytes(5_000))
    assert await hot.get("web/packages/big") is None
    assert len(hot._entries) == 3


async def test_a_file_from_memory_has_the_validators_of_the_file_on_disk(
    tmp_path: Path, upstream: FakePyPI, mirror: RunningMirror
) -> None:
    sdist = build_sdist(tmp_path, "small", "1.0", pad_bytes=20_000)
    record = upstream.add_file("small", sdist)
    await fetch_page(mirror, "small")
    status, _, _ = await mirror.get(record.url_path)  # the miss
    assert status == 200
    status, memory, body = await mirror.get(record.url_path)  # a hit, from memory
    assert status == 200 and body == sdist.read_bytes()
    status, disk, part = await mirror.get(record.url_path, headers={"Range": "bytes=0-9"})
    assert status == 206 and part == body[:10]  # FileResponse
    assert memory["ETag"] == disk["ETag"]
    assert memory["Last-Modified"] == disk["Last-Modified"]
    status, _, _ = await mirror.get(record.url_path, headers={"If-None-Match": memory["ETag"]})
    assert status == 304
