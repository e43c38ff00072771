"""``pypi-mirror status`` as fits the mode: a pull-through cache reports what it holds and,
from its running daemon (one process, or a supervisor with workers), the hit rate and the
upstream's state — or says in one line that no daemon answers; a mirror keeps the sync's
serial, lag and last run. Both name where the configuration came from, environment
variables by name and never their values."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import aiohttp

from tests.conftest import MirrorFactory, clean_env, free_port
from tests.fakepypi import FakePyPI, build_wheel
from tests.sync_helpers import config_toml, publish, run_sync, sync_config
from tests.test_serve_lifecycle import Serve
from tests.test_serve_workers import wait_for_workers

REPO = Path(__file__).resolve().parent.parent


async def status(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """``pypi-mirror status ARGS`` in its own process (the test's loop serves meanwhile)."""
    base = {k: v for k, v in clean_env().items() if not k.startswith("PYPI_MIRROR_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mirror",
        "status",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**base, **(env or {})},
        cwd=REPO,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def status_json(*args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    code, out, err = await status(*args, "--json", env=env)
    assert code == 0, err
    report: dict[str, Any] = json.loads(out)
    return report


async def status_with_daemon(config: Path, *args: str) -> str:
    """The report (stdout) while a daemon runs; asked again (up to 3 times) when the
    daemon was too slow for status's one-second bound on a loaded test machine."""
    for _ in range(3):
        code, out, err = await status("-c", str(config), *args)
        assert code == 0, err
        if "no answer within" not in out:
            break
    return out


def write_config(tmp_path: Path, upstream: FakePyPI, storage: Path, port: int) -> Path:
    config = tmp_path / "status.toml"
    config.write_text(
        f'[storage]\npath = "{storage}"\n'
        f'[upstream]\nurl = "{upstream.url}"\nfile-hosts = []\n'
        f'[serve]\nlisten = "127.0.0.1:{port}"\n'
        "[sync]\ninterval = 0\n"
    )
    return config


def packages_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in (root / "web" / "packages").rglob("*") if p.is_file())


async def test_cache_status_without_a_daemon_reports_what_it_holds(
    tmp_path: Path, upstream: FakePyPI, make_mirror: MirrorFactory
) -> None:
    record = upstream.add_file("demo", build_wheel(tmp_path / "dist", "demo", "1.0"))
    upstream.add_file("other", build_wheel(tmp_path / "dist", "other", "2.0"))
    mirror = await make_mirror()
    for path in ("/simple/demo/", record.url_path, "/simple/other/"):
        assert (await mirror.get(path))[0] == 200, path
    await mirror.stop()
    port = free_port()  # nothing listens there
    config = write_config(tmp_path, upstream, mirror.root, port)

    report = await status_json("-c", str(config))
    assert report["mode"] == "cache"
    assert (report["projects"], report["files"]) == (2, 1)
    assert report["bytes"] == packages_bytes(mirror.root) > 0
    assert report["daemon"]["answering"] is False
    assert report["daemon"]["error"] == "connection refused"

    code, out, err = await status("-c", str(config))
    assert code == 0, err
    assert 'mode        pull-through cache ([sync] mode = "cache")' in out
    assert "held        2 projects with pages, 1 file (" in out
    assert f"daemon      none answers on 127.0.0.1:{port} (connection refused)" in out
    assert "sync" not in out.replace("[sync]", "")  # no advice to run a sync


async def test_cache_status_of_an_empty_cache_is_not_an_error(
    tmp_path: Path, upstream: FakePyPI
) -> None:
    config = write_config(tmp_path, upstream, tmp_path / "nothing-yet", free_port())
    report = await status_json("-c", str(config))
    assert (report["mode"], report["projects"], report["files"], report["bytes"]) == (
        "cache",
        0,
        0,
        0,
    )


async def test_cache_status_reports_the_daemons_hit_rate_and_upstream_state(
    tmp_path: Path, upstream: FakePyPI, make_mirror: MirrorFactory
) -> None:
    record = upstream.add_file("demo", build_wheel(tmp_path / "dist", "demo", "1.0"))
    mirror = await make_mirror()
    for path in ("/simple/demo/", "/simple/demo/", record.url_path, record.url_path):
        assert (await mirror.get(path))[0] == 200, path
    config = write_config(tmp_path, upstream, mirror.root, mirror.port)

    report = json.loads(await status_with_daemon(config, "--json"))
    daemon = report["daemon"]
    assert daemon["answering"] is True, daemon
    assert (daemon["health"], daemon["serving"]) == ("ok", "pull-through")
    assert daemon["lookups"] == {"page": {"miss": 1, "hit": 1}, "file": {"miss": 1, "hit": 1}}
    assert daemon["hit_rate"] == 0.5 and daemon["hit_rates"] == {"page": 0.5, "file": 0.5}
    assert daemon["upstream_breaker"]["state"] == "closed"
    assert daemon["changelog"]["state"] == "off"
    assert (report["projects"], report["files"]) == (1, 1)

    out = await status_with_daemon(config)
    assert f"daemon      {mirror.url}: ok, pull-through" in out
    assert (
        "hit rate    50% of 4 lookups since the daemon started (files 50% of 2, pages 50% of 2)"
        in out
    )
    assert "breaker     closed since " in out
    assert "changelog   off" in out


async def test_cache_status_adds_up_the_workers_of_a_supervisor(
    tmp_path: Path, upstream: FakePyPI
) -> None:
    record = upstream.add_file("demo", build_wheel(tmp_path / "dist", "demo", "1.0"))
    serve = Serve(tmp_path, upstream, serve="workers = 2")
    await serve.start()
    try:
        await wait_for_workers(serve.url, {0, 1})
        for path in ("simple/demo/", *(record.url_path.lstrip("/"),) * 3):
            # a new connection each time: the kernel spreads them over the workers
            connector = aiohttp.TCPConnector(force_close=True)
            async with (
                aiohttp.ClientSession(connector=connector) as session,
                session.get(serve.url + path) as resp,
            ):
                assert resp.status == 200, path
                await resp.read()
        report = json.loads(await status_with_daemon(serve.config, "--json"))
    finally:
        await serve.stop()
        await serve.finish()
    daemon = report["daemon"]
    assert daemon["answering"] is True, daemon
    assert daemon["lookups"]["file"] == {"miss": 1, "hit": 2}
    assert daemon["lookups"]["page"] == {"miss": 1}
    assert daemon["hit_rate"] == 0.5


async def test_status_names_the_file_and_the_environment_variables_applied(
    tmp_path: Path, upstream: FakePyPI
) -> None:
    config = write_config(tmp_path, upstream, tmp_path / "data", free_port())
    secret_url = f"http://mirror-user:s3cret-value@127.0.0.1:{free_port()}/"
    env = {"PYPI_MIRROR_SERVE_INDEX_TTL": "5", "PYPI_MIRROR_UPSTREAM_URL": secret_url}

    code, out, err = await status("-c", str(config), env=env)
    assert code == 0, err
    assert (
        f"config      {config} + environment PYPI_MIRROR_SERVE_INDEX_TTL, PYPI_MIRROR_UPSTREAM_URL"
    ) in out
    assert "embedded defaults" not in out
    assert "s3cret" not in out and "mirror-user:***@" in out

    code, out, err = await status("-c", str(config), "--json", env=env)
    assert code == 0, err
    assert "s3cret" not in out
    assert json.loads(out)["configuration"] == {
        "file": str(config),
        "source": str(config),
        "environment": ["PYPI_MIRROR_SERVE_INDEX_TTL", "PYPI_MIRROR_UPSTREAM_URL"],
    }

    env = {"PYPI_MIRROR_STORAGE_PATH": str(tmp_path / "data")}  # no file
    code, out, err = await status(env=env)
    assert code == 0, err
    assert "config      embedded defaults + environment PYPI_MIRROR_STORAGE_PATH" in out


async def test_a_synced_storage_gets_the_mirror_report(tmp_path: Path, upstream: FakePyPI) -> None:
    """``sync`` mirrors whatever ``[sync] mode`` says: after it ran, status reports the
    serial and lag (mode "cache", the default, as in the cron set-up)."""
    publish(tmp_path, upstream)
    root = tmp_path / "m"
    assert (await run_sync(sync_config(upstream, root))).ok
    config = tmp_path / "sync.toml"
    config.write_text(config_toml(upstream, root))
    report = await status_json("-c", str(config))
    assert (report["mode"], report["configured_mode"]) == ("mirror", "cache")
    assert report["serial"] == upstream.serial == report["upstream_serial"]
    assert report["lag"] == 0 and report["last_run"]["result"] == "ok"
    code, out, err = await status("-c", str(config))
    assert code == 0, err
    assert 'mode        mirror (synced by pypi-mirror sync; [sync] mode = "cache")' in out
    assert f"serial      {upstream.serial} (upstream {upstream.serial}, lag 0)" in out
    assert "last run    ok (full)" in out


async def test_mirror_mode_before_the_first_sync_says_to_run_it(
    tmp_path: Path, upstream: FakePyPI
) -> None:
    config = tmp_path / "mirror.toml"
    config.write_text(config_toml(upstream, tmp_path / "empty", mode="mirror"))
    code, out, err = await status("-c", str(config))
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "run 'pypi-mirror sync' first" in lines[0]
