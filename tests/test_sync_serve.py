"""A synced tree served by ``serve``: pip and uv install from it offline; and ``serve``
with ``[sync] interval`` following the changelog itself, in cache and in mirror mode."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from tests.conftest import MirrorFactory, RunningMirror, clean_env
from tests.fakepypi import FakePyPI, build_sdist, build_wheel
from tests.sync_helpers import JSON, package_files, run_sync, sync_config

UV = Path(sys.executable).parent / "uv"


async def run(*cmd: str | Path) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *map(str, cmd),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=clean_env(),
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=180)
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


async def test_pip_and_uv_install_from_a_synced_tree_served_offline(
    tmp_path: Path, upstream: FakePyPI, make_mirror: MirrorFactory
) -> None:
    dist = tmp_path / "dist"
    upstream.add_file("Demo.Pkg", build_wheel(dist, "Demo.Pkg", "1.0"))
    upstream.add_file("Demo.Pkg", build_sdist(dist, "Demo.Pkg", "1.0"))
    upstream.add_file("tool", build_wheel(dist, "tool", "0.1", requires_dist=["demo-pkg>=1"]))
    root = tmp_path / "synced"
    assert (await run_sync(sync_config(upstream, root))).ok
    upstream.outage = 503  # nothing but the synced tree can answer now
    mirror = await make_mirror({"serve": {"offline": True}}, storage=root)
    url = mirror.index_url

    target = tmp_path / "pip-target"
    code, out = await run(
        sys.executable, "-m", "pip", "install", "--isolated", "--no-cache-dir",
        "--index-url", url, "--target", target, "tool",
    )  # fmt: skip
    assert code == 0, out
    assert (target / "tool" / "__init__.py").exists()
    assert (target / "demo_pkg" / "__init__.py").exists()

    target = tmp_path / "uv-target"
    code, out = await run(
        UV, "pip", "install", "--no-config", "--no-cache", "--python", sys.executable,
        "--index-url", url, "--target", target, "tool",
    )  # fmt: skip
    assert code == 0, out
    assert (target / "tool" / "__init__.py").exists()
    assert (target / "demo_pkg" / "__init__.py").exists()


async def served_files(mirror: RunningMirror, project: str) -> set[str]:
    status, _headers, body = await mirror.get(f"/simple/{project}/", headers={"Accept": JSON})
    assert status == 200, body
    return {f["filename"] for f in json.loads(body)["files"]}


async def next_rounds(mirror: RunningMirror, count: int = 2) -> None:
    """Until ``count`` more changelog rounds finished (one may have been under way)."""
    follower = mirror.services.follower
    assert follower is not None
    await asyncio.wait_for(follower.wait_rounds(follower.rounds + count), 30)


async def test_serve_in_cache_mode_shows_a_new_release_before_the_ttl(
    tmp_path: Path, upstream: FakePyPI, make_mirror: MirrorFactory
) -> None:
    dist = tmp_path / "dist"
    upstream.add_file("demo", build_wheel(dist, "demo", "1.0"))
    upstream.add_file("demo", build_sdist(dist, "demo", "1.0"))
    upstream.add_file("elsewhere", build_wheel(dist, "elsewhere", "1.0"))
    mirror = await make_mirror({"sync": {"interval": 1}, "serve": {"index-ttl": 3600}})
    await next_rounds(mirror, 1)
    assert await served_files(mirror, "demo") == {"demo-1.0-py3-none-any.whl", "demo-1.0.tar.gz"}
    sdist = upstream.file("demo", "demo-1.0.tar.gz").url_path
    status, _h, _b = await mirror.get(sdist)
    assert status == 200 and "demo-1.0.tar.gz" in package_files(mirror.root)
    status, _h, _b = await mirror.get("/simple/later/")
    assert status == 404  # remembered as missing for negative-ttl

    upstream.add_file("demo", build_wheel(dist, "demo", "2.0"))
    upstream.remove_file("demo", "demo-1.0.tar.gz")
    upstream.add_file("later", build_wheel(dist, "later", "1.0"))
    upstream.add_file("elsewhere", build_wheel(dist, "elsewhere", "2.0"))
    upstream.reset_log()
    await next_rounds(mirror)

    assert await served_files(mirror, "demo") == {
        "demo-1.0-py3-none-any.whl",
        "demo-2.0-py3-none-any.whl",
    }
    assert "demo-1.0.tar.gz" not in package_files(mirror.root)
    assert upstream.count("/simple/elsewhere/") == 0  # not cached: not fetched
    assert await served_files(mirror, "later") == {"later-1.0-py3-none-any.whl"}


async def test_serve_in_mirror_mode_syncs_and_applies_its_filters_to_misses(
    tmp_path: Path, upstream: FakePyPI, make_mirror: MirrorFactory
) -> None:
    dist = tmp_path / "dist"
    upstream.add_file("demo", build_wheel(dist, "demo", "1.0"))
    upstream.add_file("tool", build_wheel(dist, "tool", "1.0"))
    mirror = await make_mirror(
        {"sync": {"interval": 1, "mode": "mirror", "block": ["tool"], "workers": 2}}
    )
    await next_rounds(mirror, 1)
    assert "demo-1.0-py3-none-any.whl" in package_files(mirror.root)
    status, _h, body = await mirror.get("/simple/", headers={"Accept": JSON})
    assert status == 200
    assert [p["name"] for p in json.loads(body)["projects"]] == ["demo"]
    status, _h, _b = await mirror.get("/simple/tool/")
    assert status == 404  # blocked: not even fetched through

    upstream.add_file("demo", build_wheel(dist, "demo", "2.0"))
    upstream.reset_log()
    await next_rounds(mirror)
    assert "demo-2.0-py3-none-any.whl" in await served_files(mirror, "demo")
    assert "demo-2.0-py3-none-any.whl" in package_files(mirror.root)
