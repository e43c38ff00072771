"""Helpers shared by the trust tests: a TUF-verifying mirror, health, metrics, clients."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from tests.conftest import MirrorFactory, RunningMirror, clean_env
from tests.tufrepo import TufRepo

UV = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")


async def tuf_mirror(
    make_mirror: MirrorFactory,
    repo: TufRepo,
    tmp_path: Path,
    scheme: str = "files",
    *,
    storage: Path | None = None,
    index_ttl: int = 0,
    **tuf: Any,
) -> RunningMirror:
    """A mirror in ``[tuf] mode = "verify"`` pinning ``repo``'s first root.

    Pages are revalidated on every request (``index-ttl = 0``) so that files the test
    adds later are listed; ``tuf`` are further ``[tuf]`` keys (``refresh_interval=0``...).
    """
    root = tmp_path / "pinned-root.json"
    if not root.exists():
        root.write_bytes(repo.root_bytes)
    settings = {"mode": "verify", "root": str(root), "targets": scheme}
    settings.update({k.replace("_", "-"): v for k, v in tuf.items()})
    return await make_mirror({"tuf": settings, "serve": {"index-ttl": index_ttl}}, storage=storage)


async def download(mirror: RunningMirror, url_path: str) -> tuple[int, bytes]:
    """What a client does: the project page (revalidated), then the file."""
    filename = url_path.rsplit("/", 1)[-1]
    project = filename.split("-", 1)[0].replace("_", "-")
    await mirror.get(f"/simple/{project}/")
    status, _, body = await mirror.get(url_path)
    return status, body


async def health(mirror: RunningMirror) -> dict[str, Any]:
    status, _, body = await mirror.get("/health")
    assert status == 200
    data: dict[str, Any] = json.loads(body)
    return data


def integrity_failures(mirror: RunningMirror) -> float:
    registry = mirror.services.metrics.registry
    total = 0.0
    for metric in registry.collect():
        if metric.name == "pypi_mirror_integrity_failures":
            total += sum(s.value for s in metric.samples if s.name.endswith("_total"))
    return total


def stored_packages(mirror: RunningMirror) -> list[Path]:
    packages = mirror.root / "web" / "packages"
    if not packages.exists():
        return []
    return sorted(p for p in packages.rglob("*") if p.is_file())


async def run(*cmd: str | Path, timeout: float = 120) -> tuple[int, str]:
    """Run a client without blocking the loop that serves the mirror; no retries of the
    mirror's 502s (a refusal is final, retrying it only makes the test slow)."""
    env = clean_env()
    env["UV_HTTP_RETRIES"] = "0"
    proc = await asyncio.create_subprocess_exec(
        *map(str, cmd),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


async def pip_install(mirror: RunningMirror, target: Path, *requirements: str) -> tuple[int, str]:
    """``pip install --target`` through the mirror only."""
    return await run(
        sys.executable,
        "-m",
        "pip",
        "install",
        "--isolated",
        "--no-cache-dir",
        "--disable-pip-version-check",
        "--retries",
        "0",
        "--index-url",
        mirror.index_url,
        "--target",
        target,
        *requirements,
    )


async def uv_install(mirror: RunningMirror, target: Path, *requirements: str) -> tuple[int, str]:
    """``uv pip install --target`` through the mirror only."""
    assert UV is not None, "uv is installed by `make test` (test extra)"
    return await run(
        UV,
        "pip",
        "install",
        "--no-config",
        "--no-cache",
        "--python",
        sys.executable,
        "--index-url",
        mirror.index_url,
        "--target",
        target,
        *requirements,
    )
