"""The sync engine against the fake PyPI: full and incremental runs, every changelog
action, a lagging CDN, the XML-RPC fallback, filters, integrity failures, the lock, and a
run interrupted mid-way that the next run resumes."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from mirror.core import layout
from mirror.storage.filesystem import FileLock
from mirror.sync.engine import SyncLocked
from tests.fakepypi import FakePyPI, build_sdist, build_wheel, running_upstream
from tests.sync_helpers import (
    RequestTrigger,
    check_invariants,
    filenames,
    package_files,
    page,
    publish,
    publish_many,
    root_names,
    run_sync,
    sync_config,
    web_tree,
)


async def test_first_sync_mirrors_every_project_page_file_and_the_root(
    tmp_path: Path, upstream: FakePyPI
) -> None:
    publish(tmp_path, upstream)
    root = tmp_path / "mirror"
    result = await run_sync(sync_config(upstream, root))
    assert result.ok and result.serial == upstream.serial == result.upstream_serial
    assert result.projects == 2 and result.files == 4
    assert "list_packages_with_serial" in upstream.xmlrpc_calls
    tree = web_tree(root)
    for project in ("demo-pkg", "tool"):
        for name in ("index.html", "index.v1_html", "index.v1_json"):
            assert f"simple/{project}/{name}" in tree
        assert f"pypi/{project}/json" in tree
    # files are the upstream's bytes, and wheels have their .metadata
    for record in upstream.project("demo-pkg").files():
        held = root / "web" / record.url_path.lstrip("/")
        assert held.read_bytes() == record.source.read_bytes()
        if record.filename.endswith(".whl"):
            assert held.with_name(held.name + ".metadata").read_bytes() == record.core_metadata
    data = page(root, "demo-pkg")
    assert data is not None
    assert data["meta"]["_last-serial"] == upstream.project("demo-pkg").last_serial
    assert all(f["url"].startswith("../../packages/") for f in data["files"])
    html = tree["simple/demo-pkg/index.html"].decode()
    assert "../../packages/" in html and f"<!--SERIAL {data['meta']['_last-serial']}-->" in html
    api = json.loads(tree["pypi/demo-pkg/json"])
    assert all(f["url"].startswith("/packages/") for f in api["urls"])
    assert root_names(root) == {
        "demo-pkg": upstream.project("demo-pkg").last_serial,
        "tool": upstream.project("tool").last_serial,
    }
    root_json = json.loads(tree["simple/index.v1_json"])
    assert root_json["meta"]["_last-serial"] == upstream.serial
    check_invariants(root)


async def test_second_sync_follows_the_changelog_and_touches_only_changed_projects(
    tmp_path: Path, upstream: FakePyPI
) -> None:
    publish(tmp_path, upstream)
    root = tmp_path / "mirror"
    config = sync_config(upstream, root)
    assert (await run_sync(config)).ok
    upstream.reset_log()
    upstream.add_file("tool", build_wheel(tmp_path / "dist", "tool", "0.2"))
    result = await run_sync(config)
    assert result.ok and result.serial == upstream.serial and result.projects == 1
    assert "changelog_since_serial" in upstream.xmlrpc_calls
    assert "list_packages_with_serial" not in upstream.xmlrpc_calls
    assert upstream.count("/simple/demo-pkg/") == 0
    assert "tool-0.2-py3-none-any.whl" in filenames(root, "tool")
    assert root_names(root)["tool"] == upstream.serial
    # nothing new upstream: nothing fetched but the changelog
    upstream.reset_log()
    result = await run_sync(config)
    assert result.ok and result.projects == 0
    assert upstream.count("/simple/") == 0 and upstream.count("/packages/") == 0
    check_invariants(root)


async def test_changelog_is_read_page_by_page(tmp_path: Path, upstream: FakePyPI) -> None:
    publish(tmp_path, upstream)
    root = tmp_path / "mirror"
    config = sync_config(upstream, root)
    assert (await run_sync(config)).ok
    upstream.changelog_page_size = 2
    upstream.xmlrpc_calls.clear()
    for version in ("0.2", "0.3", "0.4"):
        upstream.add_file("tool", build_wheel(tmp_path / "dist", "tool", version))
    upstream.add_file("third", build_sdist(tmp_path / "dist", "third", "1.0"))
    result = await run_sync(config)
    assert result.ok and result.serial == upstream.serial
    assert upstream.xmlrpc_calls.count("changelog_since_serial") >= 4
    assert {"tool-0.2-py3-none-any.whl", "tool-0.4-py3-none-any.whl"} <= filenames(root, "tool")
    assert filenames(root, "third") == {"third-1.0.tar.gz"}


@pytest.fixture
async def synced(tmp_path: Path, upstream: FakePyPI) -> AsyncIterator[tuple[FakePyPI, Any]]:
    """A synced mirror; yields (upstream, resync) where resync() runs an incremental sync."""
    publish(tmp_path, upstream)
    config = sync_config(upstream, tmp_path / "mirror")
    assert (await run_sync(config)).ok

    async def resync() -> Any:
        result = await run_sync(config)
        assert result.ok, result.reason
        assert result.serial == upstream.serial
        check_invariants(config.storage.path)
        return result

    yield upstream, resync


async def test_remove_file_removes_it_from_page_and_storage(
    tmp_path: Path, synced: tuple[FakePyPI, Any]
) -> None:
    upstream, resync = synced
    root = tmp_path / "mirror"
    upstream.remove_file("demo-pkg", "demo_pkg-1.0.tar.gz")
    result = await resync()
    assert result.removed == 1
    assert "demo_pkg-1.0.tar.gz" not in filenames(root, "demo-pkg")
    assert "demo_pkg-1.0.tar.gz" not in package_files(root)


async def test_remove_release_removes_its_files(
    tmp_path: Path, synced: tuple[FakePyPI, Any]
) -> None:
    upstream, resync = synced
    root = tmp_path / "mirror"
    upstream.remove_release("demo-pkg", "1.0")
    await resync()
    assert filenames(root, "demo-pkg") == {"demo_pkg-2.0-py3-none-any.whl"}
    assert not {"demo_pkg-1.0.tar.gz", "demo_pkg-1.0-py3-none-any.whl"} & package_files(root)
    data = page(root, "demo-pkg")
    assert data is not None and data["versions"] == ["2.0"]


async def test_remove_project_removes_pages_json_files_and_root_entry(
    tmp_path: Path, synced: tuple[FakePyPI, Any]
) -> None:
    upstream, resync = synced
    root = tmp_path / "mirror"
    upstream.remove_project("demo-pkg")
    await resync()
    assert not (root / "web" / "simple" / "demo-pkg").exists()
    assert not (root / "web" / "pypi" / "demo-pkg").exists()
    assert package_files(root) == {"tool-0.1-py3-none-any.whl"}
    assert set(root_names(root)) == {"tool"}


async def test_yank_and_unyank_update_the_pages(
    tmp_path: Path, synced: tuple[FakePyPI, Any]
) -> None:
    upstream, resync = synced
    root = tmp_path / "mirror"
    upstream.set_release_yanked("demo-pkg", "1.0", "broken")
    await resync()
    data = page(root, "demo-pkg")
    assert data is not None
    yanked = {f["filename"]: f["yanked"] for f in data["files"]}
    assert yanked["demo_pkg-1.0.tar.gz"] == "broken"
    assert yanked["demo_pkg-2.0-py3-none-any.whl"] is False
    html = (root / "web" / "simple" / "demo-pkg" / "index.html").read_text()
    assert 'data-yanked="broken"' in html
    upstream.set_release_yanked("demo-pkg", "1.0", False)
    await resync()
    data = page(root, "demo-pkg")
    assert data is not None and not any(f["yanked"] for f in data["files"])


async def test_quarantine_hides_files_and_lifting_it_brings_them_back(
    tmp_path: Path, synced: tuple[FakePyPI, Any]
) -> None:
    upstream, resync = synced
    root = tmp_path / "mirror"
    upstream.set_project_status("demo-pkg", "quarantined", "malware report")
    await resync()
    data = page(root, "demo-pkg")
    assert data is not None
    assert data["project-status"] == {"status": "quarantined", "reason": "malware report"}
    assert data["files"] == []
    assert not any(name.startswith("demo_pkg") for name in package_files(root))
    assert not (root / "web" / "pypi" / "demo-pkg" / "json").exists()
    html = (root / "web" / "simple" / "demo-pkg" / "index.html").read_text()
    assert '<meta name="pypi:project-status" content="quarantined">' in html
    upstream.set_project_status("demo-pkg", "active")
    await resync()
    assert len(filenames(root, "demo-pkg")) == 3
    assert (root / "web" / "pypi" / "demo-pkg" / "json").exists()


async def test_an_unknown_changelog_action_refreshes_the_project(
    tmp_path: Path, synced: tuple[FakePyPI, Any]
) -> None:
    upstream, resync = synced
    root = tmp_path / "mirror"
    # A change upstream journals with wording the mirror has never seen.
    upstream.file("demo-pkg", "demo_pkg-1.0.tar.gz").yanked = "see the new policy"
    upstream._journal(upstream.project("demo-pkg"), None, "change policy to something new")
    await resync()
    data = page(root, "demo-pkg")
    assert data is not None
    assert {f["filename"]: f["yanked"] for f in data["files"]}["demo_pkg-1.0.tar.gz"] == (
        "see the new policy"
    )


async def test_a_project_removed_and_recreated_between_runs_ends_up_present(
    tmp_path: Path, synced: tuple[FakePyPI, Any]
) -> None:
    upstream, resync = synced
    root = tmp_path / "mirror"
    upstream.remove_project("tool")
    upstream.add_file("tool", build_wheel(tmp_path / "dist2", "tool", "5.0"))
    await resync()
    assert filenames(root, "tool") == {"tool-5.0-py3-none-any.whl"}
    assert "tool-0.1-py3-none-any.whl" not in package_files(root)


class OneProjectLags(FakePyPI):
    """Like the fake, but only ``lag_project``'s page and JSON report a lagging serial."""

    lag_project: str | None = None
    lag = 0

    def _apply_lag(self, request: web.Request) -> None:
        name = request.match_info.get("name", "").lower().replace(".", "-")
        self.lagging_serial = self.lag if name == self.lag_project else 0

    async def _simple_project(self, request: web.Request) -> web.Response:
        self._apply_lag(request)
        return await super()._simple_project(request)

    async def _json_api(self, request: web.Request) -> web.Response:
        self._apply_lag(request)
        return await super()._json_api(request)


async def test_a_lagging_page_is_retried_then_deferred_without_blocking_others(
    tmp_path: Path,
) -> None:
    async with running_upstream(OneProjectLags()) as upstream:
        assert isinstance(upstream, OneProjectLags)
        publish(tmp_path, upstream)
        root = tmp_path / "mirror"
        config = sync_config(upstream, root, sync={"stale-retries": 2})
        assert (await run_sync(config)).ok
        before = upstream.serial
        upstream.add_file("demo-pkg", build_wheel(tmp_path / "dist", "Demo.Pkg", "3.0"))
        promised = upstream.serial
        upstream.add_file("tool", build_wheel(tmp_path / "dist", "tool", "0.2"))
        upstream.lag_project, upstream.lag = "demo-pkg", 3
        upstream.reset_log()

        result = await run_sync(config)
        assert not result.ok and result.deferred == 1
        assert result.reason is not None and "demo-pkg" in result.reason
        assert upstream.count("/simple/demo-pkg/") == 3  # first try + 2 retries
        # the other project was applied; the recorded serial stays below the stale one
        assert "tool-0.2-py3-none-any.whl" in filenames(root, "tool")
        assert "demo_pkg-3.0-py3-none-any.whl" not in filenames(root, "demo-pkg")
        assert result.serial is not None and before <= result.serial < promised
        check_invariants(root)

        upstream.lag = 0
        result = await run_sync(config)
        assert result.ok and result.serial == upstream.serial
        assert "demo_pkg-3.0-py3-none-any.whl" in filenames(root, "demo-pkg")


@pytest.mark.parametrize("mode", ["not_found", "fault"])
async def test_without_xmlrpc_the_json_root_with_serials_drives_the_sync(
    tmp_path: Path, upstream: FakePyPI, mode: str
) -> None:
    publish(tmp_path, upstream)
    upstream.xmlrpc_mode = mode  # type: ignore[assignment]
    root = tmp_path / "mirror"
    config = sync_config(upstream, root)
    result = await run_sync(config)
    assert result.ok and result.serial == upstream.serial
    assert set(root_names(root)) == {"demo-pkg", "tool"}
    # later runs compare serials: only what changed is fetched, removals are noticed
    upstream.reset_log()
    upstream.add_file("tool", build_wheel(tmp_path / "dist", "tool", "0.2"))
    upstream.remove_project("demo-pkg")
    result = await run_sync(config)
    assert result.ok and result.serial == upstream.serial
    assert upstream.count("/simple/tool/") == 1
    assert "tool-0.2-py3-none-any.whl" in filenames(root, "tool")
    assert set(root_names(root)) == {"tool"}
    assert not any(n.startswith("demo_pkg") for n in package_files(root))
    check_invariants(root)


async def test_filters_shape_the_mirror_and_a_changed_filter_removes_what_it_drops(
    tmp_path: Path, upstream: FakePyPI
) -> None:
    dist = tmp_path / "dist"
    for version in ("1.0", "2.0", "3.0rc1"):
        upstream.add_file("django", build_wheel(dist, "django", version))
    upstream.add_file("django", build_sdist(dist, "django", "2.0", pad_bytes=20_000))
    linux = "manylinux_2_17_x86_64"
    for tag in ("cp310", "cp312"):
        for platform in ("win_amd64", linux):
            wheel = build_wheel(
                dist, "fast", "1.0", python_tag=tag, abi_tag=tag, platform_tag=platform
            )
            upstream.add_file("fast", wheel)
    abi3 = build_wheel(dist, "fast", "1.0", python_tag="cp38", abi_tag="abi3", platform_tag=linux)
    upstream.add_file("fast", abi3)
    upstream.add_file("other", build_wheel(dist, "other", "1.0"))
    upstream.add_file("blocked", build_wheel(dist, "blocked", "1.0"))
    root = tmp_path / "mirror"
    sync: dict[str, Any] = {
        "allow": ["django>=2", "fast", "blocked"],
        "block": ["blocked"],
        "exclude-platforms": ["windows"],
        "python-versions": ["3.10"],
        "prereleases": False,
        "max-file-size": 15_000,
    }
    result = await run_sync(sync_config(upstream, root, sync=sync))
    assert result.ok
    assert set(root_names(root)) == {"django", "fast"}
    assert filenames(root, "django") == {"django-2.0-py3-none-any.whl"}
    assert filenames(root, "fast") == {
        "fast-1.0-cp310-cp310-manylinux_2_17_x86_64.whl",
        "fast-1.0-cp38-abi3-manylinux_2_17_x86_64.whl",
    }
    api = json.loads((root / "web" / "pypi" / "django" / "json").read_bytes())
    assert set(api["releases"]) == {"2.0"}
    check_invariants(root)

    # widen, then narrow: a full re-check adds and removes accordingly
    result = await run_sync(sync_config(upstream, root, sync={"keep-latest": 1}))
    assert result.ok
    assert set(root_names(root)) == {"django", "fast", "other", "blocked"}
    assert filenames(root, "django") == {"django-3.0rc1-py3-none-any.whl"}
    result = await run_sync(sync_config(upstream, root, sync={"block": ["fast", "blocked"]}))
    assert result.ok and result.removed >= 5
    assert set(root_names(root)) == {"django", "other"}
    assert not any(n.startswith(("fast", "blocked")) for n in package_files(root))
    assert len(filenames(root, "django")) == 4
    check_invariants(root)


async def test_a_tampered_file_fails_its_project_and_nothing_unverified_is_visible(
    tmp_path: Path, upstream: FakePyPI
) -> None:
    publish(tmp_path, upstream)
    upstream.tamper_files = True
    root = tmp_path / "mirror"
    config = sync_config(upstream, root)
    result = await run_sync(config)
    assert not result.ok and result.failed == 2
    assert result.reason is not None and "failed" in result.reason
    assert package_files(root) == set()
    assert page(root, "demo-pkg") is None
    assert not list((root / "tmp").iterdir())
    upstream.tamper_files = False
    result = await run_sync(config)
    assert result.ok and result.serial == upstream.serial
    check_invariants(root)


async def test_a_second_sync_on_a_locked_mirror_stops_at_once(
    tmp_path: Path, upstream: FakePyPI
) -> None:
    publish(tmp_path, upstream)
    root = tmp_path / "mirror"
    lock = FileLock(root / layout.SYNC_LOCK)
    with lock, pytest.raises(SyncLocked, match="another sync is running"):
        await run_sync(sync_config(upstream, root))
    assert upstream.count("/") == 0


async def test_a_run_interrupted_mid_way_resumes_and_matches_a_clean_sync(
    tmp_path: Path, upstream: FakePyPI
) -> None:
    publish_many(tmp_path, upstream, projects=12, releases=4)
    trigger = RequestTrigger(after=20)
    upstream.requests = trigger
    upstream.delay = 0.005
    root = tmp_path / "mirror"
    config = sync_config(upstream, root)
    task = asyncio.create_task(run_sync(config))
    await asyncio.wait_for(trigger.event.wait(), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (root / "state" / "sync" / "run" / "todo").exists()
    fetched_before = upstream.count("/packages/")
    upstream.delay = 0
    result = await run_sync(config)
    assert result.ok and result.serial == upstream.serial
    # the resumed run did not start over
    assert upstream.count("/packages/") - fetched_before < 2 * 48
    clean = tmp_path / "clean"
    assert (await run_sync(sync_config(upstream, clean))).ok
    ours, theirs = web_tree(root), web_tree(clean)
    assert sorted(ours) == sorted(theirs)
    assert {k: hashlib.sha256(v).hexdigest() for k, v in ours.items()} == {
        k: hashlib.sha256(v).hexdigest() for k, v in theirs.items()
    }
    check_invariants(root)


async def test_an_upstream_outage_stops_the_run_and_the_next_one_resumes_it(
    tmp_path: Path, upstream: FakePyPI
) -> None:
    publish_many(tmp_path, upstream, projects=16, releases=1)
    root = tmp_path / "mirror"
    config = sync_config(upstream, root, sync={"workers": 1, "file-workers": 1})

    class OutageAfter(RequestTrigger):
        def append(self, item: tuple[str, str]) -> None:
            super().append(item)
            if self.event.is_set():
                upstream.outage = 503

    upstream.requests = OutageAfter(after=3)
    result = await run_sync(config)
    assert not result.ok and result.reason is not None
    assert result.reason.startswith("upstream unavailable") and "resume" in result.reason
    assert result.failed == 10  # stopped after 10 projects in a row could not be reached
    assert (root / "state" / "sync" / "run" / "todo").exists()
    check_invariants(root)

    upstream.outage = None
    upstream.requests = []
    result = await run_sync(config)
    assert result.ok and result.serial == upstream.serial
    assert len(root_names(root)) == 16
    assert upstream.count("/simple/proj000/") == 0  # finished before the outage: not redone
    check_invariants(root)
