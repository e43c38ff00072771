"""deploy/nginx.conf in front of the mirror: static hits from the web root, misses to the daemon."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import os
import shutil
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import MirrorFactory, RunningMirror, free_port
from tests.fakepypi import FakePyPI
from tests.nginx_support import nginx_config
from tests.sync_helpers import run_sync, sync_config
from tests.test_e2e_clients import installed_version, pip_install, publish_corpus, uv_install

NGINX = shutil.which("nginx") or next(
    (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()), None
)

if NGINX is None and os.environ.get("CI"):
    raise RuntimeError("nginx is missing: `make test` installs it (apt-get install nginx)")
pytestmark = pytest.mark.skipif(NGINX is None, reason="nginx not installed (make test installs it)")


@contextlib.asynccontextmanager
async def running_nginx(
    workdir: Path,
    web_root: Path,
    daemon_port: int,
    *,
    site_file: str = "nginx.conf",
    rewrite: Mapping[str, str] | None = None,
) -> AsyncIterator[str]:
    """nginx on deploy/nginx.conf (or ``site_file``, with ``rewrite``: see nginx_config) over
    ``web_root``, falling back to the daemon's port. Yields the plain-HTTP (port 80) URL."""
    assert NGINX is not None
    port = free_port()
    conf = nginx_config(workdir, web_root, daemon_port, port, site_file=site_file, rewrite=rewrite)
    log = str(workdir / "error.log")
    check = await asyncio.create_subprocess_exec(
        NGINX,
        "-t",
        "-c",
        str(conf),
        "-e",
        log,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await check.communicate()
    assert check.returncode == 0, out.decode()
    proc = await asyncio.create_subprocess_exec(NGINX, "-c", str(conf), "-e", log)
    url = f"http://127.0.0.1:{port}/"
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(200):
                try:
                    async with session.get(url + "simple/", allow_redirects=False):
                        break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        await proc.wait()


@pytest.fixture
async def nginx(tmp_path: Path, mirror: RunningMirror) -> AsyncIterator[str]:
    async with running_nginx(tmp_path / "nginx", mirror.root / "web", mirror.port) as url:
        yield url


class Via:
    """The mirror as seen through nginx (same interface the client helpers use)."""

    def __init__(self, url: str, root: Path) -> None:
        self.url = url
        self.index_url = url + "simple/"
        self.root = root


async def test_pip_and_uv_install_through_nginx_and_hits_are_static(
    tmp_path: Path, upstream: FakePyPI, mirror: RunningMirror, nginx: str
) -> None:
    publish_corpus(tmp_path, upstream)
    via = Via(nginx, mirror.root)
    code, out = await pip_install(via, tmp_path / "v1", "e2e-app")  # type: ignore[arg-type]
    assert code == 0, out
    assert await installed_version(tmp_path / "v1", "e2e_dep") == "1.0"

    # Everything pip needed is now in the web root: uv is served by nginx alone.
    await mirror.stop()
    code, out = await uv_install(via, tmp_path / "v2", "e2e-app")  # type: ignore[arg-type]
    assert code == 0, out
    assert await installed_version(tmp_path / "v2", "e2e_app") == "1.0"


async def test_nginx_negotiates_types_and_serves_precompressed_pages(
    tmp_path: Path, upstream: FakePyPI, mirror: RunningMirror, nginx: str
) -> None:
    publish_corpus(tmp_path, upstream)
    assert (await mirror.get("/simple/e2e-dep/"))[0] == 200
    assert (await mirror.get("/simple/"))[0] == 200
    json_type = "application/vnd.pypi.simple.v1+json"
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        async with session.get(
            nginx + "simple/e2e-dep/", headers={"Accept": json_type, "Accept-Encoding": "identity"}
        ) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"] == json_type
            page = json.loads(await resp.read())
            assert page["name"] == "e2e-dep"
        async with session.get(
            nginx + "simple/e2e-dep/", headers={"Accept": "text/html", "Accept-Encoding": "gzip"}
        ) as resp:
            assert resp.headers["Content-Type"].startswith("text/html")
            body = await resp.read()
            if resp.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            assert b"e2e_dep-1.0-py3-none-any.whl" in body
        async with session.get(nginx + "simple/E2E_Dep/", allow_redirects=False) as resp:
            assert resp.status == 301 and resp.headers["Location"].endswith("/simple/e2e-dep/")
        wheel = page["files"][0]["url"].removeprefix("../../")
        async with session.get(nginx + wheel, headers={"Range": "bytes=0-3"}) as resp:
            assert resp.status == 206 and await resp.read() == b"PK\x03\x04"


async def test_pip_and_uv_install_from_a_synced_tree_served_by_nginx(
    tmp_path: Path, upstream: FakePyPI, make_mirror: MirrorFactory
) -> None:
    """bandersnatch-style: `sync` builds the web root, nginx serves it with the daemon offline."""
    publish_corpus(tmp_path, upstream)
    root = tmp_path / "synced"
    result = await run_sync(sync_config(upstream, root))
    assert result.ok, result.reason
    await upstream.stop()
    offline = await make_mirror({"serve": {"offline": True}}, storage=root)
    async with running_nginx(tmp_path / "nginx-synced", root / "web", offline.port) as url:
        via = Via(url, root)
        code, out = await pip_install(via, tmp_path / "p", "e2e-app", "e2e-plain")  # type: ignore[arg-type]
        assert code == 0, out
        assert await installed_version(tmp_path / "p", "e2e_dep") == "1.0"
        await offline.stop()  # uv gets everything from nginx alone
        code, out = await uv_install(via, tmp_path / "u", "e2e-app", "e2e-plain")  # type: ignore[arg-type]
        assert code == 0, out
        assert await installed_version(tmp_path / "u", "e2e_plain") == "0.3"
