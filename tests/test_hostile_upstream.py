"""An upstream that lies: malformed, oversized, mislabelled or redirecting pages.

A tiny aiohttp server on 127.0.0.1 answers each project with a crafted response; the mirror
must answer with a clear 502 (or its last good copy), store nothing bad, and never contact
another host.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from tests.conftest import MirrorFactory, free_port
from tests.fakepypi import FakePyPI, build_wheel

JSON_TYPE = "application/vnd.pypi.simple.v1+json"
SHA = "a" * 64


def page(name: str, files: list[dict[str, object]]) -> bytes:
    return json.dumps({"meta": {"api-version": "1.1"}, "name": name, "files": files}).encode()


class Hostile:
    def __init__(self) -> None:
        self.responses: dict[str, web.Response] = {}
        self.hits: list[str] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.hits.append(request.path)
        name = request.match_info["name"]
        response = self.responses.get(name)
        if response is None:
            raise web.HTTPNotFound()
        return response


@pytest.fixture
async def hostile() -> AsyncIterator[tuple[Hostile, str]]:
    state = Hostile()
    app = web.Application()
    app.router.add_get("/simple/{name}/", state.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield state, f"http://127.0.0.1:{port}/"
    await runner.cleanup()


def json_response(body: bytes) -> web.Response:
    return web.Response(body=body, content_type=JSON_TYPE)


@pytest.mark.parametrize(
    ("project", "body"),
    [
        ("broken", b'{"meta": {"api-version": "1.1"}, "name": "broken", "files": [{"filen'),
        (
            "wrongtypes",
            b'{"meta": {"api-version": "1.1"}, "name": "wrongtypes", "files": {"a": 1}}',
        ),
        (
            "traversal",
            page("traversal", [{"filename": "../../etc/passwd", "url": "x", "hashes": {}}]),
        ),
        ("someoneelse", page("requests", [])),
        ("notjson", b"\xff\xfe\x00garbage"),
        ("deep", b"[" * 100_000 + b"]" * 100_000),
    ],
)
async def test_malformed_pages_are_502_and_nothing_is_stored(
    hostile: tuple[Hostile, str], make_mirror: MirrorFactory, project: str, body: bytes
) -> None:
    state, url = hostile
    state.responses[project] = json_response(body)
    mirror = await make_mirror({"upstream": {"url": url, "retries": 0}})
    status, _, text = await mirror.get(f"/simple/{project}/")
    assert status == 502, text
    assert text.count(b"\n") == 1
    assert not (mirror.root / "web" / "simple" / project).exists()
    assert not (Path("/etc/passwd.metadata")).exists()


async def test_oversized_page_is_refused(
    hostile: tuple[Hostile, str], make_mirror: MirrorFactory
) -> None:
    state, url = hostile
    files = [
        {"filename": f"huge-1.{i}.tar.gz", "url": f"huge-1.{i}.tar.gz", "hashes": {"sha256": SHA}}
        for i in range(5000)
    ]
    state.responses["huge"] = json_response(page("huge", files))
    mirror = await make_mirror({"upstream": {"url": url, "max-page-size": "100KB"}})
    status, _, text = await mirror.get("/simple/huge/")
    assert status == 502 and b"max-page-size" in text


async def test_redirect_to_another_host_is_not_followed(
    hostile: tuple[Hostile, str], make_mirror: MirrorFactory
) -> None:
    state, url = hostile
    trap_port = free_port()
    state.responses["moved"] = web.Response(
        status=302, headers={"Location": f"http://127.0.0.2:{trap_port}/simple/moved/"}
    )
    mirror = await make_mirror({"upstream": {"url": url, "retries": 0}})
    status, _, text = await mirror.get("/simple/moved/")
    assert status == 502
    assert b"not one of the configured upstream hosts" in text


async def test_links_to_other_hosts_are_dropped(
    hostile: tuple[Hostile, str], make_mirror: MirrorFactory
) -> None:
    state, url = hostile
    files = [
        {
            "filename": "ok-1.0.tar.gz",
            "url": "../../files/ok-1.0.tar.gz",
            "hashes": {"sha256": SHA},
        },
        {
            "filename": "ok-2.0.tar.gz",
            "url": "http://evil.example/ok-2.0.tar.gz",
            "hashes": {"sha256": SHA},
        },
        {"filename": "ok-3.0.tar.gz", "url": "../../files/ok-3.0.tar.gz", "hashes": {}},
    ]
    state.responses["ok"] = json_response(page("ok", files))
    mirror = await make_mirror({"upstream": {"url": url}})
    status, _, body = await mirror.get("/simple/ok/", headers={"Accept": JSON_TYPE})
    assert status == 200
    served = json.loads(body)["files"]
    assert [f["filename"] for f in served] == ["ok-1.0.tar.gz"]
    assert served[0]["url"] == f"../../packages/{SHA[:2]}/{SHA[2:4]}/{SHA[4:]}/ok-1.0.tar.gz"


async def test_last_good_page_survives_a_later_malformed_answer(
    hostile: tuple[Hostile, str], make_mirror: MirrorFactory
) -> None:
    state, url = hostile
    good = [{"filename": "keep-1.0.tar.gz", "url": "keep-1.0.tar.gz", "hashes": {"sha256": SHA}}]
    state.responses["keep"] = json_response(page("keep", good))
    mirror = await make_mirror({"upstream": {"url": url, "retries": 0}, "serve": {"index-ttl": 0}})
    status, _, before = await mirror.get("/simple/keep/", headers={"Accept": JSON_TYPE})
    assert status == 200
    state.responses["keep"] = json_response(b'{"meta": {"api-version": "1.1"}, "name": "ke')
    status, _, after = await mirror.get("/simple/keep/", headers={"Accept": JSON_TYPE})
    assert status == 200 and after == before
    assert state.hits.count("/simple/keep/") == 2


async def test_html_only_upstream_is_parsed_and_served_in_both_formats(
    tmp_path: Path, upstream: FakePyPI, make_mirror: MirrorFactory
) -> None:
    upstream.html_only = True
    record = upstream.add_file("demo", build_wheel(tmp_path, "demo", "1.0", requires_python=">=3"))
    mirror = await make_mirror()
    status, headers, body = await mirror.get("/simple/demo/", headers={"Accept": JSON_TYPE})
    assert status == 200 and headers["Content-Type"] == JSON_TYPE
    file = json.loads(body)["files"][0]
    assert file["filename"] == "demo-1.0-py3-none-any.whl"
    assert file["hashes"] == {"sha256": record.sha256}
    assert file["requires-python"] == ">=3"
    assert file["core-metadata"] == {"sha256": record.metadata_sha256}
    assert (await mirror.get(record.url_path))[0] == 200
