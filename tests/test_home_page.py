"""The page at ``/``: rendered by a real headless Chromium, what it shows; every value
escaped (a hostile ``Host`` header comes back as text, not markup); the sync state in
mirror mode."""

from __future__ import annotations

import asyncio
import html
import os
import re
import shutil
import time
from pathlib import Path

import pytest

from mirror.core import layout
from mirror.storage import open_storage
from mirror.sync.journal import LastRun, RunResult, SyncState, save_state
from tests.conftest import MirrorFactory, RunningMirror
from tests.fakepypi import FakePyPI, build_wheel

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def text_of(page: str, element_id: str) -> str:
    """The text inside the element with ``id`` (tags dropped, whitespace collapsed)."""
    match = re.search(rf'<(\w+)[^>]*\bid="{element_id}"[^>]*>(.*?)</\1>', page, re.S)
    assert match, f"no element #{element_id}"
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", match.group(2))).split())


async def dump_dom(url: str, profile: Path) -> str:
    """The DOM Chromium built from ``url`` (headless; no sandbox as root)."""
    assert CHROMIUM is not None
    args = [
        CHROMIUM,
        "--headless",
        "--disable-gpu",
        "--no-first-run",
        "--no-default-browser-check",
        f"--user-data-dir={profile}",
        "--dump-dom",
        url,
    ]
    if os.geteuid() == 0:
        args.insert(1, "--no-sandbox")
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    return out.decode()


async def served_files(mirror: RunningMirror, tmp_path: Path, upstream: FakePyPI) -> None:
    record = upstream.add_file("demo", build_wheel(tmp_path / "dist", "demo", "1.0"))
    for _ in range(2):
        assert (await mirror.get("/simple/demo/"))[0] == 200
    for _ in range(3):  # one miss, two hits
        assert (await mirror.get(record.url_path))[0] == 200
    deadline = time.monotonic() + 15
    while mirror.services.usage is None or mirror.services.usage.current() is None:
        assert time.monotonic() < deadline, "the cache was never measured"
        await asyncio.sleep(0.05)


@pytest.mark.skipif(
    CHROMIUM is None and os.geteuid() != 0,
    reason="chromium is not installed (make system-deps installs it as root: "
    "apt-get install chromium)",
)
async def test_home_page_in_headless_chromium_shows_what_the_mirror_is_doing(
    tmp_path: Path, upstream: FakePyPI, make_mirror: MirrorFactory
) -> None:
    assert CHROMIUM is not None, "chromium is missing: run 'make system-deps' (as root)"
    mirror = await make_mirror()
    await served_files(mirror, tmp_path, upstream)
    dom = await dump_dom(mirror.url, tmp_path / "chromium-profile")

    assert "<script" not in dom
    assert text_of(dom, "mode") == "pull-through cache"
    assert text_of(dom, "upstream") == upstream.url
    assert text_of(dom, "upstream-state") == "reachable"
    assert text_of(dom, "breaker") == "closed"
    size = text_of(dom, "cache-size")
    assert re.fullmatch(r"\d+ B in 1 file\(s\)", size), size
    assert text_of(dom, "hit-file") == "file 2 3 66.7 %"
    assert text_of(dom, "trust").startswith("off")
    assert text_of(dom, "follower").startswith("off")
    clients = text_of(dom, "clients")
    index_url = f"{mirror.url}simple/"
    assert f"pip install --index-url {index_url} PACKAGE" in clients
    assert f"uv pip install --index-url {index_url} PACKAGE" in clients
    assert f"poetry source add --priority=primary mirror {index_url}" in clients
    assert f"pdm config pypi.url {index_url}" in clients


async def test_a_hostile_host_header_comes_back_escaped(mirror: RunningMirror) -> None:
    hostile = 'evil"><script>alert(1)</script>'
    status, headers, body = await mirror.get("/", headers={"Host": hostile})
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    page = body.decode()
    assert "<script" not in page
    assert "evil&#34;&gt;&lt;script&gt;alert(1)&lt;/script&gt;/simple/" in page
    # Nothing the browser would fetch from elsewhere.
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)


async def test_home_page_in_mirror_mode_shows_the_last_run_and_the_lag(
    tmp_path: Path, make_mirror: MirrorFactory
) -> None:
    storage = tmp_path / "store"
    mirror = await make_mirror({"sync": {"mode": "mirror"}}, storage=storage)
    started = time.time() - 60
    await save_state(
        open_storage(mirror.config.storage),
        SyncState(
            serial=1200,
            last_run=LastRun(
                id="run-1",
                started=started,
                finished=started + 30,
                result=RunResult.INCOMPLETE,
                reason="1 project carried to the next run: <b>stale</b>",
                target=1234,
                projects=5,
                files=7,
                bytes=2_500_000,
            ),
        ),
    )
    status, _, body = await mirror.get("/")
    assert status == 200
    page = body.decode()
    assert text_of(page, "mode").startswith("mirror")
    assert text_of(page, "serial") == "1200"
    assert text_of(page, "lag") == "34 (upstream at 1234 when the run started)"
    run = text_of(page, "last-run")
    assert run.startswith("incomplete: started") and "5 project(s), 7 file(s), 2.5 MB" in run
    assert "&lt;b&gt;stale&lt;/b&gt;" in page and "<b>stale" not in page


async def test_home_page_in_cache_mode_shows_the_changelog_lag(
    tmp_path: Path, upstream: FakePyPI, make_mirror: MirrorFactory
) -> None:
    upstream.add_file("lagged", build_wheel(tmp_path, "lagged", "1.0"))
    upstream.add_file("lagged", build_wheel(tmp_path, "lagged", "1.1"))
    mirror = await make_mirror({"sync": {"interval": 3600}})  # one round, at start
    follower = mirror.services.follower
    assert follower is not None
    deadline = time.monotonic() + 15
    while follower.rounds < 1:
        assert time.monotonic() < deadline, "the follower did not finish a round"
        await asyncio.sleep(0.05)
    status, _, body = await mirror.get("/")
    assert status == 200
    page = body.decode()
    serial = follower.upstream_serial
    assert serial is not None and serial > 0
    assert text_of(page, "cursor") == str(serial)
    assert text_of(page, "cache-lag") == f"0 (upstream at {serial} when last asked)"
    # The cursor behind the upstream (as while a round is due): the page says by how much.
    (mirror.root / layout.CACHE_CURSOR).write_text(f"{serial - 1}\n")
    page = (await mirror.get("/"))[2].decode()
    assert text_of(page, "cache-lag") == f"1 (upstream at {serial} when last asked)"
