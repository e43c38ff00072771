"""``pypi-mirror serve``: checks made once at start-up, then one process or a supervisor
with workers (``server.workers``), each running the app.

The event loop is asyncio's own: uvloop was measured (bench pages 0.9x, a 20 MB file 0.6x
of asyncio's, as uvloop has no sendfile)."""

from __future__ import annotations

import asyncio
import sys

import structlog

from mirror.config import Config, TufMode
from mirror.errors import StorageError
from mirror.log import get_logger
from mirror.server.workers import Supervisor, check_address, worker_count

log = get_logger("mirror.cli")

EXIT_CONFIG = 2


def _fail(message: str, config: Config) -> int:
    print(f"pypi-mirror: {message} (configuration: {config.source})", file=sys.stderr)
    return EXIT_CONFIG


def serve(config: Config, *, worker: int | None = None, supervisor: int | None = None) -> int:
    """Run the daemon; ``worker``: this process is worker K of the process ``supervisor``
    (it stops when that is gone). Returns 0
    after SIGTERM once requests and downloads finished or the grace ended
    (``server.lifecycle``)."""
    if worker is None:
        problem = _start_up_problem(config)
        if problem is not None:
            return _fail(problem, config)
        workers = worker_count(config)
        if workers > 1:
            return _supervise(config, workers)
    # Imported here: the supervisor never runs the app, and stays small.
    from mirror.server.app import create_app
    from mirror.server.lifecycle import CannotListen, serve_app
    from mirror.server.middleware import quiet_parser_rejections, runner_options

    try:
        app = create_app(config, worker=worker)
    except StorageError as exc:
        return _fail(str(exc), config)
    if worker is None:
        _log_starting(config, workers=1)
    else:
        structlog.contextvars.bind_contextvars(worker=worker)  # on every line it logs
        log.info("worker_started")
    quiet_parser_rejections()
    try:
        return asyncio.run(
            serve_app(
                app,
                host=config.serve.host,
                port=config.serve.port,
                grace=config.serve.shutdown_grace,
                runner_options=runner_options(app),
                worker=worker,
                supervisor=supervisor,
            )
        )
    except CannotListen as exc:
        return _fail(f"cannot listen on {config.serve.listen}: {exc}", config)


def _start_up_problem(config: Config) -> str | None:
    """What keeps ``serve`` from starting, checked once (not in every worker)."""
    if config.tuf.mode is TufMode.VERIFY and not config.serve.offline:
        from mirror.trust.service import probe_metadata

        problem = asyncio.run(probe_metadata(config))
        if problem is not None:
            return f"cannot start: {problem}"
    return None


def _supervise(config: Config, workers: int) -> int:
    from mirror.storage import open_storage

    try:
        open_storage(config.storage)
    except StorageError as exc:
        return _fail(str(exc), config)
    host, port = config.serve.host, config.serve.port
    try:
        port = check_address(host, port)
    except OSError as exc:
        return _fail(f"cannot listen on {config.serve.listen}: {exc.strerror or exc}", config)
    argv = ["serve"] if config.source_path is None else ["-c", str(config.source_path), "serve"]
    _log_starting(config, workers=workers)
    code = asyncio.run(Supervisor(config, argv, workers).run(port))
    log.info("server_stopped", code=code)
    return code


def _log_starting(config: Config, *, workers: int) -> None:
    log.info(
        "server_starting",
        listen=config.serve.listen,
        workers=workers,
        upstream=None if config.serve.offline else config.upstream.url,
        storage=str(config.storage.path),
        config=config.source,
    )
