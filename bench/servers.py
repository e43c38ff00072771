"""Start, probe and stop the servers under test, each in its own process on 127.0.0.1.

- ``ours``: ``python -m mirror serve -c CONFIG`` (the daemon).
- ``nginx``: ``deploy/nginx.conf`` serving ours' web root directly — the static upper bound.
- ``proxpi``: gunicorn + proxpi as its README/Dockerfile run it, from ``bench/.venv-peers``.
- ``devpi``: devpi-server with a ``root/pypi`` mirror index pointed at the fake upstream.

Every wait is bounded; stopping is SIGTERM to the process we started, then SIGKILL to the
process group we started (``start_new_session``) if it does not exit in time.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from bench.procs import REPO, BenchError
from tests.nginx_support import nginx_config

PEERS_BIN = REPO / "bench" / ".venv-peers" / "bin"
NGINX = shutil.which("nginx") or next(
    (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()), None
)


#: A server did not start or could not be configured.
ServerError = BenchError


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    """One running server: its process, where to reach it, and where it logs."""

    name: str
    proc: asyncio.subprocess.Process
    base_url: str
    index_url: str
    log_path: Path
    notes: dict[str, object] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM the process, wait, then SIGKILL its process group if needed."""
        if self.proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), timeout_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            await self.proc.wait()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


async def _spawn(
    name: str,
    argv: list[str],
    log_path: Path,
    env: dict[str, str] | None = None,
    cwd: Path = REPO,
) -> asyncio.subprocess.Process:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            start_new_session=True,
        )


async def _run(
    argv: list[str], log_path: Path, env: dict[str, str] | None = None, timeout_s: float = 60.0
) -> None:
    """Run a set-up command to completion (bounded); raise with its output on failure."""
    proc = await _spawn(argv[0], argv, log_path, env)
    try:
        code = await asyncio.wait_for(proc.wait(), timeout_s)
    except TimeoutError:
        os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        raise ServerError(f"{' '.join(argv)} took longer than {timeout_s}s") from None
    if code != 0:
        raise ServerError(f"{' '.join(argv)} exited {code}:\n{log_path.read_text()[-2000:]}")


async def wait_ready(
    server: Server, path: str, *, any_status: bool = False, timeout_s: float = 60.0
) -> None:
    """Poll ``base_url + path`` until it answers 200 (or anything, with ``any_status``)."""
    url = server.base_url + path.lstrip("/")
    loop = asyncio.get_running_loop()
    stop_at = loop.time() + timeout_s
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        while loop.time() < stop_at:
            if server.proc.returncode is not None:
                raise ServerError(
                    f"{server.name} exited with {server.proc.returncode}:\n{server.log_tail()}"
                )
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(url) as resp:
                    if any_status or resp.status == 200:
                        return
            await asyncio.sleep(0.05)
    await server.stop()
    raise ServerError(f"{server.name} not ready after {timeout_s}s:\n{server.log_tail()}")


# -- ours ---------------------------------------------------------------------------------


def ours_config(
    path: Path,
    data: Path,
    upstream_url: str,
    *,
    port: int | None = None,
    serve: dict[str, object] | None = None,
    sync: dict[str, object] | None = None,
) -> Path:
    """Write a config for the daemon: ``data`` as storage, quiet JSON logs, and the given
    ``[serve]`` / ``[sync]`` keys (values as TOML literals: ints, bools, quoted strings)."""

    def literal(value: object) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, int | float):
            return str(value)
        return json.dumps(str(value))

    serve_keys = dict(serve or {})
    if port is not None:
        serve_keys["listen"] = f"127.0.0.1:{port}"
    lines = [
        "[storage]",
        f"path = {literal(str(data))}",
        "",
        "[upstream]",
        f"url = {literal(upstream_url)}",
        "file-hosts = []",
        "",
        "[serve]",
        *(f"{k} = {literal(v)}" for k, v in serve_keys.items()),
        "",
        "[sync]",
        *(f"{k} = {literal(v)}" for k, v in (sync or {}).items()),
        "",
        "[log]",
        'level = "warning"',
        'format = "json"',
        "",
    ]
    path.write_text("\n".join(lines))
    return path


async def start_ours(
    work: Path,
    upstream_url: str,
    *,
    name: str = "ours",
    data: Path | None = None,
    serve: dict[str, object] | None = None,
    sync: dict[str, object] | None = None,
    timeout_s: float = 60.0,
) -> Server:
    """The daemon, from the project's own interpreter, quiet (log level warning).

    ``data``: its storage root (default ``work/ours-data``, kept between starts: a second
    start over it serves what the first cached). ``serve``/``sync``: extra config keys.
    """
    port = free_port()
    data = data if data is not None else work / "ours-data"
    config = ours_config(
        work / f"{name}.toml", data, upstream_url, port=port, serve=serve, sync=sync
    )
    argv = [sys.executable, "-m", "mirror", "serve", "-c", str(config)]
    base = f"http://127.0.0.1:{port}/"
    log = work / "logs" / f"{name}.log"
    server = Server(
        name,
        await _spawn(name, argv, log),
        base,
        base + "simple/",
        log,
        {"web_root": str(data / "web"), "port": port, "config": {"serve": serve or {}}},
    )
    await wait_ready(server, "/health", timeout_s=timeout_s)
    return server


# -- nginx (static upper bound) -------------------------------------------------------------


async def start_nginx(work: Path, web_root: Path, daemon_port: int, workers: int = 1) -> Server:
    """nginx on deploy/nginx.conf over ours' web root (misses would go to the daemon), with
    ``workers`` worker processes (tests/nginx_support.py writes 1)."""
    if NGINX is None:
        raise ServerError("nginx is not installed")
    port = free_port()
    tmp = work / "nginx"
    try:
        conf = nginx_config(tmp, web_root, daemon_port, port, access_log=False)
    except ValueError as exc:
        raise ServerError(str(exc)) from exc
    text = conf.read_text()
    if workers != 1 and "worker_processes 1;" in text:
        conf.write_text(text.replace("worker_processes 1;", f"worker_processes {workers};"))
    log = work / "logs" / "nginx.log"
    await _run([NGINX, "-t", "-c", str(conf), "-e", str(tmp / "error.log")], log)
    proc = await _spawn("nginx", [NGINX, "-c", str(conf), "-e", str(tmp / "error.log")], log)
    base = f"http://127.0.0.1:{port}/"
    server = Server("nginx", proc, base, base + "simple/", log, {"worker_processes": workers})
    await wait_ready(server, "/simple/", any_status=True)
    return server


# -- proxpi ---------------------------------------------------------------------------------


async def start_proxpi(
    work: Path, upstream_url: str, threads: int, *, name: str = "proxpi"
) -> Server:
    """proxpi under gunicorn (one worker, ``threads`` threads), as its Dockerfile runs it;
    its cache in ``work/<name>-cache`` (a new ``name`` is a new, empty cache)."""
    gunicorn = PEERS_BIN / "gunicorn"
    if not gunicorn.exists():
        raise ServerError(f"{gunicorn} missing: `make bench` installs the peers")
    port = free_port()
    env = {
        "PROXPI_INDEX_URL": upstream_url.rstrip("/") + "/simple/",
        "PROXPI_CACHE_DIR": str(work / f"{name}-cache"),
        "PROXPI_LOGGING_LEVEL": "WARNING",
        "PROXPI_BINARY_FILE_MIME_TYPE": "1",
    }
    argv = [
        str(gunicorn),
        "--preload",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        "1",
        "--threads",
        str(threads),
        "--no-control-socket",
        "proxpi.server:app",
    ]
    log = work / "logs" / f"{name}.log"
    base = f"http://127.0.0.1:{port}/"
    server = Server(
        name,
        await _spawn(name, argv, log, env),
        base,
        base + "index/",
        log,
        {"workers": 1, "threads": threads},
    )
    await wait_ready(server, "/health")
    return server


# -- devpi ----------------------------------------------------------------------------------


async def start_devpi(work: Path, upstream_url: str) -> Server:
    """devpi-server (defaults, logging at WARNING) with ``root/pypi`` mirroring the fake."""
    bin_init, bin_server = PEERS_BIN / "devpi-init", PEERS_BIN / "devpi-server"
    if not bin_server.exists():
        raise ServerError(f"{bin_server} missing: `make bench` installs the peers")
    serverdir = work / "devpi-data"
    log = work / "logs" / "devpi.log"
    await _run([str(bin_init), "--serverdir", str(serverdir), "--no-root-pypi"], log)
    logger_cfg = work / "devpi-logging.json"
    logger_cfg.write_text(
        json.dumps(
            {
                "version": 1,
                "handlers": {"stderr": {"class": "logging.StreamHandler"}},
                "root": {"level": "WARNING", "handlers": ["stderr"]},
            }
        )
    )
    port = free_port()
    argv = [
        str(bin_server),
        "--serverdir",
        str(serverdir),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--logger-cfg",
        str(logger_cfg),
    ]
    base = f"http://127.0.0.1:{port}/"
    server = Server(
        "devpi", await _spawn("devpi", argv, log), base, base + "root/pypi/+simple/", log, {}
    )
    await wait_ready(server, "/+api")
    try:
        await _devpi_mirror_index(base, upstream_url.rstrip("/") + "/simple/")
    except (aiohttp.ClientError, ServerError):
        await server.stop()
        raise
    return server


async def _devpi_mirror_index(base: str, mirror_url: str) -> None:
    """Log in as root (empty password after devpi-init) and create root/pypi as a mirror."""
    json_headers = {"Accept": "application/json", "Content-Type": "application/json"}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        async with session.post(
            base + "+login", headers=json_headers, json={"user": "root", "password": ""}
        ) as resp:
            if resp.status != 200:
                raise ServerError(f"devpi login: {resp.status} {await resp.text()}")
            token = (await resp.json())["result"]["password"]
        auth = base64.b64encode(f"root:{token}".encode()).decode()
        async with session.put(
            base + "root/pypi",
            headers={**json_headers, "X-Devpi-Auth": auth},
            json={"type": "mirror", "mirror_url": mirror_url},
        ) as resp:
            if resp.status not in (200, 201):
                raise ServerError(f"devpi create root/pypi: {resp.status} {await resp.text()}")


# -- memory -------------------------------------------------------------------------------


def _status_field(pid: int, key: str) -> int | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024  # kB
    return None


def _children(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...; comm may contain spaces and parentheses
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            kids.append(int(entry.name))
    return kids


def _tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo and len(out) < 1000:
        current = todo.pop()
        if Path(f"/proc/{current}").exists():
            out.append(current)
            todo.extend(_children(current))
    return out


def current_rss(pid: int) -> int:
    """VmRSS (resident now) of ``pid`` and its descendants, summed, in bytes."""
    return sum(_status_field(p, "VmRSS") or 0 for p in _tree(pid))


def peak_rss(pid: int) -> dict[str, object]:
    """VmHWM (peak resident set) of ``pid`` and all its descendants, in bytes: their sum
    (pages shared after a fork count once per process) and the largest single process."""
    per_process: dict[int, int] = {}
    todo = [pid]
    while todo:
        current = todo.pop()
        hwm = _status_field(current, "VmHWM")
        if hwm is not None:
            per_process[current] = hwm
            todo.extend(_children(current))
    return {
        "total": sum(per_process.values()),
        "largest": max(per_process.values(), default=0),
        "processes": per_process,
    }
