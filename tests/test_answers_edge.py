"""Edges of the answers (issue 9): ``Range: bytes=-0`` is a 416 wherever a file is
answered (held on disk, held in memory, on its way), other ranges are unchanged; and an
error answer's body is one short line whatever garbage the upstream sent."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from tests.conftest import MirrorFactory, free_port
from tests.fakepypi import FakePyPI, build_wheel

EMPTY_SUFFIX = {"Range": "bytes=-0"}


@pytest.mark.parametrize("memory", ["0", "64MB"], ids=["from-disk", "from-memory"])
async def test_an_empty_suffix_range_of_a_held_file_is_416(
    tmp_path: Path, upstream: FakePyPI, make_mirror: MirrorFactory, memory: str
) -> None:
    record = upstream.add_file("demo", build_wheel(tmp_path, "demo", "1.0", pad_bytes=5000))
    mirror = await make_mirror({"serve": {"file-memory": memory}})
    assert (await mirror.get(record.url_path))[0] == 200  # held from now on
    for _ in range(2):  # (the second time from memory, where it is held there)
        status, headers, _ = await mirror.get(record.url_path, headers=EMPTY_SUFFIX)
        assert status == 416
        assert headers["Content-Range"] == f"bytes */{record.size}"
    status, headers, body = await mirror.get(record.url_path, headers={"Range": "bytes=-10"})
    assert status == 206 and body == record.source.read_bytes()[-10:]
    status, _, body = await mirror.get(record.url_path, headers={"Range": "bytes=0-9"})
    assert status == 206 and body == record.source.read_bytes()[:10]


async def test_an_empty_suffix_range_of_a_file_not_held_yet_is_416(
    tmp_path: Path, upstream: FakePyPI, make_mirror: MirrorFactory
) -> None:
    record = upstream.add_file("demo", build_wheel(tmp_path, "demo", "1.0", pad_bytes=200_000))
    mirror = await make_mirror()
    assert (await mirror.get("/simple/demo/"))[0] == 200
    status, headers, _ = await mirror.get(record.url_path, headers=EMPTY_SUFFIX)
    assert status == 416 and headers["Content-Range"] == f"bytes */{record.size}"


async def test_an_empty_suffix_range_of_a_json_api_answer_is_416(
    tmp_path: Path, upstream: FakePyPI, make_mirror: MirrorFactory
) -> None:
    upstream.add_file("demo", build_wheel(tmp_path, "demo", "1.0"))
    mirror = await make_mirror()
    status, _, body = await mirror.get("/pypi/demo/json")
    assert status == 200
    status, headers, _ = await mirror.get("/pypi/demo/json", headers=EMPTY_SUFFIX)
    assert status == 416 and headers["Content-Range"] == f"bytes */{len(body)}"


@pytest.fixture
async def garbage() -> AsyncIterator[tuple[dict[str, bytes], str]]:
    """An upstream answering each project page with the bytes the test puts in."""
    pages: dict[str, bytes] = {}

    async def page(request: web.Request) -> web.Response:
        body = pages.get(request.match_info["name"])
        if body is None:
            raise web.HTTPNotFound()
        return web.Response(body=body, content_type="application/vnd.pypi.simple.v1+json")

    app = web.Application()
    app.router.add_get("/simple/{name}/", page)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield pages, f"http://127.0.0.1:{port}/"
    await runner.cleanup()


def _page(name: str, **meta: object) -> dict[str, object]:
    return {"meta": {"api-version": "1.1", **meta}, "name": name, "files": []}


@pytest.mark.parametrize(
    "doc",
    [
        _page("demo", **{"api-version": "1." + "9" * 54_000}),
        _page("demo", **{"api-version": "x\n" * 27_000}),
        {**_page("demo"), "files": [{"filename": "a\r\n" * 20_000, "url": "u"}]},
        {**_page("demo"), "name": "n" * 54_000},
    ],
    ids=["long-version", "newlines", "long-filename", "long-name"],
)
async def test_a_502_is_one_short_line_whatever_the_upstream_sent(
    garbage: tuple[dict[str, bytes], str], make_mirror: MirrorFactory, doc: dict[str, object]
) -> None:
    pages, url = garbage
    pages["demo"] = json.dumps(doc).encode()
    mirror = await make_mirror({"upstream": {"url": url, "retries": 0}})
    status, _, body = await mirror.get("/simple/demo/")
    assert status == 502, body
    assert body.endswith(b"\n") and body.count(b"\n") == 1 and b"\r" not in body
    assert len(body) <= 512, len(body)
