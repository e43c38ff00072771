"""The cache's size is always known: walked once at start-up, then kept as files are
committed, pruned and evicted — with ``[cache] max-size`` unset or set, and summed over
two workers."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp

from mirror.core.layout import METADATA_SUFFIX
from tests.conftest import MirrorFactory, RunningMirror, free_port
from tests.fakepypi import FakePyPI, FileRecord, build_sdist, build_wheel
from tests.test_cli_serve import start_serve, wait_until_up

MEASURED = "pypi_mirror_cache_measured_timestamp_seconds"


def on_disk(root: Path) -> tuple[int, int]:
    """(bytes, distribution files) under web/packages, as ``du`` would count them."""
    files = [p for p in (root / "web" / "packages").rglob("*") if p.is_file()]
    return (
        sum(p.stat().st_size for p in files),
        sum(1 for p in files if not p.name.endswith(METADATA_SUFFIX)),
    )


def metric(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


async def health(mirror: RunningMirror) -> dict[str, Any]:
    status, _, body = await mirror.get("/health")
    assert status == 200
    data: dict[str, Any] = json.loads(body)
    return data


async def metrics(mirror: RunningMirror) -> str:
    status, _, body = await mirror.get("/metrics")
    assert status == 200
    return body.decode()


async def settled(mirror: RunningMirror, expected: tuple[int, int]) -> dict[str, Any]:
    """/health once it reports ``expected`` (bounded: the start-up walk runs behind)."""
    deadline = time.monotonic() + 15
    while True:
        data = await health(mirror)
        if (data["cache_bytes"], data["cache_files"]) == expected:
            return data
        assert time.monotonic() < deadline, (data["cache_bytes"], data["cache_files"], expected)
        await asyncio.sleep(0.05)


async def fetch(mirror: RunningMirror, project: str, record: FileRecord) -> None:
    status, _, _ = await mirror.get(f"/simple/{project}/")
    assert status == 200
    status, _, _ = await mirror.get(record.url_path)
    assert status == 200


async def test_size_without_max_size_is_walked_once_then_kept(
    tmp_path: Path, upstream: FakePyPI, make_mirror: MirrorFactory
) -> None:
    """max-size unset: /health and /metrics report what is on disk — what an earlier run
    left (the start-up walk), files added since, and files pruned when upstream drops
    them — without walking again."""
    first = upstream.add_file("demo", build_wheel(tmp_path / "dist", "demo", "1.0"))
    big = upstream.add_file(
        "demo", build_sdist(tmp_path / "dist", "demo", "1.0", pad_bytes=300_000)
    )
    storage = tmp_path / "store"
    earlier = await make_mirror(storage=storage)
    await fetch(earlier, "demo", first)
    await fetch(earlier, "demo", big)
    await earlier.stop()
    held = on_disk(storage)
    assert held[1] == 2 and held[0] > 300_000

    mirror = await make_mirror({"serve": {"index-ttl": 0}}, storage=storage)
    data = await settled(mirror, held)
    assert data["cache_max_bytes"] is None
    text = await metrics(mirror)
    assert metric(text, "pypi_mirror_cache_bytes") == held[0]
    assert metric(text, "pypi_mirror_cache_files") == 2
    walked_at = metric(text, MEASURED)
    assert walked_at

    second = upstream.add_file("other", build_wheel(tmp_path / "dist", "other", "2.0"))
    await fetch(mirror, "other", second)
    grown = on_disk(storage)
    assert grown[1] == 3
    await settled(mirror, grown)

    upstream.remove_file("demo", big.filename)
    status, _, _ = await mirror.get("/simple/demo/")  # revalidated: the sdist is pruned
    assert status == 200
    shrunk = on_disk(storage)
    assert shrunk[1] == 2 and shrunk[0] < grown[0] - 300_000
    await settled(mirror, shrunk)
    text = await metrics(mirror)
    assert metric(text, "pypi_mirror_cache_bytes") == shrunk[0]
    assert metric(text, MEASURED) == walked_at, "no walk since start-up"


async def test_size_with_max_size_follows_eviction(
    tmp_path: Path, upstream: FakePyPI, make_mirror: MirrorFactory
) -> None:
    records = [
        upstream.add_file(
            f"p{i}", build_sdist(tmp_path / "dist", f"p{i}", "1.0", pad_bytes=200_000)
        )
        for i in range(4)
    ]
    mirror = await make_mirror({"cache": {"max-size": 500_000, "evict-interval": 3600}})
    await settled(mirror, (0, 0))
    for i, record in enumerate(records):
        await fetch(mirror, f"p{i}", record)
    evictor = mirror.services.evictor
    assert evictor is not None
    await evictor.evict()  # (it woke by itself already when a commit went over)
    left = on_disk(mirror.root)
    assert left[1] < 4 and left[0] <= 500_000
    data = await settled(mirror, left)
    assert data["cache_max_bytes"] == 500_000
    assert metric(await metrics(mirror), "pypi_mirror_cache_bytes") == left[0]


async def test_two_workers_each_report_the_total(tmp_path: Path, upstream: FakePyPI) -> None:
    """Files fetched through both workers: every worker's /health and /metrics show the
    whole cache, what the earlier run left included."""
    records = [
        upstream.add_file(f"w{i}", build_wheel(tmp_path / "dist", f"w{i}", "1.0")) for i in range(8)
    ]
    data_dir = tmp_path / "data"
    port = free_port()
    config = tmp_path / "mirror.toml"
    config.write_text(
        f'[storage]\npath = "{data_dir}"\n'
        f'[upstream]\nurl = "{upstream.url}"\nfile-hosts = []\n'
        f'[serve]\nlisten = "127.0.0.1:{port}"\nworkers = 2\n'
        '[sync]\ninterval = 0\n[log]\nformat = "json"\nlevel = "warning"\n'
    )
    url = f"http://127.0.0.1:{port}/"

    async def get(path: str) -> tuple[int, bytes]:
        # A new connection each time, so that the kernel spreads them over the workers.
        connector = aiohttp.TCPConnector(force_close=True)
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.get(url + path.lstrip("/")) as resp,
        ):
            return resp.status, await resp.read()

    async def every_worker_reports(expected: tuple[int, int]) -> None:
        seen: dict[int, tuple[int, int]] = {}
        deadline = time.monotonic() + 20
        while {w for w, got in seen.items() if got == expected} != {0, 1}:
            assert time.monotonic() < deadline, (seen, expected)
            _, body = await get("/health")
            data = json.loads(body)
            seen[data["worker"]] = (data["cache_bytes"], data["cache_files"])
            _, body = await get("/metrics")
            assert metric(body.decode(), "pypi_mirror_cache_bytes") is not None
            await asyncio.sleep(0.05)
        _, body = await get("/metrics")
        assert metric(body.decode(), "pypi_mirror_cache_bytes") == expected[0]

    proc = await start_serve("serve", "-c", str(config))
    try:
        await wait_until_up(url, proc)
        for i, record in enumerate(records[:4]):
            assert (await get(f"/simple/w{i}/"))[0] == 200
            assert (await get(record.url_path))[0] == 200
        await every_worker_reports(on_disk(data_dir))
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0

    proc = await start_serve("serve", "-c", str(config))  # the walk finds the first four
    try:
        await wait_until_up(url, proc)
        for i, record in enumerate(records[4:], start=4):
            assert (await get(f"/simple/w{i}/"))[0] == 200
            assert (await get(record.url_path))[0] == 200
        held = on_disk(data_dir)
        assert held[1] == 8
        await every_worker_reports(held)
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0
