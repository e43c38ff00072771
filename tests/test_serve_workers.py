"""`serve` with several worker processes: they share the address and the storage, one
upstream download serves them all, metrics add up, SIGTERM stops them all; and the
storage's claims that make that work, between two real processes."""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import aiohttp

from mirror.core.layout import PackagePath
from mirror.storage.filesystem import FileSystemStorage
from tests.conftest import free_port
from tests.fakepypi import FakePyPI, build_sdist, build_wheel
from tests.test_cli_serve import start_serve, wait_until_up

REPO = Path(__file__).resolve().parent.parent


async def test_two_workers_share_one_download_and_their_metrics(
    tmp_path: Path, upstream: FakePyPI
) -> None:
    """30 clients ask both workers for one uncached file: one upstream GET, every client
    gets the verified bytes; /metrics counts the requests of both workers."""
    upstream.add_file("demo", build_wheel(tmp_path, "demo", "1.0"))
    sdist = build_sdist(tmp_path, "big", "1.0", pad_bytes=2_000_000)
    record = upstream.add_file("big", sdist)
    port = free_port()
    config = tmp_path / "mirror.toml"
    config.write_text(
        f'[storage]\npath = "{tmp_path / "data"}"\n'
        f'[upstream]\nurl = "{upstream.url}"\nfile-hosts = []\n'
        f'[serve]\nlisten = "127.0.0.1:{port}"\nworkers = 2\n'
        '[log]\nformat = "json"\n'
    )
    proc = await start_serve("serve", "-c", str(config))
    url = f"http://127.0.0.1:{port}/"
    digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
    try:
        await wait_until_up(url, proc)
        await wait_for_workers(url, {0, 1})
        async with aiohttp.ClientSession() as session:
            async with session.get(url + "simple/big/") as resp:
                assert resp.status == 200
            upstream.delay = 0.3  # the download takes a while: everyone arrives during it

            async def fetch() -> str:
                # A new connection each time, so that the kernel spreads them over workers.
                connector = aiohttp.TCPConnector(force_close=True)
                async with (
                    aiohttp.ClientSession(connector=connector) as own,
                    own.get(url + record.url_path.lstrip("/")) as resp,
                ):
                    assert resp.status == 200
                    return hashlib.sha256(await resp.read()).hexdigest()

            digests = await asyncio.gather(*(fetch() for _ in range(30)))
            assert set(digests) == {digest}
            assert upstream.count(record.url_path, "GET") == 1
            async with session.get(url + "metrics") as resp:
                text = await resp.text()
        served = sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith('pypi_mirror_requests_total{route="/packages/{tail}",status="200"}')
        )
        assert served == 30
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    events = [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]
    names = [e["event"] for e in events]
    assert names.count("worker_started") == 2 and "server_stopped" in names
    workers = {
        e.get("worker") for e in events if e["event"] == "request" and e["path"] == record.url_path
    }
    assert workers == {0, 1}, "both workers answered"
    starting = [e for e in events if e["event"] == "server_starting"]
    assert starting and starting[0]["workers"] == 2
    assert not list((tmp_path / "data" / "tmp").iterdir())


async def wait_for_workers(url: str, expected: set[int]) -> None:
    """Until every worker answered /health (each on a new connection)."""
    seen: set[int] = set()
    for _ in range(200):
        connector = aiohttp.TCPConnector(force_close=True)
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.get(url + "health") as resp,
        ):
            seen.add((await resp.json())["worker"])
        if seen >= expected:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"only workers {seen} answered")


HOLDER = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from mirror.storage.filesystem import FileSystemStorage

    async def main() -> None:
        storage = FileSystemStorage.open(Path(sys.argv[1]))
        claim = await storage.claim(sys.argv[2])
        assert claim is not None
        writer = storage.writer(sys.argv[2], claim=claim)
        await writer.write(b"first ")
        await writer.flush()
        print("claimed", flush=True)
        sys.stdin.readline()  # the test says when to go on
        await writer.write(b"second")
        if sys.argv[3] == "commit":
            await writer.commit()
        else:
            await writer.abort()
        await claim.release()

    asyncio.run(main())
    """
)


async def _hold(root: Path, rel: str, end: str) -> subprocess.Popen[str]:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(root), rel, end],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    assert holder.stdout is not None
    line = await asyncio.get_running_loop().run_in_executor(None, holder.stdout.readline)
    assert line.strip() == "claimed"
    return holder


async def test_a_claimed_write_is_followed_by_another_process(tmp_path: Path) -> None:
    storage = FileSystemStorage.open(tmp_path)
    rel = PackagePath("ab" * 32, "d-1.0.tar.gz").web
    holder = await _hold(tmp_path, rel, "commit")
    try:
        assert await storage.claim(rel) is None  # held elsewhere
        follow = await storage.follow(rel)
        assert follow is not None
        assert await follow.active()
        assert await follow.written() == len(b"first ")
        reader = await follow.open_reader()
        assert reader is not None
        assert await reader.read(100) == b"first "
        assert holder.stdin is not None
        holder.stdin.write("go\n")
        holder.stdin.flush()
        await asyncio.get_running_loop().run_in_executor(None, holder.wait)
        assert not await follow.active()
        assert await reader.read(100) == b"second"  # the same bytes, after the rename
        await reader.close()
        await follow.close()
    finally:
        holder.kill()
    assert (tmp_path / rel).read_bytes() == b"first second"
    claim = await storage.claim(rel)  # free again
    assert claim is not None
    await claim.release()
    assert not list((tmp_path / "tmp").iterdir())


async def test_a_claim_dies_with_its_process(tmp_path: Path) -> None:
    """kill -9 of the writer: the claim is free at once and nothing is committed."""
    storage = FileSystemStorage.open(tmp_path)
    rel = PackagePath("cd" * 32, "d-1.0.tar.gz").web
    holder = await _hold(tmp_path, rel, "commit")
    follow = await storage.follow(rel)
    assert follow is not None and await follow.active()
    holder.kill()
    await asyncio.get_running_loop().run_in_executor(None, holder.wait)
    assert not await follow.active()
    await follow.close()
    assert not (tmp_path / rel).exists()
    FileSystemStorage.open(tmp_path)  # the next start-up sweeps what the dead one left
    assert not list((tmp_path / "tmp").iterdir())
    claim = await storage.claim(rel)
    assert claim is not None
    await claim.release()
