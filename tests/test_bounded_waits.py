"""Bounded waits: what the mirror holds is answered within a bounded time whatever the
upstream does (hung, refusing, failing), the circuit breaker opens and closes, uncached
requests fail clearly within ``[upstream] timeout``, the changelog follower is on by
default, and the negative cache is bounded."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from mirror.cache import pages as pages_module
from mirror.cache.breaker import BreakerState, CircuitBreaker
from mirror.config import config_from_mapping
from mirror.server.keys import METRICS
from tests.conftest import MirrorFactory, RunningMirror
from tests.fakepypi import FakePyPI, build_sdist, build_wheel

JSON = "application/vnd.pypi.simple.v1+json"


async def timed_get(mirror: RunningMirror, path: str, **kwargs: Any) -> tuple[int, bytes, float]:
    started = time.monotonic()
    status, _headers, body = await mirror.get(path, **kwargs)
    return status, body, time.monotonic() - started


async def versions(mirror: RunningMirror, project: str) -> list[str]:
    status, body, _ = await timed_get(mirror, f"/simple/{project}/", headers={"Accept": JSON})
    assert status == 200, body
    found: list[str] = json.loads(body)["versions"]
    return found


async def until(check: Callable[[], Awaitable[bool]], seconds: float = 15.0) -> None:
    """Poll ``check`` (bounded) until it holds."""
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def health(mirror: RunningMirror) -> dict[str, Any]:
    status, _headers, body = await mirror.get("/health")
    assert status == 200
    data: dict[str, Any] = json.loads(body)
    return data


def metric(mirror: RunningMirror, name: str) -> float | None:
    assert mirror.app is not None
    return mirror.app[METRICS].registry.get_sample_value(name)


def publish(tmp_path: Path, upstream: FakePyPI, *projects: str) -> None:
    for project in projects:
        upstream.add_file(project, build_wheel(tmp_path / "dist", project, "1.0"))


async def test_stale_page_with_a_hung_upstream_is_served_within_revalidate_timeout(
    tmp_path: Path, upstream: FakePyPI, make_mirror: MirrorFactory
) -> None:
    """The upstream accepts and never answers: the stale page comes after
    ``revalidate-timeout``, the next request for it at once (no second wait, no second
    upstream request), and once the upstream answers again the background revalidation
    serves the next request."""
    publish(tmp_path, upstream, "demo")
    mirror = await make_mirror(
        {
            "serve": {"index-ttl": 0, "revalidate-timeout": 0.5, "breaker-failures": 0},
            "upstream": {"timeout": 2.0, "retries": 3},
        }
    )
    assert await versions(mirror, "demo") == ["1.0"]
    upstream.hang = True
    upstream.add_file("demo", build_wheel(tmp_path / "dist", "demo", "2.0"))
    upstream.reset_log()

    status, body, took = await timed_get(mirror, "/simple/demo/", headers={"Accept": JSON})
    assert status == 200 and json.loads(body)["versions"] == ["1.0"]
    assert 0.4 < took < 1.5, took
    status, body, took = await timed_get(mirror, "/simple/demo/", headers={"Accept": JSON})
    assert status == 200 and json.loads(body)["versions"] == ["1.0"]
    assert took < 0.3, took
    assert upstream.count("/simple/demo/") == 1  # the retries are the background's own

    upstream.hang = False  # the hung attempt times out (2 s); the retry is answered
    await until(lambda: _has_version(mirror, "demo", "2.0"))


async def test_stale_page_with_a_refusing_upstream_is_served_without_waiting_for_retries(
    tmp_path: Path, upstream: FakePyPI, make_mirror: MirrorFactory
) -> None:
    """Connections refused, three retries with backoff (at least 0.875 s in all): the
    stored page is served as soon as the first attempt failed; the retries go on in the
    background and never stack behind the waiting client."""
    publish(tmp_path, upstream, "demo")
    mirror = await make_mirror(
        {"serve": {"index-ttl": 0, "breaker-failures": 0}, "upstream": {"retries": 3}}
    )
    assert await versions(mirror, "demo") == ["1.0"]
    await upstream.stop()
    status, body, took = await timed_get(mirror, "/simple/demo/", headers={"Accept": JSON})
    assert status == 200 and json.loads(body)["versions"] == ["1.0"]
    assert took < 0.5, took


async def _has_version(mirror: RunningMirror, project: str, version: str) -> bool:
    return version in await versions(mirror, project)


async def test_json_api_and_root_list_with_a_hung_upstream_are_served_in_bounded_time(
    tmp_path: Path, upstream: FakePyPI, make_mirror: MirrorFactory
) -> None:
    """The JSON API answer and the root list wait on the upstream like pages do; a JSON
    answer whose page was just served stale is served at once."""
    publish(tmp_path, upstream, "demo")
    mirror = await make_mirror(
        {
            "serve": {"index-ttl": 0, "revalidate-timeout": 0.5, "breaker-failures": 0},
            "upstream": {"timeout": 5.0, "retries": 3},
        }
    )
    paths = ("/pypi/demo/json", "/pypi/demo/1.0/json", "/simple/")
    for path in paths:
        status, _body, _took = await timed_get(mirror, path)
        assert status == 200
    upstream.hang = True
    for path in paths:
        status, body, took = await timed_get(mirror, path)
        assert status == 200, (path, body)
        assert took < 1.5, (path, took)


async def test_uncached_page_with_a_hung_upstream_is_504_within_the_upstream_timeout(
    tmp_path: Path, upstream: FakePyPI, make_mirror: MirrorFactory
) -> None:
    """Nothing held: a clear one-line 504 after ``[upstream] timeout`` (not after every
    retry: four timeouts and backoffs here), and the same for the JSON API."""
    publish(tmp_path, upstream, "demo")
    mirror = await make_mirror({"upstream": {"timeout": 1.0, "retries": 3}})
    upstream.hang = True
    for path in ("/simple/demo/", "/pypi/other/json"):
        status, body, took = await timed_get(mirror, path)
        assert status == 504, (path, body)
        assert body.count(b"\n") == 1 and b"within 1 s" in body, body
        assert took < 2.0, (path, took)


async def test_circuit_breaker_opens_serves_stored_pages_at_once_and_closes_again(
    tmp_path: Path,
    upstream: FakePyPI,
    make_mirror: MirrorFactory,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Three upstream failures in a row open the breaker: stale pages are then served at
    once without asking the upstream, uncached ones still get a clear 502, and /health and
    the metrics say so; the probe in the background closes it when the upstream is back."""
    projects = [f"proj{i}" for i in range(6)]
    publish(tmp_path, upstream, *projects)
    mirror = await make_mirror(
        {
            "serve": {"index-ttl": 0, "breaker-failures": 3, "breaker-backoff": 2.0},
            "upstream": {"retries": 0},  # nothing left in flight that could answer first
        }
    )
    for project in projects:
        assert await versions(mirror, project) == ["1.0"]
    body = await health(mirror)
    assert body["status"] == "ok" and body["upstream_breaker"]["state"] == "closed"
    assert metric(mirror, "pypi_mirror_upstream_breaker_open") == 0

    upstream.outage = 503
    for project in projects[:3]:
        status, _body, took = await timed_get(mirror, f"/simple/{project}/")
        assert status == 200 and took < 2.5, took
    assert mirror.services.breaker.state is BreakerState.OPEN
    upstream.reset_log()
    for project in projects:
        status, _body, took = await timed_get(mirror, f"/simple/{project}/")
        assert status == 200 and took < 0.5, took
    assert upstream.count("/simple/") == 0  # nothing asked while open
    status, body, _took = await timed_get(mirror, "/simple/never-fetched/")
    assert status == 502 and body.count(b"\n") == 1
    body = await health(mirror)
    assert body["status"] == "degraded"
    assert body["upstream_breaker"]["state"] in ("open", "half-open")
    assert "503" in body["upstream_breaker"]["last_error"]
    assert metric(mirror, "pypi_mirror_upstream_breaker_open") == 1
    assert metric(mirror, "pypi_mirror_upstream_breaker_openings_total") == 1

    upstream.add_file("proj0", build_sdist(tmp_path / "dist", "proj0", "2.0"))
    upstream.outage = None

    async def closed() -> bool:
        return (await health(mirror))["upstream_breaker"]["state"] == "closed"

    await until(closed)
    assert "upstream_probe_started" in capsys.readouterr().out  # closed by the probe
    assert metric(mirror, "pypi_mirror_upstream_breaker_open") == 0
    assert (await health(mirror))["status"] == "ok"
    assert await versions(mirror, "proj0") == ["1.0", "2.0"]  # revalidated again


async def test_a_failed_revalidation_does_not_make_each_request_wait_again(
    tmp_path: Path, upstream: FakePyPI, make_mirror: MirrorFactory
) -> None:
    """One page whose revalidation failed is served as held for the back-off period,
    without a new upstream request, while the breaker stays closed."""
    publish(tmp_path, upstream, "demo")
    mirror = await make_mirror(
        {
            "serve": {"index-ttl": 0, "breaker-failures": 3, "breaker-backoff": 60},
            "upstream": {"retries": 0},
        }
    )
    await versions(mirror, "demo")
    before = await mirror.services.keeper.pages.record("demo")
    upstream.outage = 503
    await versions(mirror, "demo")
    upstream.reset_log()
    for _ in range(5):
        assert await versions(mirror, "demo") == ["1.0"]
    assert upstream.count("/simple/demo/") == 0
    assert mirror.services.breaker.state is BreakerState.CLOSED
    assert await mirror.services.keeper.pages.record("demo") == before  # nothing bumped


async def test_breaker_opens_after_failures_in_a_row_and_backs_off_after_failed_probes() -> None:
    """CLOSED → OPEN after ``threshold`` failures in a row (an answer in between resets
    the count); a probe that fails doubles the back-off; an answer closes it."""
    breaker = CircuitBreaker(threshold=2, backoff=0.05, probe_timeout=1.0)
    probes: list[str] = []

    async def failing() -> None:
        probes.append("fail")
        breaker.failed("a", "refused", failing)
        raise OSError("refused")

    breaker.failed("a", "refused", failing)
    breaker.succeeded("b")
    breaker.failed("a", "refused", failing)
    assert breaker.state is BreakerState.CLOSED
    assert not breaker.may_revalidate("a") and breaker.may_revalidate("b")
    breaker.failed("c", "refused", failing)
    assert breaker.state is BreakerState.OPEN and not breaker.may_revalidate("b")
    deadline = time.monotonic() + 5
    while len(probes) < 2:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    assert breaker.state is BreakerState.OPEN and breaker.backoff >= 0.2

    async def answering() -> None:
        breaker.succeeded("c")

    breaker.failed("c", "refused", answering, count=False)
    deadline = time.monotonic() + 5
    while breaker.state is not BreakerState.CLOSED:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    assert breaker.failures == 0 and breaker.backoff == 0.05
    await breaker.close()


async def test_negative_cache_is_in_memory_and_bounded(
    upstream: FakePyPI, mirror: RunningMirror, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unknown names are remembered (no upstream request for a repeat) up to a bound,
    oldest forgotten first, and nothing is written per name under state/."""
    monkeypatch.setattr(pages_module, "NEGATIVE_ENTRIES", 5)
    names = [f"unknown{i}" for i in range(8)]
    for name in names:
        status, _body, _took = await timed_get(mirror, f"/simple/{name}/")
        assert status == 404
    assert mirror.services.pages.negative_entries == 5
    assert not (mirror.root / "state" / "negative").exists()
    upstream.reset_log()
    for name in names[-5:]:
        assert (await timed_get(mirror, f"/simple/{name}/"))[0] == 404
    assert upstream.count("/simple/") == 0
    assert (await timed_get(mirror, f"/simple/{names[0]}/"))[0] == 404
    assert upstream.count(f"/simple/{names[0]}/") == 1  # forgotten: asked again


async def test_negative_files_left_by_an_earlier_version_are_removed_at_start(
    tmp_path: Path, make_mirror: MirrorFactory
) -> None:
    legacy = tmp_path / "store" / "state" / "negative"
    legacy.mkdir(parents=True)
    for i in range(50):
        (legacy / f"unknown{i}").write_bytes(b"")
    mirror = await make_mirror(storage=tmp_path / "store")

    async def gone() -> bool:
        return not legacy.exists() or not any(legacy.iterdir())

    await until(gone)
    assert (mirror.root / "state").is_dir()


def test_changelog_follower_is_on_by_default_in_cache_mode_only() -> None:
    def interval(sync: dict[str, Any]) -> int:
        config = config_from_mapping({"sync": sync}, source="test", env={})
        return config.sync.interval

    assert interval({}) == 60
    assert interval({"mode": "cache"}) == 60
    assert interval({"mode": "mirror"}) == 0
    assert interval({"interval": 0}) == 0
    assert interval({"mode": "mirror", "interval": 300}) == 300


async def test_follower_says_once_that_the_upstream_has_no_changelog(
    tmp_path: Path,
    upstream: FakePyPI,
    make_mirror: MirrorFactory,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """No XML-RPC upstream: one ``changelog_unavailable`` warning over several rounds,
    /health says so, and ``changelog_available`` when it is back."""
    upstream.xmlrpc_mode = "not_found"
    mirror = await make_mirror({"sync": {"interval": 1}})
    follower = mirror.services.follower
    assert follower is not None
    await asyncio.wait_for(follower.wait_rounds(3), 10)
    assert capsys.readouterr().out.count("changelog_unavailable") == 1
    changelog = (await health(mirror))["changelog"]
    assert changelog["state"] == "unavailable" and "404" in changelog["error"]

    upstream.xmlrpc_mode = "ok"
    await asyncio.wait_for(follower.wait_rounds(follower.rounds + 1), 10)
    assert "changelog_available" in capsys.readouterr().out
    assert (await health(mirror))["changelog"]["state"] == "following"
