"""PyPI's XML-RPC changelog (``POST <upstream>/pypi``), over the upstream client.

``changelog_last_serial`` and ``changelog_since_serial`` answers are small and bounded
(PyPI pages the latter at 50,000 rows) and go through ``xmlrpc.client.loads``;
``list_packages_with_serial`` is streamed (``core.xmlrpcstream``) so the full project list
is never held in memory.
"""

from __future__ import annotations

import xmlrpc.client
from collections.abc import AsyncIterator
from typing import Any
from xml.parsers.expat import ExpatError

from mirror.core.changelog import ChangelogError, ChangelogEvent, parse_rows
from mirror.core.xmlrpcstream import SerialListParser, XmlRpcFault, XmlRpcStreamError
from mirror.errors import (
    UpstreamError,
    UpstreamNotFound,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTooLarge,
)
from mirror.log import get_logger
from mirror.upstream.client import UpstreamClient

log = get_logger("mirror.sync.xmlrpc")

XMLRPC_PATH = "pypi"
CONTENT_TYPE = "text/xml"
# 50,000 rows of ~150 bytes of XML each, with room to spare.
ANSWER_LIMIT = 64 * 1024**2
LIST_LIMIT = 2 * 1024**3


class XmlRpcUnavailable(UpstreamError):
    """The upstream does not offer the XML-RPC changelog (404, refused, or a fault)."""


class ChangelogClient:
    def __init__(self, upstream: UpstreamClient, *, limit: int = ANSWER_LIMIT) -> None:
        self.upstream = upstream
        self.limit = limit

    @property
    def url(self) -> str:
        return self.upstream.url_for(XMLRPC_PATH)

    async def _call(self, method: str, *params: Any) -> Any:
        body = xmlrpc.client.dumps(params, method, allow_none=True).encode()
        try:
            data = await self.upstream.post(XMLRPC_PATH, body, CONTENT_TYPE, self.limit)
        except (UpstreamNotFound, UpstreamStatusError) as exc:
            raise XmlRpcUnavailable(f"{self.url}: {method} is not available ({exc})") from exc
        except UpstreamTooLarge as exc:
            raise UpstreamProtocolError(f"{self.url}: {method} answer too large: {exc}") from exc
        try:
            (result,), _ = xmlrpc.client.loads(data, use_builtin_types=True)
        except xmlrpc.client.Fault as fault:
            raise XmlRpcUnavailable(
                f"{self.url}: {method} answered fault {fault.faultCode}: {fault.faultString}"
            ) from fault
        except (ExpatError, ValueError, TypeError) as exc:
            raise UpstreamProtocolError(f"{self.url}: malformed {method} answer: {exc}") from exc
        return result

    async def last_serial(self) -> int:
        value = await self._call("changelog_last_serial")
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise UpstreamProtocolError(
                f"{self.url}: changelog_last_serial answered {value!r:.40}, not a serial"
            )
        return value

    async def since(self, serial: int) -> list[ChangelogEvent]:
        """One page of events after ``serial`` (empty when there is nothing newer)."""
        rows = await self._call("changelog_since_serial", serial)
        try:
            events, skipped = parse_rows(rows)
        except ChangelogError as exc:
            raise UpstreamProtocolError(f"{self.url}: {exc}") from exc
        if skipped:
            log.warning("changelog_rows_skipped", count=skipped, since=serial)
        return events

    async def packages_with_serial(self) -> AsyncIterator[list[tuple[str, int]]]:
        """Every project and its last serial, in batches, streamed."""
        body = xmlrpc.client.dumps((), "list_packages_with_serial").encode()
        parser = SerialListParser()
        size = 0
        try:
            async with self.upstream.open_post(XMLRPC_PATH, body, CONTENT_TYPE) as stream:
                async for chunk in stream.chunks():
                    size += len(chunk)
                    if size > LIST_LIMIT:
                        raise UpstreamProtocolError(
                            f"{self.url}: list_packages_with_serial is over {LIST_LIMIT} bytes"
                        )
                    batch = parser.feed(chunk)
                    if batch:
                        yield batch
            batch = parser.close()
        except (UpstreamNotFound, UpstreamStatusError) as exc:
            raise XmlRpcUnavailable(
                f"{self.url}: list_packages_with_serial is not available ({exc})"
            ) from exc
        except XmlRpcFault as fault:
            raise XmlRpcUnavailable(
                f"{self.url}: list_packages_with_serial answered {fault}"
            ) from fault
        except XmlRpcStreamError as exc:
            raise UpstreamProtocolError(f"{self.url}: {exc}") from exc
        if parser.skipped:
            log.warning("project_list_entries_skipped", count=parser.skipped)
        if batch:
            yield batch
