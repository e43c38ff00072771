"""An import killed with ``kill -9`` while it applies, or stopped by a full disk: every
project is as before or as after, and the same import run again finishes it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

from mirror.core import layout
from tests.bundle_helpers import (
    config_file,
    export,
    journal_path,
    make_key,
    offline_config,
    served_state,
    source_config,
)
from tests.conftest import run_cli
from tests.fakepypi import FakePyPI, build_wheel
from tests.sync_helpers import check_invariants, publish_many, run_sync
from tests.test_disk_full import fill, small_disk

__all__ = ["small_disk"]  # the fixture, shared with the serving tests


def project_views(root: Path, project: str) -> dict[str, bytes]:
    return {
        rel: data
        for rel, data in served_state(root).items()
        if rel.split("/")[1] == project and rel.startswith(("simple", "pypi"))
    }


async def test_kill_during_import_then_import_again(tmp_path: Path, upstream: FakePyPI) -> None:
    publish_many(tmp_path, upstream, projects=80, releases=2)
    key, pub = make_key(tmp_path)
    a = source_config(upstream, tmp_path / "a", key)
    assert (await run_sync(a)).ok
    bundle = tmp_path / "bundle.tar"
    await export(a, bundle)
    upstream.add_file("later", build_wheel(tmp_path / "dist", "later", "1.0"))
    assert (await run_sync(a)).ok
    second = tmp_path / "second.tar"
    await export(a, second)
    projects = sorted(p.name for p in (tmp_path / "a" / layout.WEB_SIMPLE).iterdir() if p.is_dir())
    killed_while_applying = False
    for attempt in range(5):
        b = offline_config(tmp_path / f"b{attempt}", [pub])
        b_file = config_file(tmp_path / f"b{attempt}.toml", b)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "mirror",
            "import",
            "-c",
            str(b_file),
            str(bundle),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        journal = journal_path(b.storage.path)
        pages = b.storage.path / layout.WEB_SIMPLE
        # Wait until it applies (the journal is there) and has written a few projects.
        for _ in range(20000):
            if proc.returncode is not None:
                break
            if journal.exists() and pages.exists() and len(list(pages.iterdir())) >= 5:
                os.kill(proc.pid, signal.SIGKILL)
                break
            await asyncio.sleep(0.001)
        await proc.wait()
        if proc.returncode != -signal.SIGKILL or not journal.exists():
            continue
        killed_while_applying = True
        # Every project's page is as before (absent) or as after (what A serves; then its
        # JSON API is too, written before it). The other forms follow within PageStore's
        # own write (index.v1_html is linked last): each is absent or new, never old.
        after = 0
        for project in projects:
            views = project_views(b.storage.path, project)
            theirs = project_views(tmp_path / "a", project)
            for rel, data in views.items():
                assert data == theirs[rel], rel
            if layout.PAGE_V1_JSON in {rel.rsplit("/", 1)[-1] for rel in views}:
                assert {r for r in theirs if r.startswith("pypi")} <= set(views), project
                after += 1
        assert 0 < after < len(projects)
        check_invariants(b.storage.path, allow_unlisted=True)
        # Another bundle is refused until this one is finished.
        code, _, err = await run_cli("import", "-c", b_file, second)
        assert code == 1 and "was interrupted" in err, err
        code, _, err = await run_cli("import", "-c", b_file, bundle)
        assert code == 0, err
        assert "interrupted" in err
        assert not journal.exists()
        code, _, err = await run_cli("import", "-c", b_file, second)
        assert code == 0, err
        assert served_state(b.storage.path) == served_state(tmp_path / "a")
        check_invariants(b.storage.path)
        break
    assert killed_while_applying, "every import finished before it could be killed"


async def test_full_disk_during_import_then_again_once_space_is_freed(
    tmp_path: Path, upstream: FakePyPI, small_disk: Path
) -> None:
    dist = tmp_path / "dist"
    upstream.add_file("small", build_wheel(dist, "small", "1.0"))
    upstream.add_file("big", build_wheel(dist, "big", "1.0", pad_bytes=2 * 1024 * 1024))
    key, pub = make_key(tmp_path)
    a = source_config(upstream, tmp_path / "a", key)
    assert (await run_sync(a)).ok
    bundle = tmp_path / "bundle.tar"
    await export(a, bundle)
    b = offline_config(small_disk / "b", [pub])
    b_file = config_file(tmp_path / "b.toml", b)
    (small_disk / "b").mkdir()
    filler = fill(small_disk)
    # Leave room for the small project and the bookkeeping, not for the big wheel.
    with filler.open("r+b") as handle:
        handle.truncate(max(filler.stat().st_size - 1024 * 1024, 0))
    code, _, err = await run_cli("import", "-c", b_file, bundle)
    assert code == 1, err
    assert "no space left" in err and "run the same import again" in err, err
    assert len(err.strip().splitlines()) == 1, err
    check_invariants(b.storage.path, allow_unlisted=True)
    filler.unlink()
    code, _, err = await run_cli("import", "-c", b_file, bundle)
    assert code == 0, err
    assert served_state(b.storage.path) == served_state(tmp_path / "a")
    check_invariants(b.storage.path)
    assert json.loads((b.storage.path / layout.BUNDLE_IMPORTED).read_bytes())["end"] > 0
