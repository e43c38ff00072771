"""Child processes of the bench: run one to completion with its peak RSS, start a server
that announces itself through a manifest file, stop what we started.

Every wait is bounded; a child that overstays is killed (its own process group, which we
created with ``start_new_session``). Nothing here ever signals a process we did not start.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


class BenchError(RuntimeError):
    """A server did not start, a command could not run, or a phase cannot go on."""


@dataclass(frozen=True)
class Finished:
    """How one command ended: exit code, wall seconds, peak RSS (``ru_maxrss``), output."""

    code: int
    seconds: float
    peak_rss: int
    timed_out: bool
    output: str

    def tail(self, lines: int = 15) -> str:
        return "\n".join(self.output.splitlines()[-lines:])


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This environment without the machine's index settings (pip, uv) and proxies, so
    that clients reach only the servers on 127.0.0.1 that the bench names."""
    drop = ("PIP_", "UV_")
    proxies = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(drop)
        and k.lower() not in proxies
        and k not in ("VIRTUAL_ENV", "PYTHONPATH")
    }
    env["PIP_CONFIG_FILE"] = os.devnull
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["UV_NO_CONFIG"] = "1"
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env.update(extra or {})
    return env


RUSAGE = Path(__file__).resolve().parent / "rusage.py"


def _run_blocking(
    argv: Sequence[str], log: Path, env: Mapping[str, str] | None, cwd: Path, timeout_s: float
) -> Finished:
    log.parent.mkdir(parents=True, exist_ok=True)
    report = log.with_suffix(".rusage")
    report.unlink(missing_ok=True)
    launcher = [sys.executable, "-I", "-S", str(RUSAGE), str(report), *argv]
    with log.open("wb") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(
            launcher,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
        timed_out = False

        def overstayed() -> None:
            nonlocal timed_out
            timed_out = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

        timer = threading.Timer(timeout_s, overstayed)
        timer.start()
        try:
            code = proc.wait()
        finally:
            timer.cancel()
        seconds = time.perf_counter() - started
    peak = 0
    try:
        words = report.read_text().split()
        code, seconds, peak = int(words[0]), float(words[1]), int(words[2])
    except (OSError, ValueError, IndexError):
        pass  # killed (timeout): the launcher's figures never came
    return Finished(
        code=code,
        seconds=seconds,
        peak_rss=peak,
        timed_out=timed_out,
        output=log.read_text(errors="replace")[-20_000:],
    )


async def run_measured(
    argv: Sequence[str],
    log: Path,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path = REPO,
    timeout_s: float = 600.0,
) -> Finished:
    """Run ``argv`` to completion (killed after ``timeout_s``) in a worker thread: wall
    time, and peak RSS from ``wait4`` (the process and the children it waited for), both
    taken by ``bench/rusage.py``, which starts it (see there why)."""
    return await asyncio.to_thread(_run_blocking, argv, log, env, cwd, timeout_s)


async def start_with_manifest(
    argv: Sequence[str], manifest: Path, log: Path, timeout_s: float = 300.0
) -> tuple[asyncio.subprocess.Process, dict[str, Any]]:
    """Start a server that writes ``manifest`` (JSON) once it listens; return it and the
    manifest. Raises BenchError (after killing it) if it dies or takes too long."""
    log.parent.mkdir(parents=True, exist_ok=True)
    manifest.unlink(missing_ok=True)
    with log.open("ab") as out:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=REPO,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
    loop = asyncio.get_running_loop()
    stop_at = loop.time() + timeout_s
    while not manifest.exists():
        if proc.returncode is not None or loop.time() > stop_at:
            await stop_process(proc, 1.0)
            what = argv[2] if len(argv) > 2 else argv[0]
            tail = log.read_text(errors="replace")[-2000:]
            raise BenchError(f"{what} did not start:\n{tail}")
        await asyncio.sleep(0.1)
    data: dict[str, Any] = json.loads(manifest.read_text())
    return proc, data


async def stop_process(proc: asyncio.subprocess.Process, timeout_s: float = 10.0) -> None:
    """SIGTERM, bounded wait, then SIGKILL to its process group — only what we started."""
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), timeout_s)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()


def python_module(module: str, *args: str) -> list[str]:
    """argv running ``python -m module args`` with the bench's interpreter."""
    return [sys.executable, "-m", module, *args]


def command_output(argv: Sequence[str], timeout_s: float = 30.0) -> str:
    """stdout + stderr of a short command, or "" if it cannot run (version probes)."""
    try:
        done = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return (done.stdout + done.stderr).strip()
