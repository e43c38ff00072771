"""`serve` as a real process: how it ends (SIGTERM with a request waiting on a hung
upstream, with a download in flight, with several workers; a restart after kill -9), the
requests its HTTP parser rejects, and its log: every stdout line is JSON."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from tests.conftest import clean_env, free_port
from tests.fakepypi import FakePyPI, build_sdist, build_wheel
from tests.test_cli_serve import wait_until_up
from tests.test_serve_workers import wait_for_workers

REPO = Path(__file__).resolve().parent.parent
# SIGTERM to exit: the grace, and at most this much more (the issue: "a second or two";
# with slack for a loaded test machine).
EXIT_SLACK = 3.0
# No request of these tests waits longer than this (a hang fails, with the server's log).
BOUND = aiohttp.ClientTimeout(total=20)


class Serve:
    """``pypi-mirror serve`` in its own process group, its stdout read as it comes."""

    def __init__(self, tmp_path: Path, upstream: FakePyPI, serve: str = "", log: str = "") -> None:
        self.port = free_port()
        self.root = tmp_path / "data"
        self.config = tmp_path / "mirror.toml"
        self.config.write_text(
            f'[storage]\npath = "{self.root}"\n'
            f'[upstream]\nurl = "{upstream.url}"\nfile-hosts = []\ntimeout = 30\n'
            f'[serve]\nlisten = "127.0.0.1:{self.port}"\n{serve}\n'
            f'[log]\nformat = "json"\n{log}\n'
        )
        self.url = f"http://127.0.0.1:{self.port}/"
        self.lines: list[str] = []
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._stderr: asyncio.Task[bytes] | None = None

    async def start(self, *prefix: str) -> None:
        """Start it (``prefix``: what runs instead of ``-m mirror``) and wait until it answers."""
        command = prefix or ("-m", "mirror")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            *command,
            "serve",
            "-c",
            str(self.config),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=clean_env(),
            cwd=REPO,
            start_new_session=True,  # its own process group, as under systemd
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._reader = asyncio.create_task(self._read(self.proc.stdout))
        self._stderr = asyncio.create_task(self.proc.stderr.read())
        try:
            await asyncio.wait_for(wait_until_up(self.url, self.proc), 20)
        except (AssertionError, TimeoutError) as exc:
            stderr = await self.finish()
            raise AssertionError(f"not up ({exc!r}):\n{''.join(self.lines)}{stderr}") from None

    async def _read(self, stream: asyncio.StreamReader) -> None:
        async for line in stream:
            self.lines.append(line.decode())

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """The JSON lines so far (all of them must be JSON), or those of one event."""
        parsed = [json.loads(line) for line in self.lines]
        return [e for e in parsed if name is None or e["event"] == name]

    async def wait_for_event(self, name: str, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [e for e in self.events() if e["event"] == name]
            if found:
                return found[0]
            await asyncio.sleep(0.02)
        raise AssertionError(f"no {name} event")

    async def stop(self, signum: int = signal.SIGTERM, timeout: float = 30.0) -> float:
        """Send ``signum``; seconds until it exited (its code in ``self.proc.returncode``)."""
        assert self.proc is not None
        started = time.monotonic()
        self.proc.send_signal(signum)
        await asyncio.wait_for(self.proc.wait(), timeout)
        return time.monotonic() - started

    async def finish(self) -> str:
        """Kill whatever is left of its process group; its stderr."""
        assert self.proc is not None and self._reader is not None and self._stderr is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        await self.proc.wait()
        await asyncio.wait_for(self._reader, 10)
        stderr = (await asyncio.wait_for(self._stderr, 10)).decode()
        print("".join(self.lines), stderr)  # shown if the test fails
        return stderr


def temp_files(root: Path) -> list[Path]:
    return [p for p in (root / "tmp").rglob("*") if p.is_file()]


async def wait_until(condition: Any, timeout: float = 10.0) -> None:
    """Bounded polling of a condition another process makes true."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_sigterm_answers_a_request_waiting_on_a_hung_upstream_with_503(
    tmp_path: Path, upstream: FakePyPI
) -> None:
    """The upstream accepts and never answers: at SIGTERM the mirror stops accepting,
    waits out the grace for the request, answers it 503 "shutting down" and exits 0
    within the grace and a second or two."""
    upstream.add_file("demo", build_wheel(tmp_path, "demo", "1.0"))
    serve = Serve(tmp_path, upstream, serve="shutdown-grace = 1")
    await serve.start()
    try:
        upstream.hang = True
        async with aiohttp.ClientSession(timeout=BOUND) as session:
            waiting = asyncio.create_task(session.get(serve.url + "simple/demo/"))
            await wait_until(lambda: upstream.count("/simple/demo/") > 0)
            stopping = asyncio.create_task(serve.stop())
            response = await asyncio.wait_for(waiting, 10)
            assert response.status == 503
            assert "shutting down" in await response.text()
            assert response.headers["Retry-After"]
            seconds = await stopping
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", serve.port)):
            raise AssertionError("still accepting after it exited")
    finally:
        stderr = await serve.finish()
    assert serve.proc is not None and serve.proc.returncode == 0, stderr
    assert 1.0 <= seconds < 1.0 + EXIT_SLACK, seconds
    expired = serve.events("shutdown_grace_expired")
    assert expired and expired[0]["requests"] == 1
    access = [e for e in serve.events("request") if e["path"] == "/simple/demo/"]
    assert [e["status"] for e in access] == [503]
    assert serve.events("server_stopping") and serve.events("server_stopped")
    assert not temp_files(serve.root)


async def test_sigterm_lets_a_download_in_flight_finish(tmp_path: Path, upstream: FakePyPI) -> None:
    """A client mid-way through a miss that takes about a second: SIGTERM refuses new
    connections, the client gets the whole verified file, the process exits 0 as soon as
    it was sent, and the file is stored with no temp file left."""
    sdist = build_sdist(tmp_path, "slow", "1.0", pad_bytes=640 * 1024)
    record = upstream.add_file("slow", sdist)
    serve = Serve(tmp_path, upstream)  # the default grace: 10 s
    await serve.start()
    try:
        async with aiohttp.ClientSession(timeout=BOUND) as session:
            async with session.get(serve.url + "simple/slow/") as resp:
                assert resp.status == 200
            upstream.file_chunk_delay = 0.1  # ten 64 KiB chunks and more: over a second
            async with session.get(serve.url + record.url_path.lstrip("/")) as resp:
                assert resp.status == 200
                first = await resp.content.readany()
                stopping = asyncio.create_task(serve.stop())
                await serve.wait_for_event("server_stopping")
                with (
                    contextlib.suppress(OSError),
                    socket.create_connection(("127.0.0.1", serve.port)),
                ):
                    raise AssertionError("a new connection was accepted while stopping")
                body = first + await resp.read()
                assert resp.headers.get("Connection", "").lower() != "keep-alive"
            seconds = await stopping
    finally:
        stderr = await serve.finish()
    assert serve.proc is not None and serve.proc.returncode == 0, stderr
    assert hashlib.sha256(body).hexdigest() == record.sha256
    assert seconds < 10.0, seconds  # it did not wait out the grace
    assert not serve.events("shutdown_grace_expired")
    stored = serve.root / "web" / record.url_path.lstrip("/")
    assert stored.read_bytes() == sdist.read_bytes()
    assert not temp_files(serve.root)


async def test_sigterm_cuts_off_a_download_that_outlasts_the_grace(
    tmp_path: Path, upstream: FakePyPI
) -> None:
    """The upstream sends headers and then nothing: when the grace ends the client's
    response is cut off (it never gets a complete file), the download is dropped with its
    temp file, nothing is stored, and the process exits 0."""
    sdist = build_sdist(tmp_path, "stuck", "1.0", pad_bytes=200 * 1024)
    record = upstream.add_file("stuck", sdist)
    serve = Serve(tmp_path, upstream, serve="shutdown-grace = 1")
    await serve.start()
    try:
        async with aiohttp.ClientSession(timeout=BOUND) as session:
            async with session.get(serve.url + "simple/stuck/") as resp:
                assert resp.status == 200
            upstream.stall_files = True
            async with session.get(serve.url + record.url_path.lstrip("/")) as resp:
                assert resp.status == 200
                await wait_until(lambda: temp_files(serve.root))
                stopping = asyncio.create_task(serve.stop())
                try:
                    body = await asyncio.wait_for(resp.read(), 10)
                except aiohttp.ClientPayloadError:
                    body = b""
                assert len(body) < record.size
            seconds = await stopping
    finally:
        stderr = await serve.finish()
    assert serve.proc is not None and serve.proc.returncode == 0, stderr
    assert 1.0 <= seconds < 1.0 + EXIT_SLACK, seconds
    assert serve.events("request_cut_off")
    assert not (serve.root / "web" / record.url_path.lstrip("/")).exists()
    assert not temp_files(serve.root)


async def test_sigterm_to_the_supervisor_stops_every_worker_within_the_grace(
    tmp_path: Path, upstream: FakePyPI
) -> None:
    """Two workers, a request waiting on a hung upstream in each: SIGTERM to the
    supervisor (systemd's KillMode=mixed) reaches both; each answers 503, and the whole
    tree exits 0 within the grace and a second or two."""
    upstream.add_file("demo", build_wheel(tmp_path, "demo", "1.0"))
    serve = Serve(tmp_path, upstream, serve="workers = 2\nshutdown-grace = 1")
    await serve.start()
    try:
        await wait_for_workers(serve.url, {0, 1})
        upstream.hang = True

        async def ask() -> int:
            connector = aiohttp.TCPConnector(force_close=True)  # spread over the workers
            async with (
                aiohttp.ClientSession(connector=connector, timeout=BOUND) as own,
                own.get(serve.url + "simple/demo/") as resp,
            ):
                return resp.status

        asking = [asyncio.create_task(ask()) for _ in range(6)]
        await wait_until(lambda: upstream.count("/simple/demo/") >= 2)
        assert serve.proc is not None
        workers = _children(serve.proc.pid)
        assert len(workers) == 2
        seconds = await serve.stop()
        statuses = await asyncio.wait_for(asyncio.gather(*asking), 10)
    finally:
        stderr = await serve.finish()
    assert serve.proc.returncode == 0, stderr
    assert 1.0 <= seconds < 1.0 + EXIT_SLACK, seconds
    assert set(statuses) == {503}
    assert {e.get("worker") for e in serve.events("worker_stopped")} == {0, 1}
    assert not any(_alive(pid) for pid in workers)


async def test_a_restart_after_kill_9_cleans_what_the_dead_processes_left(
    tmp_path: Path, upstream: FakePyPI
) -> None:
    """kill -9 of the whole tree mid-download leaves a temp file, a claim and the metrics
    directory; the next start removes them, and the file downloads again. A worker whose
    supervisor alone was killed stops by itself."""
    sdist = build_sdist(tmp_path, "stuck", "1.0", pad_bytes=200 * 1024)
    record = upstream.add_file("stuck", sdist)
    serve = Serve(tmp_path, upstream, serve="workers = 2\nshutdown-grace = 1")
    await serve.start()
    assert serve.proc is not None
    supervisor = serve.proc.pid
    metrics_dirs = list(Path(tempfile.gettempdir()).glob(f"pypi-mirror-metrics-{supervisor}-*"))
    try:
        upstream.stall_files = True
        async with aiohttp.ClientSession(timeout=BOUND) as session:
            async with session.get(serve.url + "simple/stuck/") as resp:
                assert resp.status == 200
            async with session.get(serve.url + record.url_path.lstrip("/")) as resp:
                assert resp.status == 200
                await wait_until(lambda: temp_files(serve.root))
                killed = _children(supervisor)
                os.killpg(supervisor, signal.SIGKILL)
                await asyncio.wait_for(serve.proc.wait(), 10)
    finally:
        await serve.finish()
    # Gone for good (reaped by init), as they are long before systemd starts it again.
    await wait_until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in killed))
    left = temp_files(serve.root)
    assert left, "kill -9 left its temp file"
    assert metrics_dirs  # (any supervisor that starts now removes it: not asserted here)
    upstream.stall_files = False

    again = Serve(tmp_path, upstream, serve="workers = 2\nshutdown-grace = 1")
    await again.start()
    try:
        assert not any(p.exists() for p in left)
        assert not any(d.exists() for d in metrics_dirs)
        async with (
            aiohttp.ClientSession(timeout=BOUND) as session,
            session.get(again.url + record.url_path.lstrip("/")) as resp,
        ):
            assert resp.status == 200
            assert hashlib.sha256(await resp.read()).hexdigest() == record.sha256
        assert again.proc is not None
        workers = _children(again.proc.pid)
        again.proc.kill()  # the supervisor alone
        await wait_until(lambda: not any(_alive(pid) for pid in workers))
        await asyncio.wait_for(again.proc.wait(), 10)  # (also: its stdout closed)
    finally:
        await again.finish()
    assert {e.get("worker") for e in again.events("supervisor_gone")} == {0, 1}
    assert not temp_files(again.root)


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its dead parent's successor) counts as gone.
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    return False


def raw_exchange(port: int, *messages: bytes) -> bytes:
    """Send raw bytes on one connection, each message once the answer to the one before
    was complete (keep-alive); everything answered until the server closed."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        received = b""
        for message in messages[:-1]:
            sock.sendall(message)
            while b"\r\n\r\n" not in received:
                received += sock.recv(65536)
            head, _, body = received.partition(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
            while len(body) < length:
                body += sock.recv(65536)
        sock.sendall(messages[-1])
        while chunk := sock.recv(65536):
            received += chunk
        return received


REJECTED = {
    "control character in a header": b"GET /health HTTP/1.1\r\nHost: m\r\nX-A: a\x01b\r\n\r\n",
    "not HTTP at all": b"GARBAGE\r\n\r\n",
    "bad Content-Length": b"GET /health HTTP/1.1\r\nHost: m\r\nContent-Length: x\r\n\r\n",
    "request line too long": b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: m\r\n\r\n",
}


async def test_requests_the_http_parser_rejects_get_an_access_line_and_a_metric(
    tmp_path: Path, upstream: FakePyPI
) -> None:
    """Raw bytes the HTTP parser rejects (also after a good request on the same
    connection) are answered 400 and logged as a `request` line with the reason in
    `error`, counted in /metrics as route "rejected"; no traceback anywhere."""
    serve = Serve(tmp_path, upstream, serve="workers = 1")
    await serve.start()
    try:
        loop = asyncio.get_running_loop()
        for raw in REJECTED.values():
            answer = await loop.run_in_executor(None, raw_exchange, serve.port, raw)
            assert answer.startswith(b"HTTP/1.") and b" 400 " in answer.split(b"\r\n")[0]
        good = b"GET /health HTTP/1.1\r\nHost: m\r\n\r\n"
        answer = await loop.run_in_executor(
            None, raw_exchange, serve.port, good, REJECTED["control character in a header"]
        )
        assert b" 200 OK" in answer and b" 400 " in answer
        async with (
            aiohttp.ClientSession(timeout=BOUND) as session,
            session.get(serve.url + "metrics") as resp,
        ):
            metrics = await resp.text()
        assert 'pypi_mirror_requests_total{route="rejected",status="400"} 5.0' in metrics
        assert (await serve.stop()) < EXIT_SLACK
    finally:
        stderr = await serve.finish()
    assert serve.proc is not None and serve.proc.returncode == 0, stderr
    rejected = [e for e in serve.events("request") if e["status"] == 400]
    assert len(rejected) == 5
    assert all(e["error"] and e["request_id"] and e["path"] is None for e in rejected)
    assert any("header value" in e["error"] for e in rejected)
    assert not any("Traceback" in line or "AssertionError" in line for line in serve.lines)
    assert "Traceback" not in stderr


BUGGY_SERVE = """
import sys
from aiohttp import web
from mirror.server import home, ops

async def broken(request):
    raise RuntimeError("an injected bug")

async def unsendable(request):
    return web.Response(text="x", headers={"X-Broken": "a\\nb"})

home.index = broken  # our own error: a 500 and a traceback
ops.metrics = unsendable  # aiohttp's own error, after the handler returned
from mirror.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


async def test_every_stdout_line_of_serve_is_json(tmp_path: Path, upstream: FakePyPI) -> None:
    """With two bugs injected (a handler that raises; a response aiohttp cannot send) and
    bytes its parser rejects, at debug level: every line on stdout is one JSON object —
    the mirror's traceback, aiohttp's and asyncio's own records — and stderr is empty."""
    serve = Serve(tmp_path, upstream, serve="workers = 1", log='level = "debug"')
    await serve.start("-c", BUGGY_SERVE)
    try:
        async with aiohttp.ClientSession(timeout=BOUND) as session:
            async with session.get(serve.url) as resp:
                assert resp.status == 500
                assert "Traceback" not in await resp.text()
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(serve.url + "metrics") as resp:
                    await resp.read()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, raw_exchange, serve.port, REJECTED["not HTTP at all"])
        assert (await serve.stop()) < EXIT_SLACK
    finally:
        stderr = await serve.finish()
    assert serve.proc is not None and serve.proc.returncode == 0, stderr
    assert stderr == ""
    events = serve.events()  # raises on any line that is not JSON
    assert all(isinstance(e, dict) and {"event", "level", "timestamp"} <= set(e) for e in events)
    failed = serve.events("request_failed")
    assert failed and "RuntimeError: an injected bug" in failed[0]["exception"]
    aiohttp_errors = [
        e for e in events if e.get("logger") == "aiohttp.server" and e["level"] == "error"
    ]
    assert aiohttp_errors and "Traceback" in aiohttp_errors[0]["exception"]
    rejections = [e for e in events if e.get("logger") == "aiohttp.server" and e.get("error")]
    assert rejections and all("exception" not in e for e in rejections)
    assert any(e.get("logger") == "asyncio" for e in events)


LIBRARY_NOISE = """
import logging, threading, warnings
from mirror.log import configure_logging

configure_logging("info", "auto")  # stdout is a pipe: JSON
logging.getLogger("some.library").warning("a %s from the standard library", "record")
try:
    1 / 0
except ZeroDivisionError:
    logging.getLogger("some.library").exception("it failed")
warnings.warn("a warning", UserWarning, stacklevel=1)
thread = threading.Thread(target=lambda: 1 / 0, name="helper")
thread.start()
thread.join()
raise RuntimeError("nothing caught this")
"""


async def test_library_records_warnings_and_crashes_are_json_lines() -> None:
    """Outside the server too: the standard library's records, warnings, an exception in
    a thread and one that ends the program are each one JSON line on stdout."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        LIBRARY_NOISE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO,
        env=clean_env(),
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 1
    assert err == b""
    events = [json.loads(line) for line in out.decode().splitlines()]
    by_event = {e["event"]: e for e in events}
    assert by_event["a record from the standard library"]["logger"] == "some.library"
    assert "ZeroDivisionError" in by_event["it failed"]["exception"]
    assert any(e.get("logger") == "py.warnings" for e in events)
    assert by_event["thread_crashed"]["thread"] == "helper"
    assert "RuntimeError: nothing caught this" in by_event["crashed"]["exception"]
