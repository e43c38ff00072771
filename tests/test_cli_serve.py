"""The command line: `serve` as a real process, clear errors, graceful SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import aiohttp

from tests.conftest import clean_env, free_port
from tests.fakepypi import FakePyPI, build_wheel


async def start_serve(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mirror",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=clean_env(),
    )


async def wait_until_up(url: str, proc: asyncio.subprocess.Process) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(200):
            assert proc.returncode is None, "serve exited early"
            try:
                async with session.get(url + "health") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError("serve did not come up")


async def test_serve_runs_logs_json_lines_and_stops_on_sigterm(
    tmp_path: Path, upstream: FakePyPI
) -> None:
    upstream.add_file("demo", build_wheel(tmp_path, "demo", "1.0"))
    port = free_port()
    config = tmp_path / "mirror.toml"
    config.write_text(
        f'[storage]\npath = "{tmp_path / "data"}"\n'
        f'[upstream]\nurl = "{upstream.url}"\nfile-hosts = []\n'
        f'[serve]\nlisten = "127.0.0.1:{port}"\n'
    )
    proc = await start_serve("-c", str(config), "serve")  # -c before the command
    url = f"http://127.0.0.1:{port}/"
    try:
        await wait_until_up(url, proc)
        async with aiohttp.ClientSession() as session, session.get(url + "simple/demo/") as resp:
            assert resp.status == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    events = [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]
    names = [e["event"] for e in events]
    assert "server_starting" in names and "server_stopped" in names
    access = [e for e in events if e["event"] == "request" and e["path"] == "/simple/demo/"]
    assert access and access[0]["status"] == 200 and access[0]["cache"] == "miss"
    assert {"method", "bytes", "duration_ms", "request_id"} <= set(access[0])


async def test_bad_config_exits_2_with_key_and_file(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[serve]\nindex-ttl = 'soon'\n")
    proc = await start_serve("serve", "-c", str(config))
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    message = err.decode()
    assert "serve.index-ttl" in message and str(config) in message
    assert "Traceback" not in message


async def test_unusable_storage_exits_2(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    config = tmp_path / "c.toml"
    config.write_text(f'[storage]\npath = "{blocker / "sub"}"\n')
    proc = await start_serve("serve", "-c", str(config))
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    assert "storage path" in err.decode() and "Traceback" not in err.decode()
