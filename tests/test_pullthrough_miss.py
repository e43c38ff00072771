"""A miss answered without waiting for what it does not need: HEAD from the index's size,
a range from the bytes already written — never the unverified tail of a file."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.conftest import RunningMirror
from tests.fakepypi import FakePyPI, build_sdist
from tests.test_pullthrough_files import fetch_page


async def test_head_of_an_uncached_file_answers_while_the_upstream_hangs(
    tmp_path: Path, upstream: FakePyPI, mirror: RunningMirror
) -> None:
    """uv sends a HEAD first: its answer must not wait for the download."""
    record = upstream.add_file("hung", build_sdist(tmp_path, "hung", "1.0", pad_bytes=50_000))
    await fetch_page(mirror, "hung")
    upstream.stall_files = True  # headers, then never a byte of the body
    assert mirror.session is not None
    async with (
        asyncio.timeout(4),
        mirror.session.head(mirror.url + record.url_path.lstrip("/")) as resp,
    ):
        assert resp.status == 200
        assert int(resp.headers["Content-Length"]) == record.size
        assert resp.headers["Accept-Ranges"] == "bytes"
        assert resp.headers["Content-Type"] == "application/octet-stream"


@pytest.mark.parametrize(
    ("header", "span"),
    [
        ("bytes=0-999", (0, 1000)),
        ("bytes=1000-", None),  # to the end: reaches the held-back tail
        ("bytes=-5000", (-5000, None)),  # the tail, as uv reads a wheel's zip directory
        ("bytes=20000-29999", (20000, 30000)),
    ],
)
async def test_a_range_of_an_uncached_file_is_the_files_own_bytes(
    tmp_path: Path,
    upstream: FakePyPI,
    mirror: RunningMirror,
    header: str,
    span: tuple[int, int | None] | None,
) -> None:
    sdist = build_sdist(tmp_path, "ranged", "1.0", pad_bytes=300_000)
    record = upstream.add_file("ranged", sdist)
    data = sdist.read_bytes()
    await fetch_page(mirror, "ranged")
    status, headers, body = await mirror.get(record.url_path, headers={"Range": header})
    assert status == 206, body[:200]
    expected = data[1000:] if span is None else data[span[0] : span[1]]
    assert body == expected
    first = len(data) - len(expected) if span is None or span[0] < 0 else span[0]
    assert headers["Content-Range"] == f"bytes {first}-{first + len(expected) - 1}/{len(data)}"
    status, _, whole = await mirror.get(record.url_path)  # and the file went on to the cache
    assert status == 200 and whole == data


async def test_a_range_into_the_tail_of_a_tampered_download_gets_no_bytes(
    tmp_path: Path, upstream: FakePyPI, mirror: RunningMirror
) -> None:
    record = upstream.add_file("bad", build_sdist(tmp_path, "bad", "1.0", pad_bytes=200_000))
    await fetch_page(mirror, "bad")
    upstream.tamper_files = True
    status, _, body = await mirror.get(record.url_path, headers={"Range": "bytes=-1000"})
    assert status == 502, body[:200]
    assert b"failed verification" in body
