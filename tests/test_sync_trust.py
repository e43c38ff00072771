"""`sync` in `[tuf] mode = "verify"`: a file that does not match its signed target, or has
none, is never stored; the project stays out and the run reports it; the rest is synced."""

from __future__ import annotations

from pathlib import Path

from mirror.config import Config
from mirror.sync.status import gather_status, render_status
from tests.fakepypi import FakePyPI, build_wheel
from tests.sync_helpers import check_invariants, filenames, package_files, run_sync, sync_config
from tests.tufrepo import TufRepo


def tuf_sync_config(upstream: FakePyPI, root: Path, pinned: Path) -> Config:
    return sync_config(
        upstream, root, tuf={"mode": "verify", "root": str(pinned), "targets": "files"}
    )


async def test_sync_refuses_files_without_a_matching_signed_target(
    tmp_path: Path, upstream: FakePyPI
) -> None:
    dist = tmp_path / "dist"
    good = upstream.add_file("good", build_wheel(dist, "good", "1.0"))
    signed = upstream.add_file("victim", build_wheel(dist, "victim", "1.0"))
    repo = TufRepo(upstream, shape="bins")
    repo.add_file(good)
    repo.add_file(signed)
    repo.publish()
    pinned = tmp_path / "root.json"
    pinned.write_bytes(repo.root_bytes)
    # The CDN swaps victim's file for unsigned bytes under their own consistent path.
    upstream.remove_file("victim", signed.filename)
    upstream.add_file("victim", build_wheel(tmp_path / "evil", "victim", "1.0", pad_bytes=99))

    root = tmp_path / "mirror"
    config = tuf_sync_config(upstream, root, pinned)
    result = await run_sync(config)

    assert not result.ok
    assert "victim" in (result.reason or "")
    assert filenames(root, "good") == {"good-1.0-py3-none-any.whl"}
    assert filenames(root, "victim") == set()
    assert package_files(root) == {"good-1.0-py3-none-any.whl"}
    check_invariants(root)
    assert (root / "web" / "tuf" / "timestamp.json").exists()


async def test_status_reports_the_trust_state_and_a_freeze_keeps_what_was_verified(
    tmp_path: Path, upstream: FakePyPI
) -> None:
    dist = tmp_path / "dist"
    first = upstream.add_file("good", build_wheel(dist, "good", "1.0"))
    repo = TufRepo(upstream)
    repo.add_file(first)
    repo.publish()
    pinned = tmp_path / "root.json"
    pinned.write_bytes(repo.root_bytes)
    root = tmp_path / "mirror"
    config = tuf_sync_config(upstream, root, pinned)
    assert (await run_sync(config)).ok

    status = await gather_status(config, ask_upstream=False)
    assert status["tuf"]["state"] == "ok"
    assert status["tuf"]["root_version"] == 1

    second = upstream.add_file("good", build_wheel(dist, "good", "2.0"))
    repo.add_file(second)
    repo.publish()
    repo.expire("timestamp")  # a freeze attack: the newest timestamp has expired
    result = await run_sync(config)
    assert not result.ok
    status = await gather_status(config, ask_upstream=False)
    assert status["tuf"]["state"] in ("refused", "expired")
    assert "expired" in (status["tuf"]["last_error"] or "")
    assert "trust" in render_status(status)
    assert filenames(root, "good") == {"good-1.0-py3-none-any.whl"}
    check_invariants(root)
