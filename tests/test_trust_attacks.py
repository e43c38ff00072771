"""The attacks PEP 458 is about, tried against the real mirror in ``[tuf] mode = "verify"``.

Each test states what the attacker controls and what the mirror must do: refuse the new
content (an error to the client, nothing stored, an ``integrity`` event and metric), keep
serving what it verified before, and report the state in /health.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import MirrorFactory
from tests.fakepypi import FakePyPI, build_wheel
from tests.tufrepo import TufRepo
from tests.tufrepo.support import (
    download,
    health,
    integrity_failures,
    pip_install,
    stored_packages,
    tuf_mirror,
    uv_install,
)

JSON = "application/vnd.pypi.simple.v1+json"


def evil_wheel(tmp_path: Path, name: str = "demo", version: str = "1.0") -> Path:
    """Same filename as the real one, different bytes (it would run the attacker's code)."""
    return build_wheel(tmp_path / "evil", name, version, module_source='__version__ = "pwned"\n')


@pytest.mark.parametrize("shape", ["succinct", "bins"])
async def test_compromised_cdn_file_and_page_agree_but_not_with_signed_target(
    tmp_path: Path, upstream: FakePyPI, make_mirror: MirrorFactory, shape: str
) -> None:
    """``files`` scheme. The CDN serves other bytes at the signed file's URL and a page
    whose sha256 matches those bytes: the page and the file agree, only TUF knows better.
    Nothing is stored, the client gets an error, and pip and uv fail to install."""
    good = build_wheel(tmp_path / "dist", "demo", "1.0")
    record = upstream.add_file("demo", good)
    repo = TufRepo(upstream, shape=shape)  # type: ignore[arg-type]
    repo.add_file(record)
    repo.publish()
    evil = evil_wheel(tmp_path)
    digest = hashlib_hex(evil)
    record.source, record.size, record.sha256 = evil, evil.stat().st_size, digest
    mirror = await tuf_mirror(make_mirror, repo, tmp_path, "files")

    status, _, body = await mirror.get("/simple/demo/", headers={"Accept": JSON})
    assert status == 200
    assert json.loads(body)["files"][0]["hashes"]["sha256"] == digest  # the page agrees
    status, _, body = await mirror.get(record.url_path)
    assert status == 502, body
    assert b"signed target" in body
    assert stored_packages(mirror) == []
    assert integrity_failures(mirror) >= 1

    code, out = await pip_install(mirror, tmp_path / "pip-target", "demo")
    assert code != 0, out
    assert not (tmp_path / "pip-target" / "demo").exists()
    code, out = await uv_install(mirror, tmp_path / "uv-target", "demo")
    assert code != 0, out
    assert not (tmp_path / "uv-target" / "demo").exists()
    assert stored_packages(mirror) == []


async def test_compromised_cdn_unsigned_file_under_its_own_path_has_no_target(
    tmp_path: Path, upstream: FakePyPI, make_mirror: MirrorFactory
) -> None:
    """The CDN swaps the listed file for another one at that file's own (self-consistent)
    blake2b path: the path has no signed target, even after a refresh."""
    good = build_wheel(tmp_path / "dist", "demo", "1.0")
    repo = TufRepo(upstream)
    repo.add_file(upstream.add_file("demo", good))
    repo.publish()
    upstream.remove_file("demo", good.name)
    evil = upstream.add_file("demo", evil_wheel(tmp_path))
    mirror = await tuf_mirror(make_mirror, repo, tmp_path, "files")

    status, _, body = await mirror.get(evil.url_path)
    assert status == 502, body
    assert b"no signed TUF target" in body
    assert stored_packages(mirror) == []
    code, out = await pip_install(mirror, tmp_path / "pip-target", "demo")
    assert code != 0, out


async def test_compromised_cdn_in_index_scheme_page_does_not_match_its_hash(
    tmp_path: Path, upstream: FakePyPI, make_mirror: MirrorFactory
) -> None:
    """``index`` scheme. The CDN serves, at the signed page's URL, a page listing the
    attacker's wheel (and that wheel): the page fails its hash, nothing is stored."""
    good = build_wheel(tmp_path / "dist", "demo", "1.0")
    record = upstream.add_file("demo", good)
    repo = TufRepo(upstream)
    repo.add_index("demo")
    repo.publish()
    signed_page = repo.page_for("demo")
    evil = evil_wheel(tmp_path)
    record.source, record.size, record.sha256 = evil, evil.stat().st_size, hashlib_hex(evil)
    evil_page = repo.page_for("demo")
    assert evil_page != signed_page
    [page_url] = [p for p in upstream.static if p.startswith("/simple/demo/")]
    upstream.add_static(page_url, evil_page, "text/html")
    mirror = await tuf_mirror(make_mirror, repo, tmp_path, "index")

    status, _, body = await mirror.get("/simple/demo/")
    assert status == 502, body
    assert b"does not match its signed TUF target" in body
    assert not (mirror.root / "web" / "simple" / "demo").exists()
    status, _, _ = await mirror.get(record.url_path)
    assert status == 502
    assert stored_packages(mirror) == []
    assert integrity_failures(mirror) >= 1
    code, out = await pip_install(mirror, tmp_path / "pip-target", "demo")
    assert code != 0, out
    code, out = await uv_install(mirror, tmp_path / "uv-target", "demo")
    assert code != 0, out


async def test_index_scheme_tampered_file_fails_the_verified_pages_sha256(
    tmp_path: Path, upstream: FakePyPI, make_mirror: MirrorFactory
) -> None:
    """With a verified page, a file altered in transit fails the page's sha256."""
    good = build_wheel(tmp_path / "dist", "demo", "1.0", pad_bytes=200_000)
    record = upstream.add_file("demo", good)
    repo = TufRepo(upstream)
    repo.add_index("demo")
    repo.publish()
    mirror = await tuf_mirror(make_mirror, repo, tmp_path, "index")
    upstream.tamper_files = True

    try:
        status, _, _ = await mirror.get(record.url_path)
    except Exception:  # the connection is aborted once the mismatch is known
        status = 0
    assert status != 200
    assert stored_packages(mirror) == []


async def test_freeze_expired_timestamp_refuses_new_files_and_keeps_serving_old_ones(
    tmp_path: Path, upstream: FakePyPI, make_mirror: MirrorFactory
) -> None:
    """An expired timestamp (a freeze attack replays one until it expires): new content is
    refused, what was verified before is still served, /health says so."""
    first = upstream.add_file("demo", build_wheel(tmp_path / "dist", "demo", "1.0"))
    repo = TufRepo(upstream)
    repo.add_file(first)
    repo.publish()
    mirror = await tuf_mirror(make_mirror, repo, tmp_path, "files", refresh_interval=0)
    status, _ = await download(mirror, first.url_path)
    assert status == 200
    _, _, trusted_timestamp = await mirror.get("/tuf/timestamp.json")

    second = upstream.add_file("demo", build_wheel(tmp_path / "dist", "demo", "2.0"))
    repo.add_file(second)
    repo.publish()
    repo.expire("timestamp")

    status, body = await download(mirror, second.url_path)
    assert status == 502, body
    assert b"expired" in body
    status, _ = await download(mirror, first.url_path)
    assert status == 200
    assert [p.name for p in stored_packages(mirror)] == [Path(first.url_path).name]
    report = await health(mirror)
    assert report["status"] == "degraded"
    assert report["tuf"]["state"] == "refused" and report["tuf"]["error_kind"] == "expired"
    _, _, served = await mirror.get("/tuf/timestamp.json")
    assert served == trusted_timestamp


@pytest.mark.parametrize("attack", ["older-snapshot", "replayed-timestamp"])
async def test_rollback_is_refused_across_a_restart(
    tmp_path: Path, upstream: FakePyPI, make_mirror: MirrorFactory, attack: str
) -> None:
    """After trusting snapshot v2 the mirror restarts and is shown v1 again, either through a
    new timestamp naming the older snapshot or a replayed old timestamp: refused, because
    the trusted metadata persisted in storage."""
    first = upstream.add_file("demo", build_wheel(tmp_path / "dist", "demo", "1.0"))
    repo = TufRepo(upstream)
    repo.add_file(first)
    repo.publish()
    old_snapshot = repo.published["snapshot"]
    replay_index = len(repo.timestamps) - 1
    second = upstream.add_file("demo", build_wheel(tmp_path / "dist", "demo", "2.0"))
    repo.add_file(second)
    repo.publish()
    mirror = await tuf_mirror(make_mirror, repo, tmp_path, "files", refresh_interval=0)
    assert (await download(mirror, second.url_path))[0] == 200
    trusted = (await health(mirror))["tuf"]["snapshot_version"]
    assert trusted > old_snapshot
    await mirror.stop()

    if attack == "older-snapshot":
        repo.rollback_snapshot(old_snapshot)
    else:
        repo.replay_timestamp(replay_index)
    await mirror.start()

    report = await health(mirror)
    assert report["tuf"]["state"] == "refused"
    assert report["tuf"]["error_kind"] == "rollback"
    assert report["tuf"]["snapshot_version"] is None  # nothing trusted in this process yet
    status, body = await download(mirror, first.url_path)  # not stored yet: new content
    assert status == 502 and b"rollback" in body, body
    assert (await download(mirror, second.url_path))[0] == 200  # verified before the restart

    # A mirror with empty storage has nothing to compare with and accepts it: the
    # protection above came from the metadata kept in storage.
    fresh = await tuf_mirror(
        make_mirror, repo, tmp_path, "files", storage=tmp_path / "fresh", refresh_interval=0
    )
    if attack == "older-snapshot":
        assert (await health(fresh))["tuf"]["state"] == "ok"


async def test_root_rotation_twice_is_followed(
    tmp_path: Path, upstream: FakePyPI, make_mirror: MirrorFactory
) -> None:
    """Root 1 → 2 → 3 with new root, timestamp and snapshot keys each time: the mirror,
    pinned to root 1, follows and keeps every root version under /tuf/."""
    first = upstream.add_file("demo", build_wheel(tmp_path / "dist", "demo", "1.0"))
    repo = TufRepo(upstream, shape="bins")
    repo.add_file(first)
    repo.publish()
    mirror = await tuf_mirror(make_mirror, repo, tmp_path, "files", refresh_interval=0)
    assert (await download(mirror, first.url_path))[0] == 200

    assert repo.rotate_root() == 2
    assert repo.rotate_root() == 3
    second = upstream.add_file("demo", build_wheel(tmp_path / "dist", "demo", "2.0"))
    repo.add_file(second)
    repo.publish()

    status, body = await download(mirror, second.url_path)
    assert status == 200, body
    report = (await health(mirror))["tuf"]
    assert report["state"] == "ok" and report["root_version"] == 3
    for version in (1, 2, 3):
        status, _, body = await mirror.get(f"/tuf/{version}.root.json")
        assert status == 200 and body == repo.roots[version]

    await mirror.stop()
    await mirror.start()
    assert (await health(mirror))["tuf"]["root_version"] == 3


async def test_missing_target_is_retried_once_after_a_refresh(
    tmp_path: Path, upstream: FakePyPI, make_mirror: MirrorFactory
) -> None:
    """A file newer than the trusted snapshot: the mirror refreshes once (even inside
    refresh-interval) and serves it if it is now signed; if not, it is an error."""
    first = upstream.add_file("demo", build_wheel(tmp_path / "dist", "demo", "1.0"))
    repo = TufRepo(upstream)
    repo.add_file(first)
    repo.publish()
    mirror = await tuf_mirror(make_mirror, repo, tmp_path, "files")  # refresh-interval 300
    assert (await download(mirror, first.url_path))[0] == 200

    second = upstream.add_file("demo", build_wheel(tmp_path / "dist", "demo", "2.0"))
    upstream.reset_log()
    status, body = await download(mirror, second.url_path)
    assert status == 502 and b"no signed TUF target" in body, body
    assert upstream.count("/tuf/timestamp.json") == 1  # exactly one refresh, then refused
    assert [p.name for p in stored_packages(mirror)] == [Path(first.url_path).name]

    repo.add_file(second)
    repo.publish()
    upstream.reset_log()
    status, _ = await download(mirror, second.url_path)
    assert status == 200
    assert upstream.count("/tuf/timestamp.json") == 1
    assert (await health(mirror))["tuf"]["snapshot_version"] == repo.published["snapshot"]


@pytest.mark.parametrize("role", ["snapshot", "bin"])
async def test_signature_threshold_not_met_is_refused(
    tmp_path: Path, upstream: FakePyPI, make_mirror: MirrorFactory, role: str
) -> None:
    """A role that needs two signatures is published with one (one stolen key is not
    enough): the new metadata is refused, and so is the file it would vouch for."""
    thresholds = {"snapshot": 2} if role == "snapshot" else {"bins": 2}
    first = upstream.add_file("demo", build_wheel(tmp_path / "dist", "demo", "1.0"))
    repo = TufRepo(upstream, thresholds=thresholds)
    repo.add_file(first)
    repo.publish()
    mirror = await tuf_mirror(make_mirror, repo, tmp_path, "files", refresh_interval=0)
    assert (await download(mirror, first.url_path))[0] == 200

    second = upstream.add_file("demo", build_wheel(tmp_path / "dist", "demo", "2.0"))
    path = repo.add_file(second)
    repo.sign_only("snapshot" if role == "snapshot" else repo.role_for(path), 1)
    repo.publish()

    status, body = await download(mirror, second.url_path)
    assert status == 502, body
    assert b"threshold" in body
    assert [p.name for p in stored_packages(mirror)] == [Path(first.url_path).name]
    report = (await health(mirror))["tuf"]
    assert report["error_kind"] == "signature"
    if role == "snapshot":
        assert report["state"] == "refused"


def hashlib_hex(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


async def test_index_scheme_freeze_keeps_serving_the_verified_page(
    tmp_path: Path, upstream: FakePyPI, make_mirror: MirrorFactory
) -> None:
    """``index`` scheme under a freeze: the page verified before is still served (stale,
    never replaced by an unverified one); a page never verified is an error."""
    upstream.add_file("demo", build_wheel(tmp_path / "dist", "demo", "1.0"))
    upstream.add_file("other", build_wheel(tmp_path / "dist", "other", "1.0"))
    repo = TufRepo(upstream)
    repo.add_index("demo")
    repo.add_index("other")
    repo.publish()
    mirror = await tuf_mirror(make_mirror, repo, tmp_path, "index", refresh_interval=0)
    status, _, verified = await mirror.get("/simple/demo/")
    assert status == 200

    repo.expire("timestamp")
    status, _, body = await mirror.get("/simple/demo/")
    assert status == 200 and body == verified
    status, _, body = await mirror.get("/simple/other/")
    assert status == 502 and b"expired" in body, body
    assert not (mirror.root / "web" / "simple" / "other").exists()
    assert (await health(mirror))["tuf"]["state"] == "refused"
