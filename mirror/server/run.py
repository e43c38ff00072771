"""``pypi-mirror serve``: checks made once at start-up, then one process or a supervisor
with workers (``server.workers``), each running the app.

The event loop is asyncio's own: uvloop was measured (bench pages 0.9x, a 20 MB file 0.6x
of asyncio's, as uvloop has no sendfile)."""

from __future__ import annotations

import asyncio
import errno
import sys

import structlog

from mirror.config import Config, TufMode
from mirror.errors import StorageError
from mirror.log import get_logger
from mirror.server.workers import LISTEN_ENV, Supervisor, check_address, worker_count

log = get_logger("mirror.cli")

EXIT_CONFIG = 2


def _fail(message: str, config: Config) -> int:
    print(f"pypi-mirror: {message} (configuration: {config.origin})", file=sys.stderr)
    return EXIT_CONFIG


def cannot_listen(listen: str, code: int | None, reason: str) -> str:
    """The one line for an address ``serve`` cannot listen on: what and what to do."""
    change = f"set [serve] listen (or {LISTEN_ENV})"
    if code == errno.EADDRINUSE:
        why = f"address already in use; stop the other server or {change}"
    elif code == errno.EACCES:
        why = f"permission denied; use a port above 1023, grant CAP_NET_BIND_SERVICE, or {change}"
    elif code == errno.EADDRNOTAVAIL:
        why = f"not an address of this machine; {change} to one of its addresses"
    else:
        why = f"{reason}; {change}"
    return f"cannot listen on {listen}: {why}"


def serve(config: Config, *, worker: int | None = None, supervisor: int | None = None) -> int:
    """Run the daemon; ``worker``: this process is worker K of the process ``supervisor``
    (it stops when that is gone). Returns 0
    after SIGTERM once requests and downloads finished or the grace ended
    (``server.lifecycle``)."""
    if worker is None:
        workers = worker_count(config)
        try:  # before anything else starts: the most common start-up error
            port = check_address(config.serve.host, config.serve.port)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            return _fail(cannot_listen(config.serve.listen, exc.errno, reason), config)
        problem = _start_up_problem(config)
        if problem is not None:
            return _fail(problem, config)
        if workers > 1:
            return _supervise(config, workers, port)
    # Imported here: the supervisor never runs the app, and stays small.
    from mirror.server.app import create_app
    from mirror.server.htpasswd import AuthFileError
    from mirror.server.lifecycle import CannotListen, serve_app
    from mirror.server.middleware import quiet_parser_rejections, runner_options

    try:
        app = create_app(config, worker=worker)
    except (StorageError, AuthFileError) as exc:  # (the auth file changed since the check)
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
        return _fail(cannot_listen(config.serve.listen, exc.errno, str(exc)), config)


def _start_up_problem(config: Config) -> str | None:
    """What keeps ``serve`` from starting, checked once (not in every worker)."""
    if config.serve.auth_file is not None:
        from mirror.server.htpasswd import AuthFileError, load

        try:
            load(config.serve.auth_file)  # file:line of a bad entry now, not 401s later
        except AuthFileError as exc:
            return str(exc)
    if config.tuf.mode is TufMode.VERIFY and not config.serve.offline:
        from mirror.trust.service import probe_metadata

        problem = asyncio.run(probe_metadata(config))
        if problem is not None:
            return f"cannot start: {problem}"
    return None


def _supervise(config: Config, workers: int, port: int) -> int:
    """``port``: the one checked (a free one for port 0), passed to the workers."""
    from mirror.storage import open_storage

    try:
        open_storage(config.storage)
    except StorageError as exc:
        return _fail(str(exc), config)
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
        config=config.origin,
    )
