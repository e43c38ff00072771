"""Shared fixtures: a real local upstream (tests/fakepypi) and the mirror's real app on a port."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict

from mirror.config import Config, config_from_mapping
from mirror.log import configure_logging
from mirror.server.app import create_app
from mirror.server.keys import SERVICES, Services
from mirror.server.middleware import runner_options
from tests.fakepypi import FakePyPI, running_upstream

configure_logging("debug", "console")

REPO = Path(__file__).resolve().parent.parent


async def run_cli(*args: str | Path, timeout: float = 120) -> tuple[int, str, str]:
    """``python -m mirror ARGS`` in the repository: exit code, stdout, stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mirror",
        *map(str, args),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


@pytest.fixture
async def upstream() -> AsyncIterator[FakePyPI]:
    async with running_upstream() as fake:
        yield fake


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for section, values in extra.items():
        out.setdefault(section, {}).update(values)
    return out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class RunningMirror:
    """The mirror's real app served on 127.0.0.1, restartable on the same port."""

    config: Config
    port: int
    runner: web.AppRunner | None = None
    app: web.Application | None = None
    session: aiohttp.ClientSession | None = field(default=None)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def index_url(self) -> str:
        return f"{self.url}simple/"

    @property
    def root(self) -> Path:
        return self.config.storage.path

    @property
    def services(self) -> Services:
        assert self.app is not None
        return self.app[SERVICES][0]

    async def start(self) -> None:
        self.app = create_app(self.config)
        self.runner = web.AppRunner(self.app, **runner_options())
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def get(self, path: str, **kwargs: Any) -> tuple[int, CIMultiDict[str], bytes]:
        """GET through a fresh client: status, headers, body."""
        assert self.session is not None
        headers = {"Accept-Encoding": "identity", **kwargs.pop("headers", {})}
        url = self.url + path.lstrip("/")
        async with self.session.get(url, allow_redirects=False, headers=headers, **kwargs) as resp:
            body = await resp.read()
            return resp.status, CIMultiDict(resp.headers), body


MirrorFactory = Callable[..., Awaitable[RunningMirror]]


@pytest.fixture
async def make_mirror(tmp_path: Path, upstream: FakePyPI) -> AsyncIterator[MirrorFactory]:
    started: list[RunningMirror] = []
    session = aiohttp.ClientSession(auto_decompress=False)

    async def factory(
        settings: dict[str, Any] | None = None, storage: Path | None = None
    ) -> RunningMirror:
        base = {
            "storage": {"path": str(storage or tmp_path / "mirror-data")},
            "upstream": {"url": upstream.url, "file-hosts": [], "timeout": 5.0, "retries": 1},
            "serve": {"listen": "127.0.0.1:0", "index-ttl": 600},
            # No changelog follower (the default in cache mode) unless a test asks for one:
            # tests count the upstream's requests.
            "sync": {"interval": 0},
        }
        config = config_from_mapping(merge(base, settings or {}), source="test", env={})
        mirror = RunningMirror(config, free_port(), session=session)
        await mirror.start()
        started.append(mirror)
        return mirror

    yield factory
    for mirror in started:
        await mirror.stop()
    await session.close()


@pytest.fixture
async def mirror(make_mirror: MirrorFactory) -> RunningMirror:
    return await make_mirror()


def clean_env() -> dict[str, str]:
    """The environment for pip/uv with this machine's index settings removed."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PIP_", "UV_")) and k not in ("VIRTUAL_ENV", "PYTHONPATH")
    }
    env["PIP_CONFIG_FILE"] = os.devnull
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["UV_NO_CONFIG"] = "1"
    return env
