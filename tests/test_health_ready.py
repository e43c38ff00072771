"""``/healthz`` and ``/readyz`` against the real app: online, offline, an unwritable store,
refused TUF trust, and an open circuit breaker (with and without anything to serve)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from mirror.cache.breaker import BreakerState
from mirror.server.health import STORAGE_TTL
from tests.conftest import MirrorFactory, RunningMirror
from tests.fakepypi import FakePyPI, build_wheel
from tests.tufrepo import TufRepo
from tests.tufrepo.support import download, tuf_mirror


async def ready(mirror: RunningMirror) -> tuple[int, dict[str, Any]]:
    status, headers, body = await mirror.get("/readyz")
    assert headers["Content-Type"].startswith("application/json")
    data: dict[str, Any] = json.loads(body)
    return status, data


async def measured(mirror: RunningMirror) -> dict[str, Any]:
    """/health once the start-up walk of the cache has finished (bounded)."""
    deadline = time.monotonic() + 15
    while True:
        status, _, body = await mirror.get("/health")
        assert status == 200
        data: dict[str, Any] = json.loads(body)
        if data["cache_bytes"] is not None:
            return data
        assert time.monotonic() < deadline, "the cache's size never became known"
        await asyncio.sleep(0.05)


def failing(data: dict[str, Any]) -> dict[str, str]:
    return {
        name: check["reason"]
        for name, check in data["checks"].items()
        if check["status"] == "failing"
    }


async def cache_a_file(tmp_path: Path, upstream: FakePyPI, mirror: RunningMirror) -> None:
    record = upstream.add_file("demo", build_wheel(tmp_path / "dist", "demo", "1.0"))
    status, _, _ = await mirror.get("/simple/demo/")
    assert status == 200
    status, _, _ = await mirror.get(record.url_path)
    assert status == 200


async def test_healthz_is_alive_and_readyz_ready_online(
    tmp_path: Path, upstream: FakePyPI, make_mirror: MirrorFactory
) -> None:
    mirror = await make_mirror()
    status, _, body = await mirror.get("/healthz")
    assert status == 200 and json.loads(body)["status"] == "alive"
    await cache_a_file(tmp_path, upstream, mirror)
    await measured(mirror)
    status, data = await ready(mirror)
    assert status == 200, data
    assert data["status"] == "ready"
    assert set(data["checks"]) == {"storage", "upstream", "breaker", "trust"}
    assert all(check == {"status": "ok"} for check in data["checks"].values())
    assert not list((mirror.root / "state").glob("ready.*")), "the probe's file is deleted"


async def test_readyz_offline_is_ready_with_files_and_not_ready_without(
    tmp_path: Path, upstream: FakePyPI, make_mirror: MirrorFactory
) -> None:
    """Offline, the upstream is not a reason to fail; holding nothing to serve is."""
    storage = tmp_path / "store"
    online = await make_mirror(storage=storage)
    await cache_a_file(tmp_path, upstream, online)
    await online.stop()

    offline = await make_mirror({"serve": {"offline": True}}, storage=storage)
    await measured(offline)
    status, data = await ready(offline)
    assert status == 200 and data["status"] == "ready", data

    empty = await make_mirror({"serve": {"offline": True}}, storage=tmp_path / "empty")
    await measured(empty)
    status, data = await ready(empty)
    assert status == 503 and data["status"] == "not-ready"
    assert failing(data) == {"upstream": "offline, and the cache holds no file to serve"}


async def test_readyz_fails_while_the_store_takes_no_writes(
    tmp_path: Path, upstream: FakePyPI, make_mirror: MirrorFactory
) -> None:
    mirror = await make_mirror()
    status, _ = await ready(mirror)
    assert status == 200
    state = mirror.root / "state"
    state.rename(mirror.root / "state.moved")
    state.write_text("not a directory")  # also root cannot write below it
    try:
        await asyncio.sleep(STORAGE_TTL + 0.1)  # the last check's outcome has run out
        status, data = await ready(mirror)
        assert status == 503, data
        reason = failing(data)["storage"]
        assert reason.startswith(f"cannot write to {mirror.root}") and "\n" not in reason
    finally:
        state.unlink()
        (mirror.root / "state.moved").rename(state)
    await asyncio.sleep(STORAGE_TTL + 0.1)
    status, data = await ready(mirror)
    assert status == 200, data


async def test_readyz_fails_while_tuf_trust_is_refused(
    tmp_path: Path, upstream: FakePyPI, make_mirror: MirrorFactory
) -> None:
    """An expired timestamp (a freeze): new content is refused, so not ready (503)."""
    first = upstream.add_file("demo", build_wheel(tmp_path / "dist", "demo", "1.0"))
    repo = TufRepo(upstream)
    repo.add_file(first)
    repo.publish()
    mirror = await tuf_mirror(make_mirror, repo, tmp_path, "files", refresh_interval=0)
    status, _ = await download(mirror, first.url_path)
    assert status == 200
    status, data = await ready(mirror)
    assert status == 200 and data["checks"]["trust"] == {"status": "ok"}, data

    second = upstream.add_file("demo", build_wheel(tmp_path / "dist", "demo", "2.0"))
    repo.add_file(second)
    repo.publish()
    repo.expire("timestamp")
    status, _ = await download(mirror, second.url_path)
    assert status == 502
    status, data = await ready(mirror)
    assert status == 503 and data["status"] == "not-ready", data
    reason = failing(data)["trust"]
    assert reason.startswith("TUF metadata refused: new content is refused") and "expired" in reason


async def test_readyz_is_degraded_not_failing_while_the_breaker_is_open(
    tmp_path: Path, upstream: FakePyPI, make_mirror: MirrorFactory
) -> None:
    """The upstream is down and the breaker opened: stored copies are served, so the
    load balancer should keep sending traffic (200, "degraded")."""
    mirror = await make_mirror(
        {
            "serve": {"index-ttl": 0, "breaker-failures": 2, "breaker-backoff": 60},
            "upstream": {"retries": 0},
        }
    )
    await cache_a_file(tmp_path, upstream, mirror)
    upstream.add_file("other", build_wheel(tmp_path / "dist", "other", "1.0"))
    status, _, _ = await mirror.get("/simple/other/")
    assert status == 200
    await measured(mirror)
    await upstream.stop()
    for project in ("demo", "other"):  # two failures in a row (each key backs off alone)
        status, _, _ = await mirror.get(f"/simple/{project}/")
        assert status == 200
    assert mirror.services.breaker.state is BreakerState.OPEN
    status, data = await ready(mirror)
    assert status == 200 and data["status"] == "degraded", data
    breaker = data["checks"]["breaker"]
    assert breaker["status"] == "degraded"
    assert "circuit breaker open" in breaker["reason"]
    assert "stored copies are served" in breaker["reason"]
    assert data["checks"]["upstream"]["status"] == "degraded"
    assert data["checks"]["storage"] == {"status": "ok"}


async def test_readyz_fails_when_the_breaker_is_open_and_nothing_is_stored(
    tmp_path: Path, upstream: FakePyPI, make_mirror: MirrorFactory
) -> None:
    """Pages only (no file held) and the upstream hangs: nothing can be installed."""
    for project in ("demo", "other"):
        upstream.add_file(project, build_wheel(tmp_path / "dist", project, "1.0"))
    mirror = await make_mirror(
        {
            "serve": {
                "index-ttl": 0,
                "breaker-failures": 2,
                "breaker-backoff": 60,
                "revalidate-timeout": 0.3,
            },
            "upstream": {"retries": 0, "timeout": 1.0},
        }
    )
    for project in ("demo", "other"):
        status, _, _ = await mirror.get(f"/simple/{project}/")
        assert status == 200
    await measured(mirror)
    upstream.hang = True
    try:
        for project in ("demo", "other"):  # each waits out its revalidate-timeout
            status, _, _ = await mirror.get(f"/simple/{project}/")
            assert status == 200
        assert mirror.services.breaker.state is BreakerState.OPEN
        status, data = await ready(mirror)
        assert status == 503, data
        assert failing(data)["breaker"].endswith("and the cache holds no file to serve")
    finally:
        upstream.hang = False
