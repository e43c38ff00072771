"""PEP 691 content negotiation: ``Accept`` with q-values, and the ``?format=`` override.

Selection, in order:

1. the highest q-value wins (q=0 means "not acceptable");
2. at equal q, a format the client named explicitly beats one it only reached through
   ``type/*``, which beats one reached only through ``*/*`` (RFC 9110 specificity);
3. at equal q and specificity the server prefers JSON_V1 > HTML_V1 > HTML_LEGACY,
   except that a bare ``*/*`` prefers HTML_LEGACY: old clients (curl, easy_install) send
   ``*/*`` and PEP 691 asks servers to treat a missing preference like ``text/html``.

For each format the q-value comes from the most specific range that matches it, so
``*/*, application/vnd.pypi.simple.v1+json;q=0`` excludes JSON.

Content-Type: the vnd types are sent exactly as PEP 691 names them (as PyPI does; JSON
is UTF-8 by definition). For legacy ``text/html`` the mirror sends
``text/html; charset=utf-8``: every client parses the media type before comparing
(pip uses a prefix match, uv and webob parse parameters), and the explicit charset
keeps non-ASCII filenames and yank reasons correct in browsers.
"""

from __future__ import annotations

import re
from enum import Enum
from functools import lru_cache

MAX_ACCEPT_LENGTH = 8 * 1024

_TOKEN_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_QVALUE_RE = re.compile(r"^(?:\d+(?:\.\d*)?|\.\d+)$")
_CONTROL_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")

# How a format was matched: a higher number is more specific.
_WILDCARD, _TYPE_WILDCARD, _EXACT = 1, 2, 3


class IndexFormat(Enum):
    HTML_LEGACY = "text/html"
    HTML_V1 = "application/vnd.pypi.simple.v1+html"
    JSON_V1 = "application/vnd.pypi.simple.v1+json"

    @property
    def content_type(self) -> str:
        """The exact ``Content-Type`` header value for a response in this format."""
        if self is IndexFormat.HTML_LEGACY:
            return "text/html; charset=utf-8"
        return str(self.value)

    @property
    def is_json(self) -> bool:
        return self is IndexFormat.JSON_V1


class MalformedAccept(ValueError):
    """The ``Accept`` header cannot be parsed; the caller answers 400."""


# Media types naming each format exactly, including PEP 691's ``latest`` aliases.
_EXACT_TYPES: dict[str, IndexFormat] = {
    "text/html": IndexFormat.HTML_LEGACY,
    "application/vnd.pypi.simple.v1+html": IndexFormat.HTML_V1,
    "application/vnd.pypi.simple.latest+html": IndexFormat.HTML_V1,
    "application/vnd.pypi.simple.v1+json": IndexFormat.JSON_V1,
    "application/vnd.pypi.simple.latest+json": IndexFormat.JSON_V1,
}

_SERVER_PREFERENCE = {
    IndexFormat.JSON_V1: 3,
    IndexFormat.HTML_V1: 2,
    IndexFormat.HTML_LEGACY: 1,
}


def format_from_param(value: str) -> IndexFormat | None:
    """The format a ``?format=`` value names exactly, or None if unsupported."""
    return _EXACT_TYPES.get(value.strip().lower())


def _parse_qvalue(raw: str, element: str) -> float:
    value = raw.strip().strip('"')
    if not _QVALUE_RE.match(value):
        raise MalformedAccept(f"unparseable q-value {raw!r} in {element!r}")
    q = float(value)
    if not 0.0 <= q <= 1.0:
        raise MalformedAccept(f"q-value {raw!r} out of range 0..1 in {element!r}")
    return q


def _parse_element(element: str) -> tuple[str, str, float]:
    """``type/subtype;params`` -> (type, subtype, q). Non-q parameters are ignored."""
    media_range, *params = element.split(";")
    media_range = media_range.strip().lower()
    type_, slash, subtype = media_range.partition("/")
    if not slash or not _TOKEN_RE.match(type_) or not _TOKEN_RE.match(subtype):
        raise MalformedAccept(f"media range {media_range!r} is not of the form type/subtype")
    if type_ == "*" and subtype != "*":
        raise MalformedAccept(f"media range {media_range!r}: only */* may wildcard the type")
    q = 1.0
    for param in params:
        name, eq, value = param.partition("=")
        if eq and name.strip().lower() == "q":
            q = _parse_qvalue(value, element.strip())
    return type_, subtype, q


def parse_accept(accept: str) -> list[tuple[str, str, float]]:
    """The (type, subtype, q) ranges of an ``Accept`` header, in header order."""
    if len(accept) > MAX_ACCEPT_LENGTH:
        raise MalformedAccept(f"Accept header longer than {MAX_ACCEPT_LENGTH} bytes")
    if _CONTROL_RE.search(accept):
        raise MalformedAccept("Accept header contains control characters")
    return [_parse_element(el) for el in accept.split(",") if el.strip()]


def _match(fmt: IndexFormat, type_: str, subtype: str) -> int:
    """How specifically the range ``type_/subtype`` matches ``fmt`` (0: no match)."""
    if type_ == "*":
        return _WILDCARD
    if subtype == "*":
        return _TYPE_WILDCARD if fmt.value.startswith(type_ + "/") else 0
    return _EXACT if _EXACT_TYPES.get(f"{type_}/{subtype}") is fmt else 0


def _quality(fmt: IndexFormat, ranges: list[tuple[str, str, float]]) -> tuple[float, int]:
    """(q, specificity) from the most specific matching ranges; the highest q among ties."""
    best_spec, best_q = 0, 0.0
    for type_, subtype, q in ranges:
        spec = _match(fmt, type_, subtype)
        if spec == 0:
            continue
        if spec > best_spec or (spec == best_spec and q > best_q):
            best_spec, best_q = spec, q
    return best_q, best_spec


def _preference(fmt: IndexFormat, specificity: int) -> int:
    if specificity == _WILDCARD and fmt is IndexFormat.HTML_LEGACY:
        return max(_SERVER_PREFERENCE.values()) + 1
    return _SERVER_PREFERENCE[fmt]


@lru_cache(maxsize=512)
def choose_format(accept: str | None, format_param: str | None) -> IndexFormat | None:
    """The format to answer with; None means 406. Raises MalformedAccept (400).

    An empty ``?format=`` is treated as absent; any other unsupported value gives None.
    Memoised: every pip or uv sends one of a few headers.
    """
    if format_param is not None and format_param.strip():
        return format_from_param(format_param)
    if accept is None or not accept.strip():
        return IndexFormat.HTML_LEGACY
    ranges = parse_accept(accept)
    if not ranges:
        return IndexFormat.HTML_LEGACY
    best: tuple[float, int, int] | None = None
    chosen: IndexFormat | None = None
    for fmt in IndexFormat:
        q, spec = _quality(fmt, ranges)
        if q <= 0.0:
            continue
        key = (q, spec, _preference(fmt, spec))
        if best is None or key > best:
            best, chosen = key, fmt
    return chosen


@lru_cache(maxsize=256)
def accepts_gzip(accept_encoding: str) -> bool:
    """Does an ``Accept-Encoding`` header take gzip (by name or ``*``) with q above 0?"""
    for part in accept_encoding.lower().split(","):
        coding, _, params = part.partition(";")
        if coding.strip() not in ("gzip", "x-gzip", "*"):
            continue
        params = params.strip()
        if not params:
            return True
        name, _, value = params.partition("=")
        try:
            return name.strip() != "q" or float(value) > 0
        except ValueError:
            return False
    return False
