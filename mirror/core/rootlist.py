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
import json
import re
from html.parser import HTMLParser
from typing import Any

import ijson

from mirror.core.index import PageParseError
from mirror.core.model import MIRROR_API_VERSION, RootEntry
from mirror.core.names import MAX_NAME_LENGTH, is_valid_project_name, normalize

_BACKEND = ijson.get_backend("yajl2_c")
_SERIAL_COMMENT_RE = re.compile(r"^\s*SERIAL\s+(\d{1,18})\s*$")
# Anchor text kept per root entry: room for a maximal name plus surrounding whitespace.
_MAX_ANCHOR_TEXT = MAX_NAME_LENGTH + 1024

_ITEM = "projects.item"
_ITEM_NAME = "projects.item.name"
_ITEM_SERIAL = "projects.item._last-serial"


def _serial_value(value: object, where: str) -> int:
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 19:
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise PageParseError(f"root JSON: {where} must be a non-negative integer, got {value!r:.40}")


class RootJsonParser:
    """Incremental parser for the PEP 691 root page (keys in any order)."""

    def __init__(self) -> None:
        self.last_serial: int | None = None
        self.api_version: str | None = None
        self.skipped = 0
        self._events: Any = ijson.sendable_list()
        self._coro: Any = _BACKEND.parse_coro(self._events, use_float=True)
        self._top_key: str | None = None
        self._started = False
        self._saw_projects = False
        self._closed = False
        self._name: str | None = None
        self._serial: int | None = None

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
            raise PageParseError(
                f"root JSON is truncated or malformed: {_first_line(exc)}"
            ) from exc
        entries = self._drain()
        if not self._saw_projects:
            raise PageParseError("root JSON has no 'projects' list")
        return entries

    def _drain(self) -> list[RootEntry]:
        entries: list[RootEntry] = []
        for prefix, event, value in self._events:
            if prefix.startswith(_ITEM) and self._top_key == "projects":
                entry = self._item_event(prefix, event, value)
                if entry is not None:
                    entries.append(entry)
            else:
                self._other_event(prefix, event, value)
        del self._events[:]
        return entries

    def _item_event(self, prefix: str, event: str, value: object) -> RootEntry | None:
        if prefix == _ITEM_NAME and event == "string":
            self._name = value if isinstance(value, str) else None
        elif prefix == _ITEM_SERIAL and event != "map_key":
            self._serial = None if value is None else _serial_value(value, "_last-serial")
        elif prefix == _ITEM:
            if event == "start_map":
                self._name, self._serial = None, None
            elif event == "end_map":
                return self._entry()
            elif event != "map_key":
                raise PageParseError(f"root JSON: projects entries must be objects, got {event}")
        return None

    def _entry(self) -> RootEntry | None:
        name, self._name = self._name, None
        if name is None or not is_valid_project_name(name):
            self.skipped += 1
            return None
        return RootEntry(name=name, last_serial=self._serial)

    def _other_event(self, prefix: str, event: str, value: object) -> None:
        if prefix == "":
            if event == "map_key":
                self._top_key = str(value)
            elif event == "start_map" and not self._started:
                self._started = True
            elif event != "end_map":
                raise PageParseError(f"root JSON must be an object, got {event}")
        elif prefix == "projects" and self._top_key == "projects":
            if event == "start_array":
                self._saw_projects = True
            elif event != "end_array":
                raise PageParseError(f"root JSON: 'projects' must be a list, got {event}")
        elif self._top_key == "meta":
            self._meta_event(prefix, event, value)

    def _meta_event(self, prefix: str, event: str, value: object) -> None:
        if prefix == "meta.api-version" and event == "string":
            self.api_version = str(value)
        elif prefix == "meta._last-serial" and event in ("number", "string"):
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
        href = _html_escape(normalize(e.name))
        return f'    <a href="{href}/">{_html_escape(e.name)}</a><br/>\n'.encode()

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


def _html_escape(text: str) -> str:
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    )
