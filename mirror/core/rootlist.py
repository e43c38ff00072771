"""The root ``/simple/`` project list, parsed and rendered incrementally.

PyPI's root lists ~600,000 projects (~30 MB), so it is never held whole: the parsers are
push-style (``feed`` a chunk, get the entries completed so far; ``close`` at the end) and
the renderer emits one piece per entry. Memory is bounded by the chunk size.

Entries whose name is not a valid project name are skipped and counted in ``skipped``
(one bad name must not make the whole list unusable); structural damage such as
truncation or a wrong JSON shape raises ``PageParseError``.
"""

from __future__ import annotations

import codecs
import html
import json
import re
from html.parser import HTMLParser
from typing import Any

import ijson

from mirror.core.index import PageParseError
from mirror.core.model import MIRROR_API_VERSION, RootEntry
from mirror.core.names import MAX_NAME_LENGTH, PROJECT_NAME_RE, is_valid_project_name, normalize

_BACKEND = ijson.get_backend("yajl2_c")
_SERIAL_COMMENT_RE = re.compile(r"^\s*SERIAL\s+(\d{1,18})\s*$")
# Anchor text kept per root entry: room for a maximal name plus surrounding whitespace.
_MAX_ANCHOR_TEXT = MAX_NAME_LENGTH + 1024

# Nesting depth inside the document: 1 = the top object, 2 = a top-level value
# ("projects" list or "meta" object), 3 = one project object.
_TOP, _LIST, _ITEM = 1, 2, 3


def _serial_value(value: object, where: str) -> int | None:
    if type(value) is int and value >= 0:  # the common case first
        return value
    if value is None:
        return None
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 19:
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise PageParseError(f"root JSON: {where} must be a non-negative integer, got {value!r:.40}")


class RootJsonParser:
    """Incremental parser for the PEP 691 root page (keys in any order).

    A small state machine over ijson's basic events (no prefix strings), because this
    loop runs millions of times for PyPI's root.
    """

    def __init__(self) -> None:
        self.last_serial: int | None = None
        self.api_version: str | None = None
        self.skipped = 0
        self._events: Any = ijson.sendable_list()
        self._coro: Any = _BACKEND.basic_parse_coro(self._events, use_float=True)
        self._depth = 0
        self._top_key: str | None = None
        self._key: str | None = None
        self._name: object = None
        self._serial: int | None = None
        self._saw_top = False
        self._saw_projects = False
        self._closed = False

    def feed(self, chunk: bytes) -> list[RootEntry]:
        if self._closed:
            raise PageParseError("root JSON: feed() after close()")
        try:
            self._coro.send(chunk)
        except ijson.JSONError as exc:
            raise PageParseError(f"root JSON is malformed: {_first_line(exc)}") from exc
        return self._drain()

    def close(self) -> list[RootEntry]:
        if self._closed:
            return []
        self._closed = True
        try:
            self._coro.close()
        except ijson.JSONError as exc:
            msg = f"root JSON is truncated or malformed: {_first_line(exc)}"
            raise PageParseError(msg) from exc
        entries = self._drain()
        if not self._saw_projects:
            raise PageParseError("root JSON has no 'projects' list")
        return entries

    def _drain(self) -> list[RootEntry]:
        entries: list[RootEntry] = []
        depth, key, name, serial = self._depth, self._key, self._name, self._serial
        in_projects = self._top_key == "projects"
        valid_name = PROJECT_NAME_RE.match
        for event, value in self._events:
            if depth == _ITEM and in_projects:  # the hot path: inside one project object
                if event == "map_key":
                    key = value
                elif event == "end_map":
                    depth = _LIST
                    if type(name) is str and len(name) <= MAX_NAME_LENGTH and valid_name(name):
                        entries.append(RootEntry(name, serial))
                    else:
                        self.skipped += 1
                elif event == "start_map" or event == "start_array":
                    depth += 1
                elif key == "name":
                    name = value
                elif key == "_last-serial":
                    serial = _serial_value(value, "_last-serial")
            elif depth == _LIST and in_projects:
                if event == "start_map":
                    depth, key, name, serial = _ITEM, None, None, None
                elif event == "end_array":
                    depth = _TOP
                else:
                    raise PageParseError(
                        f"root JSON: projects entries must be objects, got {event}"
                    )
            else:
                depth, key = self._structure(depth, key, event, value)
                in_projects = self._top_key == "projects"
        del self._events[:]
        self._depth, self._key, self._name, self._serial = depth, key, name, serial
        return entries

    def _structure(
        self, depth: int, key: str | None, event: str, value: object
    ) -> tuple[int, str | None]:
        """Everything outside project objects: the top object, meta, unknown values."""
        if event == "map_key":
            if depth == _TOP:
                self._top_key = str(value)
            return depth, str(value)
        if event in ("start_map", "start_array"):
            if depth == 0:
                if event != "start_map" or self._saw_top:
                    raise PageParseError("root JSON must be a single object")
                self._saw_top = True
            elif depth == _TOP and self._top_key == "projects":
                if event != "start_array":
                    raise PageParseError("root JSON: 'projects' must be a list")
                self._saw_projects = True
            return depth + 1, None
        if event in ("end_map", "end_array"):
            return depth - 1, None
        if depth == 0:
            raise PageParseError(f"root JSON must be an object, got a {event}")
        if depth == _TOP and self._top_key == "projects":
            raise PageParseError(f"root JSON: 'projects' must be a list, got a {event}")
        if depth == _LIST and self._top_key == "meta":
            self._meta(key, value)
        return depth, key

    def _meta(self, key: str | None, value: object) -> None:
        if key == "api-version" and isinstance(value, str):
            self.api_version = value
        elif key == "_last-serial":
            self.last_serial = _serial_value(value, "meta._last-serial")


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class _RootHtml(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.pending: list[str | None] = []
        self.api_version: str | None = None
        self.last_serial: int | None = None
        self.saw_end = False
        self.in_anchor = False
        self._text: list[str] = []
        self._length = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._end_anchor()
            self.in_anchor = True
        elif tag == "meta":
            values = dict(attrs)
            if (values.get("name") or "").lower() == "pypi:repository-version":
                self.api_version = values.get("content")

    def handle_endtag(self, tag: str) -> None:
        if tag == "a":
            self._end_anchor()
        elif tag in ("body", "html"):
            self._end_anchor()
            self.saw_end = True

    def handle_data(self, data: str) -> None:
        # Bounded: text beyond what a valid name could need is not kept.
        if self.in_anchor and self._length <= _MAX_ANCHOR_TEXT:
            self._text.append(data)
            self._length += len(data)

    def handle_comment(self, data: str) -> None:
        match = _SERIAL_COMMENT_RE.match(data)
        if match:
            self.last_serial = int(match.group(1))

    def _end_anchor(self) -> None:
        if self.in_anchor:
            text = "".join(self._text).strip()
            self.pending.append(text if self._length <= _MAX_ANCHOR_TEXT else None)
        self.in_anchor, self._text, self._length = False, [], 0


class RootHtmlParser:
    """Incremental parser for the PEP 503 root page: one project per ``<a>``'s text.

    The page counts as complete only when ``</body>`` or ``</html>`` was seen, so a
    truncated download is an error rather than a silently short list.
    """

    def __init__(self) -> None:
        self.last_serial: int | None = None
        self.api_version: str | None = None
        self.skipped = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._parser = _RootHtml()
        self._closed = False
        self._first = True

    def feed(self, chunk: bytes) -> list[RootEntry]:
        if self._closed:
            raise PageParseError("root HTML: feed() after close()")
        self._push(chunk, final=False)
        return self._drain()

    def close(self) -> list[RootEntry]:
        if self._closed:
            return []
        self._closed = True
        self._push(b"", final=True)
        parser = self._parser
        truncated = parser.in_anchor or bool(parser.rawdata.strip())
        parser.close()
        entries = self._drain()
        if truncated or not parser.saw_end:
            raise PageParseError("root HTML is truncated: no closing </body> or </html>")
        return entries

    def _push(self, chunk: bytes, *, final: bool) -> None:
        try:
            text = self._decoder.decode(chunk, final=final)
        except UnicodeDecodeError as exc:
            raise PageParseError(f"root HTML is not valid UTF-8: {exc}") from exc
        if self._first and text:
            text = text.removeprefix("\ufeff")
            self._first = False
        self._parser.feed(text)

    def _drain(self) -> list[RootEntry]:
        parser = self._parser
        self.api_version = parser.api_version
        self.last_serial = parser.last_serial
        entries: list[RootEntry] = []
        for name in parser.pending:
            if name is not None and is_valid_project_name(name):
                entries.append(RootEntry(name=name))
            else:
                self.skipped += 1
        parser.pending.clear()
        return entries


class RootRenderer:
    """Pieces of the mirror's root page in HTML and JSON, to be streamed side by side.

    HTML links are relative (``<normalised name>/``), as bandersnatch writes
    ``web/simple/index.html``, so the page works under any mount point; the anchor text
    is the name as given.
    """

    def html_head(self) -> bytes:
        return (
            "<!DOCTYPE html>\n<html>\n  <head>\n"
            f'    <meta name="pypi:repository-version" content="{MIRROR_API_VERSION}">\n'
            "    <title>Simple index</title>\n  </head>\n  <body>\n"
        ).encode()

    def html_entry(self, e: RootEntry) -> bytes:
        href = html.escape(normalize(e.name))
        return f'    <a href="{href}/">{html.escape(e.name)}</a><br/>\n'.encode()

    def html_tail(self, last_serial: int | None = None) -> bytes:
        serial = "" if last_serial is None else f"\n<!--SERIAL {last_serial}-->"
        return f"  </body>\n</html>{serial}\n".encode()

    def json_head(self, last_serial: int | None) -> bytes:
        meta: dict[str, Any] = {"api-version": MIRROR_API_VERSION}
        if last_serial is not None:
            meta["_last-serial"] = last_serial
        return ('{"meta":' + _json(meta) + ',"projects":[').encode()

    def json_entry(self, e: RootEntry, first: bool) -> bytes:
        item: dict[str, Any] = {"name": e.name}
        if e.last_serial is not None:
            item["_last-serial"] = e.last_serial
        return (("" if first else ",") + _json(item)).encode()

    def json_tail(self) -> bytes:
        return b"]}"


def _json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
