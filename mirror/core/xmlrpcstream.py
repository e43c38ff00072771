"""Incremental parser for ``list_packages_with_serial()`` answers (pure).

PyPI answers that call with one XML-RPC struct of every project (about 600,000 members,
tens of MB). ``xmlrpc.client.loads`` would build the whole dict; this push parser (expat)
yields ``(name, serial)`` pairs chunk by chunk instead, so the list is never held whole.
DTDs are refused (no entity tricks), nesting and text are bounded.
"""

from __future__ import annotations

from typing import Any
from xml.parsers import expat

from mirror.core.names import MAX_NAME_LENGTH, is_valid_project_name

MAX_DEPTH = 16
MAX_TEXT = MAX_NAME_LENGTH + 1024
_VALUE_TYPES = frozenset({"int", "i4", "i8", "string"})


class XmlRpcStreamError(ValueError):
    """The answer is not a well-formed XML-RPC struct of name → serial."""


class XmlRpcFault(Exception):
    """The server answered with a fault (e.g. "XML-RPC API is disabled")."""

    def __init__(self, code: int | None, message: str) -> None:
        super().__init__(f"XML-RPC fault {code}: {message}")
        self.code = code
        self.message = message


class SerialListParser:
    """``feed`` bytes, get the completed ``(name, serial)`` pairs; ``close`` at the end."""

    def __init__(self) -> None:
        self.skipped = 0
        self._parser: Any = expat.ParserCreate()
        self._parser.StartElementHandler = self._start
        self._parser.EndElementHandler = self._end
        self._parser.CharacterDataHandler = self._text
        self._parser.StartDoctypeDeclHandler = self._doctype
        self._parser.EntityDeclHandler = self._doctype
        self._stack: list[str] = []
        self._name: list[str] = []
        self._value: list[str] = []
        self._value_type: str | None = None
        self._length = 0
        self._pairs: list[tuple[str, int]] = []
        self._fault = False
        self._fault_fields: dict[str, str] = {}
        self._saw_struct = False
        self._closed = False

    def feed(self, chunk: bytes) -> list[tuple[str, int]]:
        if self._closed:
            raise XmlRpcStreamError("feed() after close()")
        self._parse(chunk, final=False)
        return self._drain()

    def close(self) -> list[tuple[str, int]]:
        if self._closed:
            return []
        self._closed = True
        self._parse(b"", final=True)
        if self._fault:
            code_text = self._fault_fields.get("faultCode", "")
            code = int(code_text) if code_text.lstrip("-").isdigit() else None
            raise XmlRpcFault(code, self._fault_fields.get("faultString", "unknown fault"))
        if not self._saw_struct:
            raise XmlRpcStreamError("the answer holds no struct of projects")
        return self._drain()

    def _parse(self, data: bytes, *, final: bool) -> None:
        try:
            self._parser.Parse(data, final)
        except expat.ExpatError as exc:
            raise XmlRpcStreamError(f"malformed XML-RPC answer: {exc}") from exc

    def _drain(self) -> list[tuple[str, int]]:
        pairs, self._pairs = self._pairs, []
        return pairs

    def _doctype(self, *_args: object) -> None:
        raise XmlRpcStreamError("XML-RPC answers must not carry a DTD or entities")

    def _start(self, tag: str, _attrs: dict[str, str]) -> None:
        if len(self._stack) >= MAX_DEPTH:
            raise XmlRpcStreamError(f"XML-RPC answer nested deeper than {MAX_DEPTH}")
        if tag == "fault":
            self._fault = True
        elif tag == "struct":
            self._saw_struct = True
        elif tag == "member":
            self._name, self._value, self._value_type, self._length = [], [], None, 0
        elif tag in _VALUE_TYPES and self._stack[-1:] == ["value"]:
            self._value_type = tag
        self._stack.append(tag)

    def _end(self, tag: str) -> None:
        self._stack.pop()
        if tag == "member":
            self._member()

    def _text(self, data: str) -> None:
        if not self._stack:
            return
        top = self._stack[-1]
        if top == "name":
            target = self._name
        elif top in _VALUE_TYPES or top == "value":
            target = self._value
        else:
            return
        self._length += len(data)
        if self._length > MAX_TEXT:
            raise XmlRpcStreamError("an XML-RPC struct member is implausibly long")
        target.append(data)

    def _member(self) -> None:
        name = "".join(self._name).strip()
        value = "".join(self._value).strip()
        if self._fault:
            self._fault_fields[name] = value
            return
        if self._value_type not in ("int", "i4", "i8") or not value.lstrip("-").isdigit():
            raise XmlRpcStreamError(f"project {name[:100]!r}: serial {value[:40]!r} is not an int")
        serial = int(value)
        if serial < 0 or not is_valid_project_name(name):
            self.skipped += 1
            return
        self._pairs.append((name, serial))
