"""What the sync asks the upstream for, and what it makes durable when.

Per project a full sync asks for the page, the JSON API answer and each missing file —
not a wheel's ``.metadata``: that is the wheel's METADATA (PEP 658), taken from the
verified wheel and checked against the digest the page advertises. Should the two differ,
the upstream's own file is fetched and checked against that digest instead.

Renames inside a sync are made durable in batches: the journal's group commit syncs the
directories they changed before it records the projects as done.
"""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

import mirror.storage.filesystem as filesystem
from mirror.core import layout
from mirror.core.changelog import PlanEntry
from mirror.storage.filesystem import FileSystemStorage
from mirror.sync.journal import Outcome, RunJournal, RunKind, RunMeta
from tests.fakepypi import FakePyPI, build_sdist, build_wheel, running_upstream
from tests.sync_helpers import (
    check_invariants,
    filenames,
    package_files,
    page,
    publish,
    run_sync,
    sync_config,
)


def _metadata_requests(upstream: FakePyPI) -> int:
    return sum(1 for _m, path in upstream.requests if path.endswith(".metadata"))


async def test_a_full_sync_takes_wheel_metadata_from_the_wheel_not_from_upstream(
    tmp_path: Path, upstream: FakePyPI
) -> None:
    publish(tmp_path, upstream)
    root = tmp_path / "mirror"
    result = await run_sync(sync_config(upstream, root))
    assert result.ok
    assert _metadata_requests(upstream) == 0
    # per project: its page, its JSON API answer (PyPI redirects to the display name), its
    # files — nothing else, and nothing twice
    gets = [path for method, path in upstream.requests if method == "GET"]
    assert len(gets) == len(set(gets))
    assert sorted(p for p in gets if not p.startswith("/packages/")) == [
        "/pypi/Demo.Pkg/json",
        "/pypi/demo-pkg/json",
        "/pypi/tool/json",
        "/simple/demo-pkg/",
        "/simple/tool/",
    ]
    files = [r for p in ("demo-pkg", "tool") for r in upstream.project(p).files()]
    assert sorted(p for p in gets if p.startswith("/packages/")) == sorted(
        r.url_path for r in files
    )
    for record in files:
        held = root / "web" / record.url_path.lstrip("/")
        metadata = held.with_name(held.name + ".metadata")
        if record.filename.endswith(".whl"):
            # byte for byte upstream's .metadata, advertised with upstream's digest
            assert metadata.read_bytes() == record.core_metadata
            served = page(root, record.project)
            assert served is not None
            entry = next(f for f in served["files"] if f["filename"] == record.filename)
            assert entry["core-metadata"] == {"sha256": record.metadata_sha256}
        else:
            assert not metadata.exists()
    check_invariants(root)


async def test_wheel_metadata_that_differs_from_the_advertised_digest_is_fetched(
    tmp_path: Path, upstream: FakePyPI
) -> None:
    """The upstream serves (and advertises) a .metadata that is not the wheel's METADATA:
    the mirror serves the upstream's, verified against the page, as a client would get."""
    dist = tmp_path / "dist"
    record = upstream.add_file("odd", build_wheel(dist, "odd", "1.0"))
    assert record.core_metadata is not None
    record.core_metadata = record.core_metadata + b"X-Note: rewritten upstream\n"
    upstream.add_file("odd", build_sdist(dist, "odd", "1.0"))
    root = tmp_path / "mirror"
    result = await run_sync(sync_config(upstream, root))
    assert result.ok and result.failed == 0
    assert _metadata_requests(upstream) == 1
    held = root / "web" / record.url_path.lstrip("/")
    assert held.with_name(held.name + ".metadata").read_bytes() == record.core_metadata
    served = page(root, "odd")
    assert served is not None
    entry = next(f for f in served["files"] if f["filename"] == record.filename)
    assert entry["core-metadata"] == {"sha256": hashlib.sha256(record.core_metadata).hexdigest()}
    check_invariants(root)


async def test_a_resync_with_nothing_new_asks_for_no_file(
    tmp_path: Path, upstream: FakePyPI
) -> None:
    publish(tmp_path, upstream)
    config = sync_config(upstream, tmp_path / "mirror")
    assert (await run_sync(config)).ok
    upstream.reset_log()
    assert (await run_sync(config)).ok
    assert upstream.count("/packages/") == 0
    assert upstream.count("/simple/") == upstream.count("/pypi/") == 0


def test_the_sync_does_not_import_python_tuf_when_trust_is_off() -> None:
    """python-tuf (and its crypto) is the largest import; without [tuf] it stays out."""
    code = (
        "import sys, mirror.cli, mirror.services, mirror.sync.commands, mirror.sync.engine\n"
        "print(sorted(m for m in ('tuf', 'securesystemslib') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


# -- durability -------------------------------------------------------------------------


@pytest.fixture
def synced_dirs(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every directory the filesystem backend syncs, in order (a spy on the real call)."""
    calls: list[Path] = []
    real = filesystem._fsync_dir

    def spy(directory: Path) -> None:
        calls.append(directory)
        real(directory)

    monkeypatch.setattr(filesystem, "_fsync_dir", spy)
    return calls


async def test_a_commit_syncs_its_directories_at_once_outside_a_deferred_batch(
    tmp_path: Path, synced_dirs: list[Path]
) -> None:
    storage = FileSystemStorage.open(tmp_path)
    await storage.write_bytes("web/packages/aa/bb/cc/file.whl", b"bytes")
    target = tmp_path / "web" / "packages" / "aa" / "bb" / "cc"
    # the file's directory and every directory that gained a new one
    assert set(synced_dirs) >= {target, target.parent, target.parent.parent}
    assert (target / "file.whl").read_bytes() == b"bytes"


async def test_deferred_renames_are_synced_by_the_barrier(
    tmp_path: Path, synced_dirs: list[Path]
) -> None:
    storage = FileSystemStorage.open(tmp_path)
    with storage.deferred_durability():
        await storage.write_bytes("web/simple/p/index.html", b"<html>")
        writer = storage.writer("web/packages/aa/bb/cc/f.whl")
        await writer.write(b"wheel")
        await writer.commit()
        await storage.link("web/simple/p/index.html", "web/simple/p/index.v1_html")
    assert synced_dirs == []  # visible, not yet durable by name
    assert (tmp_path / "web/simple/p/index.v1_html").read_bytes() == b"<html>"
    await storage.barrier()
    assert set(synced_dirs) >= {
        tmp_path / "web/simple/p",
        tmp_path / "web/simple",
        tmp_path / "web/packages/aa/bb/cc",
    }
    synced_dirs.clear()
    await storage.barrier()
    assert synced_dirs == []  # nothing new since


async def test_other_tasks_keep_syncing_at_once_during_a_deferred_batch(
    tmp_path: Path, synced_dirs: list[Path]
) -> None:
    """The deferral belongs to the sync's tasks (a context), not to the whole store."""
    storage = FileSystemStorage.open(tmp_path)
    started, release = asyncio.Event(), asyncio.Event()

    async def sync_task() -> None:
        with storage.deferred_durability():
            started.set()
            await release.wait()
            await storage.write_bytes("web/simple/a/index.html", b"a")

    task = asyncio.create_task(sync_task())
    await started.wait()
    await storage.write_bytes("web/simple/b/index.html", b"b")
    assert tmp_path / "web/simple/b" in synced_dirs
    release.set()
    await task
    assert tmp_path / "web/simple/a" not in synced_dirs


async def test_the_journal_commits_after_a_barrier_and_without_making_workers_wait(
    tmp_path: Path, synced_dirs: list[Path]
) -> None:
    storage = FileSystemStorage.open(tmp_path)

    async def plan() -> AsyncIterator[list[PlanEntry]]:
        yield [PlanEntry("p", 1), PlanEntry("q", 2)]

    journal = await RunJournal.create(
        storage,
        plan(),
        lambda count: RunMeta("r", RunKind.FULL, 2, 2, "f", count, 0.0),
    )
    synced_dirs.clear()
    with storage.deferred_durability():
        await storage.write_bytes("web/simple/p/index.html", b"p")
        await journal.record(0, Outcome.DONE)
        await storage.write_bytes("web/simple/q/index.html", b"q")
        await journal.record(1, Outcome.DONE)
    await journal.close()
    progress = (tmp_path / layout.SYNC_PROGRESS).read_text().split()
    assert progress == ["0", "d", "1", "d"]
    # both pages' directories were synced before the log said they were done
    assert {tmp_path / "web/simple/p", tmp_path / "web/simple/q"} <= set(synced_dirs)
    finished = await journal.finished()
    assert 0 in finished and 1 in finished


class JsonApiLags(FakePyPI):
    """The pages are current; the JSON API of ``lag_project`` reports a lagging serial."""

    lag_project: str | None = None
    lag = 0

    async def _json_api(self, request: web.Request) -> web.Response:
        name = request.match_info.get("name", "").lower().replace(".", "-")
        self.lagging_serial = self.lag if name == self.lag_project else 0
        try:
            return await super()._json_api(request)
        finally:
            self.lagging_serial = 0


async def test_a_lagging_json_api_answer_defers_the_project_and_keeps_no_file(
    tmp_path: Path,
) -> None:
    """The JSON API answer comes in while the files download; when it lags the promised
    serial the project is deferred, and what was downloaded for it does not stay behind."""
    async with running_upstream(JsonApiLags()) as upstream:
        assert isinstance(upstream, JsonApiLags)
        publish(tmp_path, upstream)
        root = tmp_path / "mirror"
        config = sync_config(upstream, root, sync={"stale-retries": 1})
        assert (await run_sync(config)).ok
        upstream.add_file("tool", build_wheel(tmp_path / "dist", "tool", "0.2"))
        upstream.lag_project, upstream.lag = "tool", 2
        upstream.reset_log()

        result = await run_sync(config)
        assert not result.ok and result.deferred == 1
        assert upstream.count("/packages/") >= 1  # the new wheel was fetched...
        assert "tool-0.2-py3-none-any.whl" not in filenames(root, "tool")
        assert "tool-0.2-py3-none-any.whl" not in package_files(root)  # ...and not kept
        check_invariants(root)

        upstream.lag = 0
        result = await run_sync(config)
        assert result.ok and result.serial == upstream.serial
        assert "tool-0.2-py3-none-any.whl" in filenames(root, "tool")
        assert "tool-0.2-py3-none-any.whl" in package_files(root)
        check_invariants(root)


class CountsDownloads(FakePyPI):
    """Counts the file downloads in flight at once (each answer takes a while)."""

    in_flight = 0
    peak = 0

    async def _packages(self, request: web.Request) -> web.StreamResponse:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(0.05)
            return await super()._packages(request)
        finally:
            self.in_flight -= 1


async def test_projects_share_their_download_slots(tmp_path: Path) -> None:
    """With 2 workers of 2 file workers, one project of many files may use the slots the
    other leaves idle: up to 4 of its files are in flight at once (never more)."""
    async with running_upstream(CountsDownloads()) as upstream:
        assert isinstance(upstream, CountsDownloads)
        dist = tmp_path / "dist"
        for n in range(12):
            upstream.add_file("many", build_wheel(dist, "many", f"1.{n}"))
        upstream.add_file("one", build_wheel(dist, "one", "1.0"))
        root = tmp_path / "mirror"
        config = sync_config(upstream, root, sync={"workers": 2, "file-workers": 2})
        result = await run_sync(config)
        assert result.ok and result.files == 13
        assert upstream.peak == 4
        check_invariants(root)


async def test_a_barrier_over_many_directories_is_one_filesystem_sync(
    tmp_path: Path, synced_dirs: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []

    def syncfs(fd: int) -> int:
        calls.append(fd)
        return 0

    monkeypatch.setattr(filesystem, "_syncfs", lambda: syncfs)
    storage = FileSystemStorage.open(tmp_path)
    with storage.deferred_durability():
        for n in range(filesystem.SYNCFS_FROM + 1):
            await storage.write_bytes(f"web/packages/{n:02x}/aa/bbbb/f.whl", b"x")
    await storage.barrier()
    assert len(calls) == 1 and synced_dirs == []


async def test_a_failed_barrier_keeps_the_directories_for_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(directory: Path) -> None:
        raise OSError(5, "Input/output error")

    storage = FileSystemStorage.open(tmp_path)
    with storage.deferred_durability():
        await storage.write_bytes("web/simple/p/index.html", b"p")
    monkeypatch.setattr(filesystem, "_fsync_dir", broken)
    with pytest.raises(OSError):
        await storage.barrier()
    monkeypatch.undo()
    assert tmp_path / "web/simple/p" in storage.take_dirtied()
