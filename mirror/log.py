"""structlog set-up, done once at start-up by the command line."""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any

import structlog


class LineWriter:
    """Each rendered line in one ``write`` to the current ``sys.stdout`` (several
    processes on one stdout — ``serve`` workers — then never mix their lines)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def msg(self, message: str) -> None:
        stream = sys.stdout
        with self._lock:
            stream.write(message + "\n")
            stream.flush()

    debug = info = warning = warn = error = err = critical = exception = msg


def configure_logging(level: str = "info", fmt: str = "auto") -> None:
    """JSON lines when stdout is not a TTY (or ``fmt == "json"``), readable console otherwise."""
    use_json = fmt == "json" or (fmt == "auto" and not sys.stdout.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty())
    )
    writer = LineWriter()
    # The stdlib loggers handed to aiohttp (the access line's) know the level too.
    logging.getLogger("mirror").setLevel(logging.getLevelNamesMapping()[level.upper()])
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=lambda *_args: writer,
        cache_logger_on_first_use=True,
    )


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(name)
    return logger
