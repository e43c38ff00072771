"""ngclient's network seam, bridged onto the mirror's own upstream client.

python-tuf's ``Updater`` is synchronous, so it runs in a worker thread. Its downloads are
not made with a second HTTP stack: ``LoopFetcher`` hands each one to the event loop
(``asyncio.run_coroutine_threadsafe``) where :class:`~mirror.upstream.client.UpstreamClient`
does it, so TUF metadata obeys exactly the rules every other upstream request obeys: the
host allow-list (redirects included), connect/read timeouts, bounded retries with backoff,
one connection pool and User-Agent. The size bound is ngclient's own ``max_length`` for
each file, enforced before and while reading, never after.

The worker thread blocks on the loop, never the other way round (the loop only awaits the
thread through ``run_in_executor``), so the bridge cannot deadlock; every wait has a
deadline.

The upstream client's errors become tuf's ``DownloadError`` family (what ngclient expects
of a fetcher); any other exception is a bug and reaches the caller unchanged.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

from tuf.api import exceptions as tuf_exceptions
from tuf.ngclient import FetcherInterface

from mirror.errors import (
    UpstreamError,
    UpstreamNotFound,
    UpstreamStatusError,
    UpstreamTimeout,
    UpstreamTooLarge,
)
from mirror.upstream.client import UpstreamClient

#: What ngclient fetches is JSON metadata (and pages in the ``index`` scheme).
ACCEPT = "application/json, text/html;q=0.9, */*;q=0.1"
#: Bound for a bare ``fetch()`` (ngclient itself always goes through ``download_file``).
DEFAULT_MAX_LENGTH = 16 * 1024**2


class LoopFetcher(FetcherInterface):
    """A ``FetcherInterface`` whose requests run on ``loop`` through ``upstream``.

    ``fetched`` records every URL downloaded successfully (the caller clears it), so the
    trust layer knows which metadata files an operation brought in.
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, upstream: UpstreamClient, deadline: float
    ) -> None:
        self.loop = loop
        self.upstream = upstream
        self.deadline = deadline
        self.fetched: list[str] = []

    def get(self, url: str, max_length: int) -> bytes:
        """The body of ``url`` (at most ``max_length`` bytes), or a tuf DownloadError."""
        future = asyncio.run_coroutine_threadsafe(self._get(url, max_length), self.loop)
        try:
            data = future.result(timeout=self.deadline)
        except concurrent.futures.TimeoutError as exc:
            future.cancel()
            raise tuf_exceptions.SlowRetrievalError(
                f"{url}: no complete answer within {self.deadline:.0f} s"
            ) from exc
        except concurrent.futures.CancelledError as exc:
            raise tuf_exceptions.DownloadError(f"{url}: cancelled (shutting down)") from exc
        # Anything else ``_get`` raised is a bug: it propagates as it is.
        self.fetched.append(url)
        return data

    async def _get(self, url: str, max_length: int) -> bytes:
        try:
            response = await self.upstream.get_page(url, accept=ACCEPT, limit=max_length)
        except UpstreamTooLarge as exc:
            raise tuf_exceptions.DownloadLengthMismatchError(
                f"{url} is longer than the {max_length} bytes TUF allows for it"
            ) from exc
        except UpstreamNotFound as exc:
            raise tuf_exceptions.DownloadHTTPError(f"{url}: HTTP 404", 404) from exc
        except UpstreamStatusError as exc:
            raise tuf_exceptions.DownloadHTTPError(f"{url}: HTTP {exc.status}", exc.status) from exc
        except UpstreamTimeout as exc:
            raise tuf_exceptions.SlowRetrievalError(str(exc)) from exc
        except UpstreamError as exc:
            raise tuf_exceptions.DownloadError(str(exc)) from exc
        if response.status != 200:
            raise tuf_exceptions.DownloadHTTPError(
                f"{url}: HTTP {response.status}", response.status
            )
        return response.body

    def _fetch(self, url: str) -> Iterator[bytes]:
        return iter((self.get(url, DEFAULT_MAX_LENGTH),))

    @contextmanager
    def download_file(self, url: str, max_length: int) -> Iterator[IO[bytes]]:
        """Like the base class, but the bound is enforced by the request itself."""
        data = self.get(url, max_length)
        with tempfile.TemporaryFile() as temp_file:
            temp_file.write(data)
            temp_file.seek(0)
            yield temp_file
