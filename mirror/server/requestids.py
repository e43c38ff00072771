"""Request ids: unique per process and cheap (a random prefix and a counter)."""

from __future__ import annotations

import itertools
import secrets


class RequestIds:
    """Unique per process and cheap: a random prefix and a counter (no urandom per request)."""

    def __init__(self) -> None:
        self._prefix = secrets.token_hex(4)
        self._count = itertools.count(1)

    def next(self) -> str:
        return f"{self._prefix}-{next(self._count):x}"
