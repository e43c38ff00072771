"""Bundles of a mirror in ``[tuf] mode = "verify"``: they carry the verified TUF metadata,
and the offline host checks it with its own pinned root, and every file against it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mirror.bundle.errors import BundleError
from mirror.core import layout
from tests.bundle_helpers import (
    export,
    import_,
    make_key,
    offline_config,
    served_state,
    source_config,
)
from tests.fakepypi import FakePyPI, build_wheel
from tests.sync_helpers import check_invariants, run_sync
from tests.tufrepo import TufRepo


def tuf_settings(pinned: Path) -> dict[str, dict[str, str]]:
    return {"tuf": {"mode": "verify", "root": str(pinned), "targets": "files"}}


async def test_files_are_checked_against_the_bundled_metadata_with_the_pinned_root(
    tmp_path: Path, upstream: FakePyPI
) -> None:
    dist = tmp_path / "dist"
    records = [
        upstream.add_file("good", build_wheel(dist, "good", "1.0")),
        upstream.add_file("other", build_wheel(dist, "other", "2.0")),
    ]
    repo = TufRepo(upstream, shape="bins")
    for record in records:
        repo.add_file(record)
    repo.publish()
    pinned = tmp_path / "root.json"
    pinned.write_bytes(repo.root_bytes)
    key, pub = make_key(tmp_path)
    a = source_config(upstream, tmp_path / "a", key, **tuf_settings(pinned))
    assert (await run_sync(a)).ok
    bundle = tmp_path / "bundle.tar"
    result = await export(a, bundle)
    assert any(True for _ in (tmp_path / "a" / layout.WEB_TUF).iterdir())
    await upstream.stop()

    # Another root (a bundle built from a different repository, or metadata re-signed by
    # whoever swapped the bundle): refused, nothing applied.
    stranger = TufRepo(upstream)
    other_root = tmp_path / "other-root.json"
    other_root.write_bytes(stranger.root_bytes)
    b_other = offline_config(tmp_path / "b", [pub], **tuf_settings(other_root))
    with pytest.raises(BundleError, match="pinned root"):
        await import_(b_other, bundle)
    assert served_state(tmp_path / "b") == {}

    # A host that verifies but gets a bundle without metadata: refused.
    plain = source_config(upstream, tmp_path / "a", key)
    bare = tmp_path / "bare.tar"
    await export(plain, bare, everything=True)
    b = offline_config(tmp_path / "b", [pub], **tuf_settings(pinned))
    with pytest.raises(BundleError, match="carries no TUF metadata"):
        await import_(b, bare)

    # A file altered in the source's store (and so listed with its altered digest by a
    # manifest the trusted key signed): its signed target refuses it.
    shutil.copytree(tmp_path / "a", tmp_path / "a2")
    wheel = next(p for p in (tmp_path / "a2" / layout.WEB_PACKAGES).rglob("*.whl"))
    data = bytearray(wheel.read_bytes())
    data[len(data) // 2] ^= 0x01
    wheel.write_bytes(bytes(data))
    altered = source_config(upstream, tmp_path / "a2", key, **tuf_settings(pinned))
    await export(altered, tmp_path / "altered.tar", everything=True)
    with pytest.raises(BundleError, match=f"{wheel.name}: does not match its signed TUF target"):
        await import_(b, tmp_path / "altered.tar")
    assert served_state(tmp_path / "b") == {}

    # The right root: every file verified against its signed target, then applied.
    applied = await import_(b, bundle)
    assert applied.projects == result.projects == 2
    assert served_state(tmp_path / "b") == served_state(tmp_path / "a")
    assert (tmp_path / "b" / layout.web_tuf("timestamp.json")).exists()
    check_invariants(tmp_path / "b")
