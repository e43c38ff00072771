"""Bundles from a pull-through cache (no serial of its own): the first covers what it
holds, each next one what it stored since the last export; the offline host serves the
pages cut to the files it holds."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from mirror.bundle.errors import AlreadyApplied, BundleError
from mirror.bundle.manifest import RangeKind
from tests.bundle_helpers import (
    bundle_paths,
    export,
    import_,
    make_key,
    offline_config,
    served_state,
)
from tests.conftest import MirrorFactory
from tests.fakepypi import FakePyPI, build_sdist, build_wheel


async def test_pull_through_exports_what_changed_since_the_last_export(
    tmp_path: Path, upstream: FakePyPI, make_mirror: MirrorFactory
) -> None:
    dist = tmp_path / "dist"
    tool = upstream.add_file("tool", build_wheel(dist, "tool", "0.1"))
    wheel = upstream.add_file("demo-pkg", build_wheel(dist, "demo-pkg", "1.0"))
    sdist = upstream.add_file("demo-pkg", build_sdist(dist, "demo-pkg", "1.0"))
    key, pub = make_key(tmp_path)
    a = await make_mirror({"bundle": {"signing-key": str(key)}}, storage=tmp_path / "a")
    assert (await a.get("/simple/tool/"))[0] == 200
    assert (await a.get(tool.url_path))[0] == 200
    one = await export(a.config, tmp_path / "one.tar")
    assert (one.kind, one.start, one.end) == (RangeKind.SEQUENCE, 0, 1)

    b = offline_config(tmp_path / "b", [pub], sync={"mode": "cache"})
    assert (await import_(b, tmp_path / "one.tar")).projects == 1

    time.sleep(0.02)  # mtimes after the first export's start
    assert (await a.get("/simple/demo-pkg/"))[0] == 200
    assert (await a.get(wheel.url_path))[0] == 200
    two = await export(a.config, tmp_path / "two.tar")
    assert (two.start, two.end) == (1, 2)
    assert two.projects == 1  # demo-pkg only: tool's page was not fetched again
    paths = bundle_paths(tmp_path / "two.tar")
    assert not any(p.endswith(tool.filename) for p in paths)
    assert any(p.endswith(wheel.filename) for p in paths)

    with pytest.raises(BundleError, match="gap"):
        await import_(
            offline_config(tmp_path / "c", [pub], sync={"mode": "cache"}), tmp_path / "two.tar"
        )
    await import_(b, tmp_path / "two.tar")
    with pytest.raises(AlreadyApplied):
        await import_(b, tmp_path / "one.tar")
    assert served_state(tmp_path / "b") == served_state(tmp_path / "a")

    await upstream.stop()
    offline = await make_mirror(
        {"serve": {"offline": True}, "bundle": {"trusted-keys": [str(pub)]}}, storage=tmp_path / "b"
    )
    status, _, body = await offline.get(
        "/simple/demo-pkg/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    )
    assert status == 200
    listed = {f["filename"] for f in json.loads(body)["files"]}
    assert listed == {wheel.filename}  # the sdist was never fetched, so not held
    assert (await offline.get(wheel.url_path))[0] == 200
    assert (await offline.get(sdist.url_path))[0] == 404
