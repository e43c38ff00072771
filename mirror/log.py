"""structlog set-up, done once at start-up by the command line.

Every line the process logs goes through one renderer: JSON lines when stdout is not a
terminal (or ``[log] format = "json"``), readable console lines otherwise. That holds for
the mirror's own events (structlog), for what libraries log through the standard
library's ``logging`` (aiohttp's server errors, asyncio's "exception was never retrieved",
python-tuf, warnings), and for an exception nothing caught (``sys.excepthook``,
``threading.excepthook``): each becomes one line with ``event``, ``level``, ``timestamp``,
the context bound with ``structlog.contextvars`` (``worker``, ``request_id``) and, for
library records, ``logger``; a traceback is the ``exception`` field of its line.
"""

from __future__ import annotations

import logging
import sys
import threading
from types import TracebackType
from typing import Any

import structlog

#: Attributes a library may attach to a log record that become fields of its line.
RECORD_FIELDS = ("error",)


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


class _RecordHandler(logging.Handler):
    """The standard library's records, rendered like structlog's events, one write each."""

    def __init__(self, writer: LineWriter) -> None:
        super().__init__()
        self.writer = writer

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # logging must never raise into its caller
            self.handleError(record)
            return
        self.writer.msg(line)


def configure_logging(level: str = "info", fmt: str = "auto") -> None:
    """JSON lines when stdout is not a TTY (or ``fmt == "json"``), readable console otherwise.

    May be called again (the tests, ``status``): the previous set-up is replaced."""
    use_json = fmt == "json" or (fmt == "auto" and not sys.stdout.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty())
    )
    writer = LineWriter()
    numeric = logging.getLevelNamesMapping()[level.upper()]
    # The stdlib loggers handed to aiohttp (the access line's) know the level too.
    logging.getLogger("mirror").setLevel(numeric)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=lambda *_args: writer,
        cache_logger_on_first_use=True,
    )
    _route_stdlib(writer, renderer, numeric)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_in_thread


def _route_stdlib(writer: LineWriter, renderer: Any, level: int) -> None:
    """Send every record of the standard library's ``logging`` through ``renderer``."""
    handler = _RecordHandler(writer)
    handler.setLevel(level)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.contextvars.merge_contextvars,
                structlog.processors.add_log_level,
                structlog.stdlib.add_logger_name,
                structlog.stdlib.ExtraAdder(allow=RECORD_FIELDS),
                structlog.processors.TimeStamper(fmt="iso", utc=True),
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.StackInfoRenderer(),
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _RecordHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)  # warnings.warn → the "py.warnings" logger → a line


def _log_uncaught(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    """An exception that ended the program: one ``crashed`` line with its traceback."""
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, exc, tb)
        return
    get_logger("mirror").critical("crashed", exc_info=(kind, exc, tb))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is None or issubclass(args.exc_type, SystemExit):
        return
    get_logger("mirror").error(
        "thread_crashed",
        thread=args.thread.name if args.thread is not None else None,
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
    )


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(name)
    return logger
