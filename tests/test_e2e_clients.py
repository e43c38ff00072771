"""Real clients through the running mirror: pip and uv install into fresh venvs.

The clients are isolated from this machine's pip set-up (extra indexes, find-links) so that
only the mirror can satisfy them.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path

import pytest

from tests.conftest import RunningMirror, clean_env
from tests.fakepypi import FakePyPI, build_sdist, build_wheel

UV = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")


async def run(*cmd: str | Path, cwd: Path | None = None) -> tuple[int, str]:
    """Run a client without blocking the event loop that serves the mirror."""
    proc = await asyncio.create_subprocess_exec(
        *map(str, cmd),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=clean_env(),
        cwd=cwd,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=180)
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


async def new_venv(path: Path) -> Path:
    code, out = await run(sys.executable, "-m", "venv", "--without-pip", path)
    assert code == 0, out
    return path / "bin" / "python"


async def pip_install(mirror: RunningMirror, venv: Path, *requirements: str) -> tuple[int, str]:
    python = await new_venv(venv)
    return await run(
        sys.executable,
        "-m",
        "pip",
        "--python",
        python,
        "install",
        "--isolated",
        "--no-cache-dir",
        "--disable-pip-version-check",
        "--index-url",
        mirror.index_url,
        *requirements,
    )


async def uv_install(mirror: RunningMirror, venv: Path, *requirements: str) -> tuple[int, str]:
    assert UV is not None, "uv is installed by `make test` (test extra)"
    code, out = await run(UV, "venv", "--no-config", "--no-cache", "--python", sys.executable, venv)
    assert code == 0, out
    return await run(
        UV,
        "pip",
        "install",
        "--no-config",
        "--no-cache",
        "--python",
        venv / "bin" / "python",
        "--index-url",
        mirror.index_url,
        *requirements,
    )


async def installed_version(venv: Path, module: str) -> str:
    code, out = await run(
        venv / "bin" / "python", "-c", f"import {module}; print({module}.__version__)"
    )
    assert code == 0, out
    return out.strip()


def publish_corpus(tmp_path: Path, upstream: FakePyPI) -> None:
    """app needs dep; of dep, 2.0 is yanked and 1.5 requires Python 4: 1.0 must be chosen."""
    dist = tmp_path / "dist"
    upstream.add_file(
        "e2e-app", build_wheel(dist, "e2e-app", "1.0", requires_dist=["e2e-dep>=1.0"])
    )
    upstream.add_file("e2e-app", build_sdist(dist, "e2e-app", "1.0"))
    upstream.add_file("e2e-dep", build_wheel(dist, "e2e-dep", "1.0"))
    upstream.add_file("e2e-dep", build_wheel(dist, "e2e-dep", "1.5", requires_python=">=4"))
    upstream.add_file("e2e-dep", build_wheel(dist, "e2e-dep", "2.0"), yanked="broken")
    # A wheel without upstream metadata: uv/pip must still work (the mirror extracts it).
    upstream.add_file("e2e-plain", build_wheel(dist, "e2e-plain", "0.3"), serve_metadata=False)


@pytest.mark.parametrize("client", ["pip", "uv"])
async def test_client_installs_through_mirror_then_from_cache_during_outage(
    client: str, tmp_path: Path, upstream: FakePyPI, mirror: RunningMirror
) -> None:
    publish_corpus(tmp_path, upstream)
    install = pip_install if client == "pip" else uv_install

    code, out = await install(mirror, tmp_path / "venv1", "e2e-app", "e2e-plain")
    assert code == 0, out
    assert await installed_version(tmp_path / "venv1", "e2e_app") == "1.0"
    assert await installed_version(tmp_path / "venv1", "e2e_dep") == "1.0"
    assert await installed_version(tmp_path / "venv1", "e2e_plain") == "0.3"
    assert upstream.count("/packages/") >= 3

    await upstream.stop()
    code, out = await install(mirror, tmp_path / "venv2", "e2e-app", "e2e-plain")
    assert code == 0, out
    assert await installed_version(tmp_path / "venv2", "e2e_dep") == "1.0"


async def test_pip_refuses_a_tampered_file(
    tmp_path: Path, upstream: FakePyPI, mirror: RunningMirror
) -> None:
    publish_corpus(tmp_path, upstream)
    upstream.tamper_files = True
    code, out = await pip_install(mirror, tmp_path / "venv", "e2e-dep")
    assert code != 0, out
    assert not list((mirror.root / "web" / "packages").rglob("*.whl"))
