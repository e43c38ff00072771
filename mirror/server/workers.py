"""``serve`` in several processes: ``[serve] workers`` share the address and the storage.

The process ``pypi-mirror serve`` starts as becomes the supervisor when more than one
worker is configured. It starts the workers — the same program and configuration, with
``--worker K`` — which each listen on the address with ``SO_REUSEPORT`` (the kernel spreads
connections over them), passes SIGTERM and SIGINT on (and SIGHUP: each worker re-reads the
auth file; a worker is started with SIGHUP blocked until its handler is in place, so that
one sent while it starts is not its death), restarts a worker that died, and
exits once they all stopped: within ``[serve] shutdown-grace`` and a second or two, as each
worker stops as ``server.lifecycle`` says (one that does not is killed ``STOP_MARGIN``
seconds after the grace). A worker whose supervisor died stops by itself. Worker 0 is
the primary: it alone runs the changelog follower and the evictor
(``create_app(primary=...)``); the others only serve.

What the workers share goes through the storage: pages and files (single flight across
processes through ``storage.claims``), and the metrics, kept in prometheus-client's
multiprocess mode in a directory the supervisor makes (``PROMETHEUS_MULTIPROC_DIR``) and
summed by whichever worker answers ``/metrics``. The directory is named after the
supervisor's PID; one left by a supervisor that was killed is removed by the next one.
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
from mirror.processes import process_alive

log = get_logger("mirror.server")

LISTEN_ENV = "PYPI_MIRROR_SERVE_LISTEN"
# A worker that dies this soon after it started, this many times in a row, is not
# restarted again: something is wrong with the configuration or the host.
QUICK_DEATH = 5.0
QUICK_DEATHS = 3
# A worker still running this long after the grace ended is killed.
STOP_MARGIN = 5.0
# A worker's exit code when it cannot start (``server.run.EXIT_CONFIG``): it said why on
# stderr, and starting it again would not help.
CANNOT_START = 2
METRICS_DIR_PREFIX = "pypi-mirror-metrics-"
STDERR_LINE = 1 << 20


def worker_count(config: Config) -> int:
    return config.serve.workers or os.cpu_count() or 1


def check_address(host: str, port: int) -> int:
    """The port to listen on (a free one for port 0); OSError when it cannot be bound.

    The probe does not set ``SO_REUSEPORT``: with it, the bind would succeed beside another
    ``serve`` whose workers listen there, and the two would share the port silently.
    ``SO_REUSEADDR`` (which aiohttp sets too) lets it pass connections in TIME_WAIT."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
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
        self.stop_timeout = config.serve.shutdown_grace + STOP_MARGIN
        self.procs: dict[int, asyncio.subprocess.Process] = {}
        #: The one-line errors the workers wrote, each passed on once.
        self.said: set[bytes] = set()

    async def run(self, port: int) -> int:
        _remove_dead_metrics_dirs()
        metrics_dir = tempfile.mkdtemp(prefix=f"{METRICS_DIR_PREFIX}{os.getpid()}-")
        env = {**os.environ, MULTIPROC_DIR_ENV: metrics_dir}
        if port != self.config.serve.port:  # port 0: the one picked, the same for all
            env[LISTEN_ENV] = f"{self.config.serve.host}:{port}"
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._stop)
        loop.add_signal_handler(signal.SIGHUP, self._reload)
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
        log.info("server_stopping", workers=len(self.procs), grace=self.config.serve.shutdown_grace)
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)

    def _reload(self) -> None:
        log.info("server_reloading", workers=len(self.procs))
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGHUP)

    async def _keep_running(self, index: int, env: dict[str, str]) -> int:
        """Run worker ``index`` until the supervisor stops; its last exit code."""
        quick_deaths = 0
        while True:
            started = time.monotonic()
            # The worker inherits the blocked SIGHUP (its default action would kill it)
            # and unblocks it once it handles it (``server.lifecycle``). The fork happens
            # before this coroutine first yields; one held back here is delivered after.
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
            try:
                proc = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "mirror",
                    *self.argv,
                    "--worker",
                    str(index),
                    "--supervisor",
                    str(os.getpid()),
                    env=env,
                    stderr=asyncio.subprocess.PIPE,
                    limit=STDERR_LINE,
                )
            finally:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})
            self.procs[index] = proc
            assert proc.stderr is not None
            relay = asyncio.create_task(self._relay(proc.stderr))
            if self.stopping:  # SIGTERM came while it was being started
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
            code = await self._wait(proc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(relay, 1.0)
            del self.procs[index]
            _forget_metrics(env[MULTIPROC_DIR_ENV], proc.pid)
            if self.stopping:
                return 0 if code in (0, -signal.SIGTERM) else code
            if code == CANNOT_START:
                log.error("worker_cannot_start", worker=index, pid=proc.pid)
                self._stop()
                return code
            quick_deaths = quick_deaths + 1 if time.monotonic() - started < QUICK_DEATH else 0
            log.error("worker_exited", worker=index, pid=proc.pid, code=code)
            if quick_deaths >= QUICK_DEATHS:
                log.error("worker_failing", worker=index, deaths=quick_deaths)
                self._stop()
                return code or 1
            await asyncio.sleep(min(0.5 * quick_deaths, 5.0))

    async def _relay(self, stream: asyncio.StreamReader) -> None:
        """A worker's stderr onto ours (empty unless a worker cannot start or the
        interpreter itself fails); the same ``pypi-mirror: …`` line from several workers
        (the address taken, say) is written once."""
        while True:
            try:
                line = await stream.readline()
            except ValueError:  # longer than STDERR_LINE: that part was dropped
                continue
            if not line:
                return
            if line.startswith(b"pypi-mirror: "):
                if line in self.said:
                    continue
                self.said.add(line)
            sys.stderr.buffer.write(line)
            sys.stderr.flush()

    async def _wait(self, proc: asyncio.subprocess.Process) -> int:
        """Its exit code; killed when it does not stop within the grace and
        ``STOP_MARGIN`` of SIGTERM."""
        while True:
            try:
                return await asyncio.wait_for(proc.wait(), 1.0)
            except TimeoutError:
                if self.stopping and time.monotonic() - self.stopped_at > self.stop_timeout:
                    log.error("worker_killed", pid=proc.pid, after=self.stop_timeout)
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()


def _remove_dead_metrics_dirs() -> None:
    """The metrics directories of supervisors that are gone (``kill -9``)."""
    with contextlib.suppress(OSError), os.scandir(tempfile.gettempdir()) as entries:
        for entry in entries:
            pid = entry.name.removeprefix(METRICS_DIR_PREFIX).split("-", 1)[0]
            dead = pid.isdigit() and not process_alive(int(pid))
            if entry.name.startswith(METRICS_DIR_PREFIX) and dead:
                shutil.rmtree(entry.path, ignore_errors=True)


def _forget_metrics(directory: str, pid: int) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
