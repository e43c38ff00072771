"""Pull-through files: hits, misses, single flight, verification, metadata, eviction, bad paths."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

import aiohttp

from tests.conftest import MirrorFactory, RunningMirror
from tests.fakepypi import FakePyPI, build_sdist, build_wheel, wheel_metadata
from tests.fakepypi.model import FileRecord

JSON = "application/vnd.pypi.simple.v1+json"


def stored_files(mirror: RunningMirror) -> list[Path]:
    packages = mirror.root / "web" / "packages"
    return sorted(p for p in packages.rglob("*") if p.is_file()) if packages.exists() else []


def leftover_temp_files(mirror: RunningMirror) -> list[Path]:
    return list((mirror.root / "tmp").iterdir())


async def fetch_page(mirror: RunningMirror, project: str) -> dict[str, dict[str, object]]:
    status, _, body = await mirror.get(f"/simple/{project}/", headers={"Accept": JSON})
    assert status == 200
    return {f["filename"]: f for f in json.loads(body)["files"]}


async def test_miss_then_hit_with_range_head_etag_and_304(
    tmp_path: Path, upstream: FakePyPI, mirror: RunningMirror
) -> None:
    sdist = build_sdist(tmp_path, "demo", "1.0", pad_bytes=300_000)
    record = upstream.add_file("demo", sdist)
    await fetch_page(mirror, "demo")
    status, headers, body = await mirror.get(record.url_path)
    assert status == 200 and body == sdist.read_bytes()
    assert int(headers["Content-Length"]) == record.size
    assert "Content-Encoding" not in headers

    upstream.reset_log()
    status, headers, body = await mirror.get(record.url_path)
    assert status == 200 and body == sdist.read_bytes()
    assert headers["Accept-Ranges"] == "bytes"
    assert headers["Cache-Control"] == "max-age=365000000, immutable, public"
    assert "Content-Encoding" not in headers
    etag = headers["ETag"]
    assert etag.startswith('"')
    assert upstream.count("/packages/") == 0

    status, headers, body = await mirror.get(record.url_path, headers={"Range": "bytes=10-19"})
    assert status == 206 and body == sdist.read_bytes()[10:20]
    assert headers["Content-Range"] == f"bytes 10-19/{record.size}"
    status, _, _ = await mirror.get(record.url_path, headers={"Range": f"bytes={record.size + 5}-"})
    assert status == 416
    status, _, _ = await mirror.get(record.url_path, headers={"If-None-Match": etag})
    assert status == 304
    assert mirror.session is not None
    async with mirror.session.head(mirror.url + record.url_path.lstrip("/")) as resp:
        assert resp.status == 200
        assert int(resp.headers["Content-Length"]) == record.size


async def test_twenty_concurrent_misses_make_one_upstream_download(
    tmp_path: Path, upstream: FakePyPI, mirror: RunningMirror
) -> None:
    wheel = build_wheel(tmp_path, "popular", "1.0", pad_bytes=2_000_000)
    record = upstream.add_file("popular", wheel)
    await fetch_page(mirror, "popular")
    upstream.reset_log()
    upstream.delay = 0.2
    results = await asyncio.gather(*(mirror.get(record.url_path) for _ in range(20)))
    expected = wheel.read_bytes()
    assert [status for status, _, _ in results] == [200] * 20
    assert all(body == expected for _, _, body in results)
    assert upstream.count(record.url_path, "GET") == 1


async def test_tampered_download_is_never_completed_nor_stored(
    tmp_path: Path, upstream: FakePyPI, mirror: RunningMirror
) -> None:
    wheel = build_wheel(tmp_path, "victim", "1.0", pad_bytes=500_000)
    record = upstream.add_file("victim", wheel)
    await fetch_page(mirror, "victim")
    upstream.tamper_files = True
    await assert_no_complete_body(mirror, record)
    assert stored_files(mirror) == []
    assert leftover_temp_files(mirror) == []
    metrics = (await mirror.get("/metrics"))[2].decode()
    assert 'pypi_mirror_integrity_failures_total{kind="DigestMismatch"} 1.0' in metrics
    upstream.tamper_files = False
    status, _, body = await mirror.get(record.url_path)
    assert status == 200 and body == wheel.read_bytes()
    assert [p.name for p in stored_files(mirror)] == [wheel.name]


async def test_truncated_download_is_never_completed_nor_stored(
    tmp_path: Path, upstream: FakePyPI, mirror: RunningMirror
) -> None:
    sdist = build_sdist(tmp_path, "cut", "1.0", pad_bytes=500_000)
    record = upstream.add_file("cut", sdist)
    await fetch_page(mirror, "cut")
    upstream.truncate_files = True
    await assert_no_complete_body(mirror, record)
    assert stored_files(mirror) == []
    assert leftover_temp_files(mirror) == []
    upstream.truncate_files = False
    status, _, body = await mirror.get(record.url_path)
    assert status == 200 and body == sdist.read_bytes()


async def assert_no_complete_body(mirror: RunningMirror, record: FileRecord) -> None:
    """The client must see an error or a short body: never the full length."""
    assert mirror.session is not None
    try:
        async with mirror.session.get(mirror.url + record.url_path.lstrip("/")) as resp:
            if resp.status != 200:
                assert resp.status in (502, 504)
                return
            body = await resp.read()
            assert len(body) < record.size, "a complete unverified body reached the client"
    except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
        return


async def test_upstream_metadata_is_cached_and_verified(
    tmp_path: Path, upstream: FakePyPI, mirror: RunningMirror
) -> None:
    wheel = build_wheel(tmp_path, "meta", "1.0", requires_dist=["dep>=1"])
    record = upstream.add_file("meta", wheel)
    await fetch_page(mirror, "meta")
    status, _, body = await mirror.get(record.url_path + ".metadata")
    assert status == 200 and body == wheel_metadata(wheel)
    upstream.reset_log()
    status, _, body = await mirror.get(record.url_path + ".metadata")
    assert status == 200 and upstream.count("/packages/") == 0


async def test_metadata_is_extracted_from_the_wheel_when_upstream_has_none(
    tmp_path: Path, upstream: FakePyPI, mirror: RunningMirror
) -> None:
    wheel = build_wheel(tmp_path, "nometa", "1.0", requires_dist=["dep>=1"])
    record = upstream.add_file("nometa", wheel, serve_metadata=False)
    page = await fetch_page(mirror, "nometa")
    assert page[wheel.name]["core-metadata"] is False
    status, _, _ = await mirror.get(record.url_path)
    assert status == 200
    page = await fetch_page(mirror, "nometa")
    core = page[wheel.name]["core-metadata"]
    assert isinstance(core, dict)
    status, _, body = await mirror.get(record.url_path + ".metadata")
    assert status == 200 and body == wheel_metadata(wheel)
    assert core["sha256"] == hashlib.sha256(body).hexdigest()
    html = (await mirror.get("/simple/nometa/", headers={"Accept": "text/html"}))[2].decode()
    assert f'data-core-metadata="sha256={core["sha256"]}"' in html


async def test_uncached_file_during_outage_is_502_and_cached_file_still_served(
    tmp_path: Path, upstream: FakePyPI, make_mirror: MirrorFactory
) -> None:
    mirror = await make_mirror({"upstream": {"retries": 0}})
    one = upstream.add_file("two", build_wheel(tmp_path, "two", "1.0"))
    other = upstream.add_file("two", build_sdist(tmp_path, "two", "1.0"))
    await fetch_page(mirror, "two")
    assert (await mirror.get(one.url_path))[0] == 200
    await upstream.stop()
    assert (await mirror.get(one.url_path))[0] == 200
    status, _, body = await mirror.get(other.url_path)
    assert status == 502 and body.endswith(b"\n") and body.count(b"\n") == 1


async def test_stalled_upstream_times_out_cleanly(
    tmp_path: Path, upstream: FakePyPI, make_mirror: MirrorFactory
) -> None:
    mirror = await make_mirror({"upstream": {"retries": 0, "timeout": 0.5}})
    record = upstream.add_file("slow", build_sdist(tmp_path, "slow", "1.0", pad_bytes=100_000))
    await fetch_page(mirror, "slow")
    upstream.stall_files = True
    await assert_no_complete_body(mirror, record)
    assert stored_files(mirror) == []


async def test_file_not_listed_upstream_is_404(
    tmp_path: Path, upstream: FakePyPI, mirror: RunningMirror
) -> None:
    upstream.add_file("demo", build_wheel(tmp_path, "demo", "1.0"))
    fake = "/packages/aa/bb/" + "c" * 60 + "/demo-9.9-py3-none-any.whl"
    status, _, _ = await mirror.get(fake)
    assert status == 404
    status, _, _ = await mirror.get("/packages/aa/bb/" + "c" * 60 + "/nothing-1.0.tar.gz")
    assert status == 404


async def test_hostile_paths_are_rejected_without_touching_disk_outside_storage(
    mirror: RunningMirror,
) -> None:
    assert mirror.session is not None
    hostile = [
        "/packages/../../etc/passwd",
        "/packages/%2e%2e/%2e%2e/etc/passwd",
        "/packages/aa/bb/..%2f..%2f/etc/passwd",
        "/packages//etc/passwd",
        "/packages/aa/bb/" + "c" * 60 + "/%00evil.whl",
        "/packages/aa/bb/" + "c" * 60 + "/" + "x" * 5000 + ".whl",
        "/packages/AA/BB/" + "C" * 60 + "/demo-1.0.tar.gz",
        "/simple/" + "a" * 5000 + "/",
        "/simple/%2e%2e/",
        "/simple/..%2f..%2fetc/",
        "/pypi/../../etc/passwd/json",
        "/pypi/demo/..%2f..%2f/json",
    ]
    for path in hostile:
        url = mirror.url.rstrip("/") + path
        async with mirror.session.get(yarl_encoded(url), allow_redirects=False) as resp:
            body = await resp.read()
            assert 400 <= resp.status < 500, (path[:80], resp.status)
            assert b"root:" not in body


def yarl_encoded(url: str) -> object:
    import yarl

    return yarl.URL(url, encoded=True)


async def test_json_api_urls_point_at_the_mirror(
    tmp_path: Path, upstream: FakePyPI, mirror: RunningMirror
) -> None:
    record = upstream.add_file("demo", build_wheel(tmp_path, "demo", "1.0"))
    status, headers, body = await mirror.get("/pypi/demo/json")
    assert status == 200 and headers["Content-Type"] == "application/json"
    doc = json.loads(body)
    assert [f["url"] for f in doc["urls"]] == [record.url_path]
    assert [f["url"] for f in doc["releases"]["1.0"]] == [record.url_path]
    status, _, body = await mirror.get("/pypi/demo/1.0/json")
    assert status == 200 and json.loads(body)["urls"][0]["url"] == record.url_path
    assert (await mirror.get("/pypi/nothing/json"))[0] == 404
    assert (await mirror.get("/pypi/Demo/json"))[0] == 301


async def test_cache_is_kept_under_max_size_by_evicting_least_recently_used(
    tmp_path: Path, upstream: FakePyPI, make_mirror: MirrorFactory
) -> None:
    mirror = await make_mirror({"cache": {"max-size": 450_000, "evict-interval": 1}})
    records = [
        upstream.add_file("fat", build_sdist(tmp_path, "fat", f"1.{i}", pad_bytes=200_000))
        for i in range(3)
    ]
    await fetch_page(mirror, "fat")
    for record in records[:2]:
        assert (await mirror.get(record.url_path))[0] == 200
    assert (await mirror.get(records[0].url_path))[0] == 200  # 0 is now more recent than 1
    assert (await mirror.get(records[2].url_path))[0] == 200
    evictor = mirror.services.evictor
    assert evictor is not None
    await evictor.evict()
    names = {p.name for p in stored_files(mirror)}
    assert records[1].filename not in names
    assert {records[0].filename, records[2].filename} <= names
    assert evictor.total is not None and evictor.total <= 450_000


async def test_file_uploaded_after_the_page_was_cached_is_found(
    tmp_path: Path, upstream: FakePyPI, make_mirror: MirrorFactory
) -> None:
    mirror = await make_mirror({"serve": {"negative-ttl": 0}})
    upstream.add_file("grow", build_wheel(tmp_path, "grow", "1.0"))
    await fetch_page(mirror, "grow")
    late = upstream.add_file("grow", build_wheel(tmp_path, "grow", "2.0"))
    status, _, body = await mirror.get(late.url_path)
    assert status == 200 and len(body) == late.size


async def test_a_file_being_read_is_not_evicted(
    tmp_path: Path, upstream: FakePyPI, make_mirror: MirrorFactory
) -> None:
    mirror = await make_mirror({"cache": {"max-size": "1GB"}})
    record = upstream.add_file("held", build_sdist(tmp_path, "held", "1.0", pad_bytes=10_000))
    await fetch_page(mirror, "held")
    assert (await mirror.get(record.url_path))[0] == 200
    evictor = mirror.services.evictor
    assert evictor is not None
    evictor.max_size = 1
    rel = "web" + record.url_path
    async with mirror.services.files.reading(rel):
        await evictor.evict()
        assert (mirror.root / rel).exists()
    await evictor.evict()
    assert not (mirror.root / rel).exists()


async def test_a_made_up_legacy_filename_costs_few_upstream_requests(
    upstream: FakePyPI, mirror: RunningMirror
) -> None:
    name = "-".join(f"a{i}" for i in range(60)) + "-1.0.tar"
    status, _, _ = await mirror.get("/packages/ab/ab/" + "0" * 60 + "/" + name)
    assert status == 404
    assert upstream.count("/simple/") <= 3


async def test_client_hanging_up_on_a_miss_leaves_the_download_to_finish(
    tmp_path: Path, upstream: FakePyPI, mirror: RunningMirror
) -> None:
    big = build_sdist(tmp_path, "hangup", "1.0", pad_bytes=3_000_000)
    record = upstream.add_file("hangup", big)
    await fetch_page(mirror, "hangup")
    upstream.delay = 0.1
    assert mirror.session is not None
    async with mirror.session.get(mirror.url + record.url_path.lstrip("/")) as resp:
        assert resp.status == 200
        await resp.content.read(1000)
    # The first client gave up; the file is still fetched once, verified and served whole.
    status, _, body = await mirror.get(record.url_path)
    assert status == 200 and body == big.read_bytes()
    assert upstream.count(record.url_path) == 1
