"""``[tuf]`` configuration, ``serve`` refusing to start without metadata, and ``mode = "off"``."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import aiohttp
import pytest

from mirror.config import config_from_mapping
from mirror.errors import ConfigError
from tests.conftest import MirrorFactory, clean_env, free_port
from tests.fakepypi import FakePyPI, build_wheel
from tests.tufrepo import TufRepo
from tests.tufrepo.support import health, integrity_failures, stored_packages


def tuf_config(tmp_path: Path, **tuf: object) -> None:
    config_from_mapping(
        {"tuf": {k.replace("_", "-"): v for k, v in tuf.items()}},
        source=str(tmp_path / "mirror.toml"),
        env={},
    )


def test_verify_without_a_pinned_root_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        tuf_config(tmp_path, mode="verify")
    message = str(info.value)
    assert "mirror.toml" in message and "tuf.root" in message and "verify" in message


def test_verify_with_a_missing_root_file_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "root.json"
    with pytest.raises(ConfigError) as info:
        tuf_config(tmp_path, mode="verify", root=str(missing))
    assert "tuf.root" in str(info.value) and str(missing) in str(info.value)


def test_verify_with_a_root_that_is_not_tuf_metadata_is_refused(tmp_path: Path) -> None:
    bogus = tmp_path / "root.json"
    bogus.write_text('{"signed": {"_type": "root"}}')
    with pytest.raises(ConfigError) as info:
        tuf_config(tmp_path, mode="verify", root=str(bogus))
    assert "tuf.root" in str(info.value) and "not a valid" in str(info.value)


async def test_verify_with_a_root_signed_by_the_wrong_key_is_refused(
    tmp_path: Path, upstream: FakePyPI
) -> None:
    """A pinned root must be signed by its own root keys (threshold)."""
    repo = TufRepo(upstream, thresholds={"root": 2})
    repo.sign_only("root", 1)
    repo.rotate_root(roles=())
    bad = tmp_path / "root.json"
    bad.write_bytes(repo.roots[2])
    with pytest.raises(ConfigError, match=r"tuf\.root"):
        tuf_config(tmp_path, mode="verify", root=str(bad))


@pytest.mark.parametrize(
    ("key", "value"),
    [("index_target", "simple/project.html"), ("index_page", "{name}/{sha1}.html")],
)
def test_index_templates_are_checked(tmp_path: Path, key: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        tuf_config(tmp_path, **{key: value})
    assert f"tuf.{key.replace('_', '-')}" in str(info.value)


async def test_mode_off_still_verifies_sha256_and_blake2b(
    tmp_path: Path, upstream: FakePyPI, make_mirror: MirrorFactory
) -> None:
    """Without TUF the page's sha256 and the path's blake2b-256 still guard every file;
    nothing TUF-related is served."""
    wheel = build_wheel(tmp_path / "dist", "demo", "1.0", pad_bytes=200_000)
    record = upstream.add_file("demo", wheel)
    mirror = await make_mirror({"tuf": {"mode": "off"}})
    upstream.tamper_files = True
    await mirror.get("/simple/demo/")
    try:
        status, _, _ = await mirror.get(record.url_path)
    except aiohttp.ClientPayloadError:  # aborted once the mismatch was known
        status = 0
    assert status != 200
    assert stored_packages(mirror) == []
    assert integrity_failures(mirror) >= 1
    assert (await health(mirror))["tuf"] == {"mode": "off"}
    status, _, _ = await mirror.get("/tuf/timestamp.json")
    assert status == 404

    upstream.tamper_files = False
    status, _, body = await mirror.get(record.url_path)
    assert status == 200 and body == wheel.read_bytes()


def serve_config(tmp_path: Path, upstream_url: str, root: Path, port: int, **tuf: str) -> Path:
    config = tmp_path / "mirror.toml"
    extra = "".join(f'{key} = "{value}"\n' for key, value in tuf.items())
    config.write_text(
        f'[storage]\npath = "{tmp_path / "data"}"\n'
        f'[upstream]\nurl = "{upstream_url}"\nfile-hosts = []\ntimeout = 2.0\nretries = 0\n'
        f'[serve]\nlisten = "127.0.0.1:{port}"\n'
        f'[tuf]\nmode = "verify"\nroot = "{root}"\n{extra}'
    )
    return config


async def test_serve_refuses_to_start_when_the_metadata_url_is_unreachable(
    tmp_path: Path, upstream: FakePyPI
) -> None:
    """``verify`` with nowhere to get metadata from: exit code 2 and one clear line."""
    repo = TufRepo(upstream)
    root = tmp_path / "root.json"
    root.write_bytes(repo.root_bytes)
    dead = f"http://127.0.0.1:{free_port()}/tuf/"
    config = serve_config(tmp_path, upstream.url, root, free_port(), **{"metadata-url": dead})
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mirror",
        "serve",
        "-c",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=clean_env(),
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 2, (out, err)
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert "cannot start" in lines[0] and "[tuf]" in lines[0] and dead in lines[0]
    assert "metadata-url" in lines[0] and str(config) in lines[0]


async def test_serve_starts_in_verify_mode_and_reports_trust_in_health(
    tmp_path: Path, upstream: FakePyPI
) -> None:
    """The same command with reachable metadata starts; /health shows the trusted state."""
    repo = TufRepo(upstream)
    root = tmp_path / "root.json"
    root.write_bytes(repo.root_bytes)
    port = free_port()
    config = serve_config(tmp_path, upstream.url, root, port)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mirror",
        "serve",
        "-c",
        str(config),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env=clean_env(),
    )
    url = f"http://127.0.0.1:{port}/health"
    try:
        async with aiohttp.ClientSession() as session:
            body = None
            for _ in range(400):
                assert proc.returncode is None, "serve exited early"
                try:
                    async with session.get(url) as resp:
                        body = json.loads(await resp.read())
                        break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.05)
            assert body is not None
            assert body["tuf"]["state"] == "ok" and body["tuf"]["root_version"] == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), timeout=30)
    assert (tmp_path / "data" / "web" / "tuf" / "timestamp.json").is_file()
