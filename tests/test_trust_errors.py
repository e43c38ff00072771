"""Errors inside the trust layer: known ones are translated, anything else is a bug.

A bug (an exception of a type the trust layer does not know) is no verdict on the
metadata: it reaches the caller as it is, with its traceback, the trust state does not
become "refused", and new content is accepted again once a refresh works. These tests
drive a real ``TufTrust`` over a real store and a real TUF repository served by FakePyPI,
without the web app.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from tuf.api import exceptions as tuf_exceptions

from mirror.config import TufTargets, config_from_mapping
from mirror.core import layout
from mirror.errors import (
    MirrorError,
    StorageError,
    TrustError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from mirror.storage import FileSystemStorage
from mirror.trust.base import TrustState
from mirror.trust.fetcher import LoopFetcher
from mirror.trust.service import TufTrust
from mirror.trust.translate import map_errors, translate
from mirror.upstream.client import UpstreamClient
from tests.conftest import MirrorFactory
from tests.fakepypi import FakePyPI, build_wheel
from tests.tufrepo import TufRepo
from tests.tufrepo.support import download, health, tuf_mirror


class BuggyFetcher(LoopFetcher):
    """The mirror's fetcher with a bug switched on: every download raises RuntimeError."""

    buggy = False

    async def _get(self, url: str, max_length: int) -> bytes:
        if self.buggy:
            raise RuntimeError(f"boom while fetching {url}")
        return await super()._get(url, max_length)


@asynccontextmanager
async def verifying_trust(
    tmp_path: Path, upstream: FakePyPI, repo: TufRepo, store: FileSystemStorage | None = None
) -> AsyncIterator[tuple[TufTrust, BuggyFetcher]]:
    """A ``TufTrust`` as ``serve`` opens it (``files`` scheme, refresh-interval 300 s),
    pinned to ``repo``'s first root, with its fetcher replaced by a :class:`BuggyFetcher`."""
    root = tmp_path / "pinned-root.json"
    root.write_bytes(repo.root_bytes)
    config = config_from_mapping(
        {
            "storage": {"path": str(tmp_path / "store")},
            "upstream": {"url": upstream.url, "file-hosts": [], "timeout": 5.0, "retries": 0},
            "tuf": {"mode": "verify", "root": str(root), "targets": "files"},
        },
        source="test",
        env={},
    )
    storage = store or FileSystemStorage.open(config.storage.path)
    session = UpstreamClient.make_session(config.upstream)
    try:
        trust = await TufTrust.open(config, storage, session)
        real = trust.core.fetcher
        fetcher = BuggyFetcher(real.loop, real.upstream, real.deadline)
        trust.core.fetcher = fetcher
        try:
            yield trust, fetcher
        finally:
            await trust.close()
    finally:
        await session.close()


def signed_file(tmp_path: Path, upstream: FakePyPI, repo: TufRepo, version: str) -> tuple[str, int]:
    """A new wheel of ``demo``, signed and published: its target path and length."""
    record = upstream.add_file("demo", build_wheel(tmp_path / "dist", "demo", version))
    path = repo.add_file(record)
    repo.publish()
    return path, record.size


async def test_a_bug_inside_a_refresh_propagates_and_refuses_nothing(
    tmp_path: Path, upstream: FakePyPI
) -> None:
    """A RuntimeError in the middle of a refresh reaches the caller as a RuntimeError (not
    TrustError), the state is "stale" (not "refused"), what was trusted before is still
    answered, and the new file is accepted once the refresh works again."""
    repo = TufRepo(upstream)
    first, first_length = signed_file(tmp_path, upstream, repo, "1.0")
    async with verifying_trust(tmp_path, upstream, repo) as (trust, fetcher):
        await trust.refresh()
        assert (await trust.file_target(first)).length == first_length
        second, second_length = signed_file(tmp_path, upstream, repo, "2.0")

        fetcher.buggy = True
        with pytest.raises(RuntimeError, match="boom") as info:
            await trust.refresh()
        assert not isinstance(info.value, MirrorError)
        status = trust.status()
        assert status["state"] == TrustState.STALE != TrustState.REFUSED
        assert status["error_kind"] == "internal"
        assert "boom" in str(status["last_error"])
        recorded = json.loads((tmp_path / "store" / layout.TUF_STATUS).read_bytes())
        assert recorded["state"] == "stale"

        assert (await trust.file_target(first)).length == first_length  # not blocked
        with pytest.raises(RuntimeError, match="boom"):
            await trust.file_target(second)  # missing → one refresh → the bug again

        fetcher.buggy = False
        assert (await trust.file_target(second)).length == second_length
        status = trust.status()
        assert status["state"] == "ok" and status["last_error"] is None
        assert status["snapshot_version"] == repo.published["snapshot"]


async def test_a_bug_in_the_first_refresh_leaves_trust_unavailable_not_refused(
    tmp_path: Path, upstream: FakePyPI
) -> None:
    """With nothing trusted yet, a bug makes the state "unavailable"; it is raised as it
    is each time a refresh hits it, and trust works as soon as the refresh does."""
    repo = TufRepo(upstream)
    path, length = signed_file(tmp_path, upstream, repo, "1.0")
    async with verifying_trust(tmp_path, upstream, repo) as (trust, fetcher):
        fetcher.buggy = True
        with pytest.raises(RuntimeError, match="boom"):
            await trust.maybe_refresh()
        assert trust.status()["state"] == "unavailable"
        with pytest.raises(RuntimeError, match="boom"):
            await trust.file_target(path)

        fetcher.buggy = False
        assert (await trust.file_target(path)).length == length
        assert trust.status()["state"] == "ok"


async def test_known_failures_are_translated_and_recorded(
    tmp_path: Path, upstream: FakePyPI
) -> None:
    """An unreachable upstream is UpstreamUnavailable ("stale": the trusted metadata is
    still used); an expired timestamp is TrustError ("refused"); both keep their cause."""
    repo = TufRepo(upstream)
    path, length = signed_file(tmp_path, upstream, repo, "1.0")
    async with verifying_trust(tmp_path, upstream, repo) as (trust, _):
        await trust.refresh()
        assert (await trust.file_target(path)).length == length  # its bin is loaded now
        upstream.outage = 503
        with pytest.raises(UpstreamUnavailable) as unreachable:
            await trust.refresh()
        assert isinstance(unreachable.value.__cause__, tuf_exceptions.DownloadError)
        assert trust.status()["state"] == "stale"
        assert trust.status()["error_kind"] == "unreachable"
        assert (await trust.file_target(path)).length == length

        upstream.outage = None
        repo.expire("timestamp")
        with pytest.raises(TrustError) as refused:
            await trust.refresh()
        assert isinstance(refused.value.__cause__, tuf_exceptions.ExpiredMetadataError)
        assert trust.status()["state"] == "refused"
        assert trust.status()["error_kind"] == "expired"
        with pytest.raises(TrustError):
            await trust.file_target(path)


def test_only_known_exception_types_are_translated() -> None:
    """``map_errors`` translates python-tuf's, OS and mirror errors and lets others by."""
    bug = KeyError("a bug")
    with pytest.raises(KeyError) as info, map_errors("x"):
        raise bug
    assert info.value is bug

    cases: list[tuple[Exception, type[MirrorError]]] = [
        (tuf_exceptions.BadVersionNumberError("v1 < v2"), TrustError),
        (tuf_exceptions.DownloadLengthMismatchError("long"), TrustError),
        (tuf_exceptions.SlowRetrievalError("slow"), UpstreamTimeout),
        (tuf_exceptions.DownloadHTTPError("500", 500), UpstreamUnavailable),
        (PermissionError("denied"), StorageError),
    ]
    for exc, expected in cases:
        with pytest.raises(expected) as raised, map_errors("x"):
            raise exc
        assert raised.value.__cause__ is exc
    mine = UpstreamUnavailable("down")
    assert translate(mine, "x") is mine


async def test_refresh_publishes_verified_metadata_through_the_store(
    tmp_path: Path, upstream: FakePyPI
) -> None:
    """Every root kept, the timestamp replaced, versions older than the previous snapshot
    pruned, a delegated role published on demand (and stored for ngclient); the store's
    temp space is left empty."""
    repo = TufRepo(upstream)
    path, _ = signed_file(tmp_path, upstream, repo, "1.0")
    web_tuf = tmp_path / "store" / layout.WEB_TUF
    async with verifying_trust(tmp_path, upstream, repo) as (trust, _):
        assert trust.scheme is TufTargets.FILES
        await trust.refresh()
        first_snapshot = repo.published["snapshot"]
        assert (web_tuf / f"{first_snapshot}.snapshot.json").is_file()
        role = repo.role_for(path)
        name = f"{repo.published[role]}.{role}.json"
        assert not (web_tuf / name).exists()
        assert not await trust.ensure_metadata(f"{repo.published[role] + 1}.{role}.json")
        assert await trust.ensure_metadata(name)
        assert (web_tuf / name).read_bytes() == upstream.static[f"/tuf/{name}"][0]
        stored = tmp_path / "store" / layout.tuf_metadata(f"{role}.json")
        assert stored.read_bytes() == upstream.static[f"/tuf/{name}"][0]

        repo.rotate_root()
        await trust.refresh()
        signed_file(tmp_path, upstream, repo, "2.0")
        await trust.refresh()

        for version in (1, 2):
            assert (web_tuf / f"{version}.root.json").read_bytes() == repo.roots[version]
        timestamp = upstream.static["/tuf/timestamp.json"][0]
        assert (web_tuf / "timestamp.json").read_bytes() == timestamp
        snapshots = sorted(int(p.name.split(".")[0]) for p in web_tuf.glob("*.snapshot.json"))
        assert first_snapshot not in snapshots
        assert snapshots == [repo.published["snapshot"] - 1, repo.published["snapshot"]]
        assert list((tmp_path / "store" / layout.TMP).iterdir()) == []


class NoLocalFiles(FileSystemStorage):
    """A store without local files behind its paths (as object storage would be)."""

    def local_path(self, rel: str) -> Path | None:
        return None


async def test_verify_mode_needs_a_store_with_a_local_metadata_directory(
    tmp_path: Path, upstream: FakePyPI
) -> None:
    repo = TufRepo(upstream)
    store = NoLocalFiles(FileSystemStorage.open(tmp_path / "store").root)
    with pytest.raises(StorageError) as info:
        async with verifying_trust(tmp_path, upstream, repo, store):
            pass
    message = str(info.value)
    assert "filesystem store" in message and "\n" not in message


async def test_through_the_app_a_bug_is_logged_with_its_traceback_and_refuses_nothing(
    tmp_path: Path,
    upstream: FakePyPI,
    make_mirror: MirrorFactory,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Through the real app: the request that hit the bug fails, the log has the bug's
    traceback, /health does not report a refusal, and the same file is served once the
    bug is gone."""
    repo = TufRepo(upstream)
    signed_file(tmp_path, upstream, repo, "1.0")
    mirror = await tuf_mirror(make_mirror, repo, tmp_path, "files")
    trust = mirror.services.trust
    assert trust is not None
    real = trust.core.fetcher
    fetcher = BuggyFetcher(real.loop, real.upstream, real.deadline)
    trust.core.fetcher = fetcher
    second, _ = signed_file(tmp_path, upstream, repo, "2.0")
    url_path = f"/packages/{second}"

    fetcher.buggy = True
    capsys.readouterr()
    status, body = await download(mirror, url_path)
    assert status != 200, body
    log = capsys.readouterr().out
    assert "Traceback" in log and "RuntimeError: boom" in log
    assert (await health(mirror))["tuf"]["state"] not in ("refused", "expired")

    fetcher.buggy = False
    status, _ = await download(mirror, url_path)
    assert status == 200
    assert (await health(mirror))["tuf"]["state"] == "ok"
