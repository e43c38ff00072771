"""Upstream, integrity and storage failures as one-line HTTP answers.

Whatever an upstream sends, the body of an error answer is one line of bounded length:
a reason may quote what the upstream said (a malformed value, a URL), never all of it.
"""

from __future__ import annotations

import re

from aiohttp import web

from mirror.errors import (
    IntegrityError,
    MirrorError,
    StorageError,
    UpstreamProtocolError,
    UpstreamTimeout,
    UpstreamTooLarge,
)
from mirror.storage import storage_failure

#: Characters of an error answer's one line, at most.
MESSAGE_LIMIT = 400
#: Seconds a client is asked to wait after the mirror could not store what it asked for.
STORAGE_RETRY_AFTER = 30

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_SPACES = re.compile(r" {2,}")


def one_line(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """``text`` as one line (control characters, newlines included, become spaces) of at
    most ``limit`` characters (cut with "...")."""
    line = _SPACES.sub(" ", _CONTROL.sub(" ", text)).strip()
    return line if len(line) <= limit else line[: limit - 3].rstrip() + "..."


def _text(message: str) -> str:
    return one_line(message) + "\n"


def as_storage_error(exc: OSError | StorageError, what: str, where: str) -> StorageError:
    """A failed write as the one-line ``StorageError`` it is (``where``: the store)."""
    if isinstance(exc, StorageError):
        return exc
    return storage_failure(exc, what, where)


def storage_unavailable(exc: StorageError, what: str) -> web.HTTPServiceUnavailable:
    """503: the mirror could not store ``what`` (a full disk: "cannot store ...: no space
    left on <storage path>"); what it holds is still served."""
    message = str(exc) if str(exc).startswith("cannot store") else f"cannot store {what}: {exc}"
    return web.HTTPServiceUnavailable(
        text=_text(message), headers={"Retry-After": str(STORAGE_RETRY_AFTER)}
    )


def upstream_failure(exc: MirrorError, what: str) -> web.HTTPException:
    if isinstance(exc, UpstreamTimeout):
        return web.HTTPGatewayTimeout(text=_text(f"upstream timed out fetching {what}: {exc}"))
    if isinstance(exc, StorageError):
        return storage_unavailable(exc, what)
    if isinstance(exc, UpstreamTooLarge):
        return web.HTTPBadGateway(
            text=_text(
                f"upstream answer for {what} is too large ({exc}); see [upstream] max-page-size"
            )
        )
    if isinstance(exc, UpstreamProtocolError):
        return web.HTTPBadGateway(text=_text(f"upstream sent a malformed answer for {what}: {exc}"))
    if isinstance(exc, IntegrityError):
        return web.HTTPBadGateway(text=_text(f"{what} failed verification: {exc}"))
    return web.HTTPBadGateway(
        text=_text(f"upstream unavailable for {what} and nothing cached: {exc}")
    )
