"""``serve`` in several processes: ``[serve] workers`` share the address and the storage.

The process ``pypi-mirror serve`` starts as becomes the supervisor when more than one
worker is configured. It starts the workers — the same program and configuration, with
``--worker K`` — which each listen on the address with ``SO_REUSEPORT`` (the kernel spreads
connections over them), passes SIGTERM and SIGINT on, restarts a worker that died, and
exits once they all stopped. Worker 0 is the primary: it alone runs the changelog follower
and the evictor (``create_app(primary=...)``); the others only serve.

What the workers share goes through the storage: pages and files (single flight across
processes through ``storage.claims``), and the metrics, kept in prometheus-client's
multiprocess mode in a directory the supervisor makes (``PROMETHEUS_MULTIPROC_DIR``) and
summed by whichever worker answers ``/metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Sequence

from mirror.config import Config
from mirror.log import get_logger
from mirror.metrics import MULTIPROC_DIR_ENV

log = get_logger("mirror.server")

LISTEN_ENV = "PYPI_MIRROR_SERVE_LISTEN"
# A worker that dies this soon after it started, this many times in a row, is not
# restarted again: something is wrong with the configuration or the host.
QUICK_DEATH = 5.0
QUICK_DEATHS = 3
STOP_TIMEOUT = 15.0


def worker_count(config: Config) -> int:
    return config.serve.workers or os.cpu_count() or 1


def check_address(host: str, port: int) -> int:
    """The port to listen on (a free one for port 0); OSError when it cannot be bound."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        probe.bind((host, port))
        bound: int = probe.getsockname()[1]
        return bound


class Supervisor:
    def __init__(self, config: Config, argv: Sequence[str], workers: int) -> None:
        self.config = config
        self.argv = list(argv)
        self.workers = workers
        self.stopping = False
        self.stopped_at = 0.0
        self.procs: dict[int, asyncio.subprocess.Process] = {}

    async def run(self, port: int) -> int:
        metrics_dir = tempfile.mkdtemp(prefix="pypi-mirror-metrics-")
        env = {
            **os.environ,
            MULTIPROC_DIR_ENV: metrics_dir,
            LISTEN_ENV: f"{self.config.serve.host}:{port}",
        }
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._stop)
        try:
            results = await asyncio.gather(
                *(self._keep_running(index, env) for index in range(self.workers))
            )
        finally:
            shutil.rmtree(metrics_dir, ignore_errors=True)
        return max(results)

    def _stop(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        self.stopped_at = time.monotonic()
        log.info("server_stopping", workers=len(self.procs))
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)

    async def _keep_running(self, index: int, env: dict[str, str]) -> int:
        """Run worker ``index`` until the supervisor stops; its last exit code."""
        quick_deaths = 0
        while True:
            started = time.monotonic()
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "mirror", *self.argv, "--worker", str(index), env=env
            )
            self.procs[index] = proc
            code = await self._wait(proc)
            del self.procs[index]
            _forget_metrics(env[MULTIPROC_DIR_ENV], proc.pid)
            if self.stopping:
                return 0 if code in (0, -signal.SIGTERM) else code
            quick_deaths = quick_deaths + 1 if time.monotonic() - started < QUICK_DEATH else 0
            log.error("worker_exited", worker=index, pid=proc.pid, code=code)
            if quick_deaths >= QUICK_DEATHS:
                log.error("worker_failing", worker=index, deaths=quick_deaths)
                self._stop()
                return code or 1
            await asyncio.sleep(min(0.5 * quick_deaths, 5.0))

    async def _wait(self, proc: asyncio.subprocess.Process) -> int:
        """Its exit code; killed when it does not stop within ``STOP_TIMEOUT`` of SIGTERM."""
        while True:
            try:
                return await asyncio.wait_for(proc.wait(), 1.0)
            except TimeoutError:
                if self.stopping and time.monotonic() - self.stopped_at > STOP_TIMEOUT:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()


def _forget_metrics(directory: str, pid: int) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
