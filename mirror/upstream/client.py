"""The aiohttp client for the upstream index: pages, streamed files, nothing else.

Every URL is checked against the configured hosts before it is requested, redirects are
followed by hand so that they are checked too, every request has a timeout, pages have a
size bound, and transient failures are retried a bounded number of times with backoff.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import aiohttp

from mirror.config import UpstreamConfig
from mirror.errors import (
    ForbiddenHost,
    UpstreamNotFound,
    UpstreamStatusError,
    UpstreamTimeout,
    UpstreamTooLarge,
    UpstreamUnavailable,
)
from mirror.log import get_logger

log = get_logger("mirror.upstream")

USER_AGENT = "pypi-mirror/0.1"
MAX_REDIRECTS = 5
CHUNK_SIZE = 256 * 1024
_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class PageResponse:
    status: int
    body: bytes
    content_type: str
    etag: str | None
    last_serial: int | None
    url: str


@dataclass(frozen=True)
class FileStream:
    """An open upstream file response; iterate ``chunks`` once."""

    url: str
    content_length: int | None
    response: aiohttp.ClientResponse

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self.response.content.iter_chunked(CHUNK_SIZE):
                yield chunk
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _unavailable(self.url, exc) from exc


def last_serial_of(headers: Mapping[str, str]) -> int | None:
    value = headers.get("X-PyPI-Last-Serial")
    if value and value.strip().isdigit():
        return int(value.strip())
    return None


class UpstreamClient:
    def __init__(self, config: UpstreamConfig, session: aiohttp.ClientSession) -> None:
        self.config = config
        self.session = session
        self.base_url = config.url
        self._allowed = config.allowed_hosts

    @staticmethod
    def make_session(config: UpstreamConfig) -> aiohttp.ClientSession:
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=config.timeout,
            sock_connect=config.timeout,
            sock_read=config.timeout,
        )
        connector = aiohttp.TCPConnector(limit=config.connections, ttl_dns_cache=300)
        return aiohttp.ClientSession(
            timeout=timeout,
            connector=connector,
            headers={"User-Agent": USER_AGENT},
            auto_decompress=True,
            raise_for_status=False,
        )

    def url_for(self, path: str) -> str:
        return urljoin(self.base_url, path)

    def check_url(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or parts.netloc.lower() not in self._allowed:
            raise ForbiddenHost(
                f"refusing to contact {url!r:.200}: not one of the configured upstream hosts "
                f"({', '.join(sorted(self._allowed))})"
            )

    def is_allowed(self, url: str) -> bool:
        try:
            self.check_url(url)
        except ForbiddenHost:
            return False
        return True

    async def _backoff(self, attempt: int) -> None:
        delay = min(0.25 * (2**attempt), 8.0) * (0.5 + random.random())
        await asyncio.sleep(delay)

    @asynccontextmanager
    async def _request(
        self, method: str, url: str, headers: Mapping[str, str], data: bytes | None = None
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """One response after redirects (each checked) and retries of transient failures."""
        attempt = 0
        while True:
            current = url
            try:
                for _ in range(MAX_REDIRECTS + 1):
                    self.check_url(current)
                    response = await self.session.request(
                        method, current, headers=headers, data=data, allow_redirects=False
                    )
                    if (
                        response.status in (301, 302, 303, 307, 308)
                        and "Location" in response.headers
                    ):
                        current = urljoin(current, response.headers["Location"])
                        response.release()
                        continue
                    break
                else:
                    raise UpstreamUnavailable(f"too many redirects from {url}")
            except (aiohttp.ClientError, TimeoutError) as exc:
                if attempt >= self.config.retries:
                    raise _unavailable(url, exc) from exc
                log.warning("upstream_retry", url=url, attempt=attempt + 1, error=_describe(exc))
                await self._backoff(attempt)
                attempt += 1
                continue
            if response.status in _RETRY_STATUSES:
                response.release()
                if attempt >= self.config.retries:
                    raise UpstreamUnavailable(f"upstream answered {response.status} for {url}")
                log.warning("upstream_retry", url=url, attempt=attempt + 1, status=response.status)
                await self._backoff(attempt)
                attempt += 1
                continue
            try:
                yield response
            finally:
                response.release()
            return

    async def get_page(
        self,
        path_or_url: str,
        *,
        accept: str,
        etag: str | None = None,
        limit: int | None = None,
    ) -> PageResponse:
        """A page (bounded in size); 304 when ``etag`` still matches. Raises on 404/4xx."""
        url = self.url_for(path_or_url)
        headers = {"Accept": accept}
        if etag:
            headers["If-None-Match"] = etag
        limit = self.config.max_page_size if limit is None else limit
        async with self._request("GET", url, headers) as response:
            if response.status == 404 or response.status == 410:
                raise UpstreamNotFound(url)
            if response.status not in (200, 304):
                raise UpstreamStatusError(url, response.status)
            body = b""
            if response.status == 200:
                if response.content_length is not None and response.content_length > limit:
                    raise UpstreamTooLarge(
                        f"{url} is {response.content_length} bytes, over {limit}"
                    )
                chunks: list[bytes] = []
                size = 0
                try:
                    async for chunk in response.content.iter_chunked(CHUNK_SIZE):
                        size += len(chunk)
                        if size > limit:
                            raise UpstreamTooLarge(
                                f"{url} is over the page size bound of {limit} bytes"
                            )
                        chunks.append(chunk)
                except (aiohttp.ClientError, TimeoutError) as exc:
                    raise _unavailable(url, exc) from exc
                body = b"".join(chunks)
            return PageResponse(
                status=response.status,
                body=body,
                content_type=response.headers.get("Content-Type", ""),
                etag=response.headers.get("ETag"),
                last_serial=last_serial_of(response.headers),
                url=str(response.url),
            )

    @asynccontextmanager
    async def open_file(
        self,
        url: str,
        *,
        accept: str = "*/*",
        headers: Mapping[str, str] | None = None,
        ok_statuses: tuple[int, ...] = (200,),
    ) -> AsyncIterator[FileStream]:
        """Stream a file (or a large page); raises UpstreamNotFound for 404."""
        all_headers = {"Accept": accept, "Accept-Encoding": "identity", **(headers or {})}
        async with self._request("GET", url, all_headers) as response:
            if response.status in (404, 410):
                raise UpstreamNotFound(url)
            if response.status not in ok_statuses:
                raise UpstreamStatusError(url, response.status)
            yield FileStream(str(response.url), response.content_length, response)

    async def post(self, path: str, body: bytes, content_type: str, limit: int) -> bytes:
        """A POST (XML-RPC) with a bounded answer."""
        url = self.url_for(path)
        async with self._request(
            "POST", url, {"Content-Type": content_type}, data=body
        ) as response:
            if response.status == 404:
                raise UpstreamNotFound(url)
            if response.status != 200:
                raise UpstreamStatusError(url, response.status)
            data = await response.content.read(limit + 1)
            if len(data) > limit:
                raise UpstreamTooLarge(f"{url}: answer over {limit} bytes")
            return data

    @asynccontextmanager
    async def open_post(
        self, path: str, body: bytes, content_type: str
    ) -> AsyncIterator[FileStream]:
        """A POST (XML-RPC) whose answer is streamed: for answers too large to hold whole."""
        url = self.url_for(path)
        headers = {"Content-Type": content_type, "Accept-Encoding": "gzip"}
        async with self._request("POST", url, headers, data=body) as response:
            if response.status == 404:
                raise UpstreamNotFound(url)
            if response.status != 200:
                raise UpstreamStatusError(url, response.status)
            yield FileStream(url, response.content_length, response)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__


def _unavailable(url: str, exc: BaseException) -> UpstreamUnavailable:
    if isinstance(exc, TimeoutError):
        return UpstreamTimeout(f"{url}: timed out")
    return UpstreamUnavailable(f"{url}: {_describe(exc)}")
