"""``pypi-mirror sync`` and ``status`` as an operator runs them: real processes, exit codes,
one-line reasons, the lock, a progress line on a TTY, and ``kill -9`` mid-sync followed by
a resume that ends identical to a clean sync."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pty
import sys
import time
from pathlib import Path

from tests.conftest import run_cli
from tests.fakepypi import FakePyPI, build_wheel
from tests.sync_helpers import (
    RequestTrigger,
    check_invariants,
    config_toml,
    filenames,
    publish,
    publish_many,
    run_sync,
    sync_config,
    web_tree,
)

REPO = Path(__file__).resolve().parent.parent


def write_config(tmp: Path, upstream: FakePyPI, root: Path, **sync: object) -> Path:
    path = tmp / f"mirror-{root.name}.toml"
    path.write_text(config_toml(upstream, root, **sync))
    return path


async def start(
    *args: str, stderr: int | None = None, log: Path | None = None
) -> asyncio.subprocess.Process:
    with open(log or os.devnull, "ab") as out:  # the child keeps its own copy
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "mirror",
            *args,
            stdout=out,
            stderr=asyncio.subprocess.PIPE if stderr is None else stderr,
            cwd=REPO,
        )


async def test_sync_exits_zero_and_status_reports_the_mirror(
    tmp_path: Path, upstream: FakePyPI
) -> None:
    publish(tmp_path, upstream)
    root = tmp_path / "m"
    config = write_config(tmp_path, upstream, root)
    code, _out, err = await run_cli("sync", "-c", str(config))
    assert code == 0, err
    code, out, err = await run_cli("-c", str(config), "status", "--json")
    assert code == 0, err
    status = json.loads(out)
    assert status["serial"] == upstream.serial == status["upstream_serial"]
    assert status["lag"] == 0
    assert status["projects"] == 2 and status["files"] == 4 and status["bytes"] > 0
    assert status["last_run"]["result"] == "ok" and status["running"] is False
    code, out, _ = await run_cli("status", "-c", str(config))
    assert code == 0
    assert f"serial      {upstream.serial} (upstream {upstream.serial}, lag 0)" in out
    assert "projects    2" in out and "last run    ok (full)" in out


async def test_sync_that_cannot_reach_the_upstream_serial_exits_non_zero_with_one_line(
    tmp_path: Path, upstream: FakePyPI
) -> None:
    publish(tmp_path, upstream)
    root = tmp_path / "m"
    config = write_config(tmp_path, upstream, root, stale_retries=0)
    assert (await run_cli("sync", "-c", str(config)))[0] == 0
    upstream.add_file("tool", build_wheel(tmp_path / "dist", "tool", "0.2"))
    upstream.lagging_serial = 2
    code, _out, err = await run_cli("sync", "-c", str(config))
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pypi-mirror: sync incomplete: ")
    assert "tool" in lines[0] and "run sync again later" in lines[0]
    code, out, _ = await run_cli("status", "--json", "-c", str(config))
    status = json.loads(out)
    assert status["lag"] > 0 and status["deferred"] == 1
    assert status["last_run"]["result"] == "incomplete"


async def test_bad_filter_and_unreachable_upstream_are_one_line_errors(
    tmp_path: Path, upstream: FakePyPI
) -> None:
    root = tmp_path / "m"
    config = write_config(tmp_path, upstream, root, allow=["not a name !"])
    code, _out, err = await run_cli("sync", "-c", str(config))
    assert code == 2
    assert "allow" in err and "not a name !" in err and str(config) in err
    upstream.outage = 503
    config = write_config(tmp_path, upstream, root)
    code, _out, err = await run_cli("sync", "-c", str(config))
    assert code == 1
    assert err.strip().splitlines()[-1].startswith("pypi-mirror: sync failed: ")
    assert "503" in err


async def test_a_second_sync_exits_at_once_with_the_lock_message(
    tmp_path: Path, upstream: FakePyPI
) -> None:
    publish(tmp_path, upstream)
    trigger = RequestTrigger(after=1)
    upstream.requests = trigger
    upstream.delay = 0.5
    root = tmp_path / "m"
    config = write_config(tmp_path, upstream, root)
    first = await start("sync", "-c", str(config))
    try:
        await asyncio.wait_for(trigger.event.wait(), 30)  # the first one is mid-way
        started = time.monotonic()
        code, _out, err = await run_cli("sync", "-c", str(config))
        assert time.monotonic() - started < 10
        assert code == 3
        assert "another sync is running on this mirror" in err and str(root) in err
        upstream.delay = 0
        _out_b, err_b = await asyncio.wait_for(first.communicate(), 60)
        assert first.returncode == 0, err_b.decode()
    finally:
        with contextlib.suppress(ProcessLookupError):
            first.kill()
    check_invariants(root)


async def test_progress_is_drawn_on_a_tty(tmp_path: Path, upstream: FakePyPI) -> None:
    publish(tmp_path, upstream)
    config = write_config(tmp_path, upstream, tmp_path / "m")
    master, slave = pty.openpty()
    try:
        proc = await start("sync", "-c", str(config), stderr=slave)
        os.close(slave)
        await asyncio.wait_for(proc.wait(), 60)
        assert proc.returncode == 0
        shown = b""
        with contextlib.suppress(OSError):
            while chunk := os.read(master, 65536):
                shown += chunk
    finally:
        os.close(master)
    text = shown.decode(errors="replace")
    assert "\rprojects 2/2" in text and "files +4" in text and "/s" in text
    assert "pypi-mirror: synced to serial" in text


async def test_kill_9_mid_sync_then_resume_gives_the_same_tree_as_a_clean_sync(
    tmp_path: Path, upstream: FakePyPI
) -> None:
    publish_many(tmp_path, upstream, projects=80, releases=4)  # 320 files
    root = tmp_path / "killed"
    config = write_config(tmp_path, upstream, root)
    log = tmp_path / "sync.log"
    for after in (60, 200):
        trigger = RequestTrigger(after=after)
        upstream.requests = trigger
        upstream.delay = 0.01
        proc = await start("sync", "-c", str(config), log=log)
        try:
            await asyncio.wait_for(trigger.event.wait(), 60)
        finally:
            proc.kill()  # SIGKILL
            await proc.wait()
        assert proc.returncode == -9, f"the sync finished before it was killed: {after}"
        # what a killed run leaves visible is verified and complete
        check_invariants(root, allow_unlisted=True)
    upstream.delay = 0
    code, out, err = await run_cli("sync", "-c", str(config))
    assert code == 0, err
    assert '"event": "sync_resuming"' in out
    clean = tmp_path / "clean"
    assert (await run_sync(sync_config(upstream, clean))).ok
    ours, theirs = web_tree(root), web_tree(clean)
    assert sorted(ours) == sorted(theirs)
    assert [k for k in ours if ours[k] != theirs[k]] == []
    assert len(filenames(root, "proj079")) == 4
    check_invariants(root)
    assert not list((root / "tmp").iterdir())


async def test_a_storage_failure_is_one_line_not_a_traceback(
    tmp_path: Path, upstream: FakePyPI
) -> None:
    record = upstream.add_file("demo", build_wheel(tmp_path / "dist", "demo", "1.0"))
    root = tmp_path / "mirror"
    obstacle = root / "web" / "packages" / record.url_path.split("/")[2]
    obstacle.parent.mkdir(parents=True)
    obstacle.write_bytes(b"a file where a directory must go")
    config = write_config(tmp_path, upstream, root)
    code, _, err = await run_cli("sync", "-c", str(config))
    assert code == 1
    assert "Traceback" not in err and "ExceptionGroup" not in err
    assert err.strip().count("\n") == 0 and "Not a directory" in err
