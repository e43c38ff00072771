"""A 100 MB upstream page while other clients are served (issue 9).

``serve`` runs as its own process (so that its memory is its own to measure); the fake
upstream lists 215,000 made-up files for one project, about 100 MB of PEP 691 JSON. While
the mirror fetches, parses, filters and renders that page, other clients keep getting a
held page and a held file: none of them waits long, the page is served whole, and the
process never holds more than a small multiple of the page's size. (Before: every client
blocked for the whole 15 s, and 1.75 GB for a 120 MB page.)
"""

from __future__ import annotations

import asyncio
import signal
import statistics
import time
from pathlib import Path

import aiohttp

from tests.conftest import free_port
from tests.fakepypi import FakePyPI, build_wheel
from tests.test_cli_serve import start_serve, wait_until_up

PAGE_FILES = 215_000
JSON_ACCEPT = "application/vnd.pypi.simple.v1+json"
# Bounds the test asserts (the figures it prints are what to look at).
MAX_OTHER_LATENCY = 2.0  # seconds, any single request of another client
MAX_GROWTH = 6.0  # peak memory above the idle process, in page sizes


def _memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (the peak) of a process, in bytes."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0]) * 1024
    return found


def _serving_pid(pid: int) -> int:
    """The process that serves: ``pid``, or its one child when it supervises workers."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    found = children.read_text().split() if children.exists() else []
    return int(found[0]) if len(found) == 1 else pid


async def test_a_100_mb_upstream_page_blocks_no_one_and_takes_a_small_multiple_of_its_size(
    tmp_path: Path, upstream: FakePyPI
) -> None:
    small = upstream.add_file("small", build_wheel(tmp_path, "small", "1.0"))
    upstream.add_file("big", build_wheel(tmp_path, "big", "1.0"))
    upstream.synthetic_files["big"] = PAGE_FILES
    port = free_port()
    config = tmp_path / "mirror.toml"
    config.write_text(
        f'[storage]\npath = "{tmp_path / "data"}"\n'
        f'[upstream]\nurl = "{upstream.url}"\nfile-hosts = []\ntimeout = 120.0\n'
        f'[serve]\nlisten = "127.0.0.1:{port}"\nworkers = 1\n'
        '[sync]\ninterval = 0\n[log]\nlevel = "warning"\n'
    )
    url = f"http://127.0.0.1:{port}/"
    timeout = aiohttp.ClientTimeout(total=180)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        # The fake makes its page once, before anything is measured.
        async with session.get(upstream.url + "simple/big/", headers={"Accept": JSON_ACCEPT}) as r:
            page_size = len(await r.read())
        assert page_size > 95_000_000
        proc = await start_serve("serve", "-c", str(config))
        try:
            await wait_until_up(url, proc)
            for path in ("simple/small/", small.url_path.lstrip("/")):
                async with session.get(url + path) as resp:
                    assert resp.status == 200
            pid = _serving_pid(proc.pid)
            idle = _memory(pid)["VmRSS"]

            done = asyncio.Event()
            latencies: list[float] = []

            async def big() -> tuple[int, bytes]:
                try:
                    async with session.get(url + "simple/big/") as resp:
                        return resp.status, await resp.read()
                finally:
                    done.set()

            async def others() -> None:
                paths = ["simple/small/", small.url_path.lstrip("/")]
                while not done.is_set():
                    started = time.monotonic()
                    async with session.get(url + paths[len(latencies) % 2]) as resp:
                        assert resp.status == 200
                        await resp.read()
                    latencies.append(time.monotonic() - started)
                    await asyncio.sleep(0.01)

            began = time.monotonic()
            (status, body), _ = await asyncio.gather(big(), others())
            took = time.monotonic() - began
            peak = _memory(pid)["VmHWM"]
        finally:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.communicate(), 30)

    assert status == 200, body[:300]
    assert body.count(b"</a><br />") == PAGE_FILES + 1
    assert b">big-0.214999-py3-none-any.whl</a>" in body
    growth = (peak - idle) / page_size
    print(
        f"page {page_size / 1e6:.0f} MB in {took:.1f} s; other clients: {len(latencies)} "
        f"requests, median {statistics.median(latencies) * 1000:.0f} ms, "
        f"max {max(latencies) * 1000:.0f} ms; memory idle {idle / 1e6:.0f} MB, "
        f"peak {peak / 1e6:.0f} MB ({growth:.1f}x the page above idle)"
    )
    assert len(latencies) >= 20
    assert max(latencies) < MAX_OTHER_LATENCY
    assert growth < MAX_GROWTH
