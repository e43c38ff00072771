"""Parse upstream project pages (PEP 691 JSON, PEP 503 HTML) and render the mirror's own.

Parsing is strict about types: whatever a hostile page contains, the result is either a
well-typed ``ProjectPage`` (safe filenames, hex digests, a valid project name) or a
``PageParseError`` saying what is wrong. Rendering is deterministic (equal pages give
equal bytes) so ETags derived from the bytes are stable.
"""

from __future__ import annotations

import functools
import html
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from html.parser import HTMLParser
from types import MappingProxyType
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

from packaging.version import Version

from mirror.core.model import MIRROR_API_VERSION, DistFile, ProjectPage
from mirror.core.names import (
    is_valid_filename,
    is_valid_project_name,
    normalize,
    version_from_filename,
)

# Hash names the mirror prefers to advertise, best first; others follow alphabetically.
HASH_PREFERENCE = (
    "sha256",
    "sha384",
    "sha512",
    "sha3_256",
    "sha3_384",
    "sha3_512",
    "blake2b",
    "blake2s",
    "sha224",
    "sha1",
    "md5",
)

_HASH_NAMES = {name: name for name in HASH_PREFERENCE}
_HASH_NAME_RE = re.compile(r"^[a-z0-9_]{1,32}$")
_HEX_RE = re.compile(r"^[0-9a-fA-F]{1,256}$")
_API_VERSION_RE = re.compile(r"^(\d{1,4})\.(\d{1,4})$")
_ABSOLUTE_URL_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_SERIAL_COMMENT_RE = re.compile(r"^\s*SERIAL\s+(\d{1,18})\s*$")

_FILE_KEYS = frozenset(
    {
        "filename",
        "url",
        "hashes",
        "requires-python",
        "yanked",
        "core-metadata",
        "dist-info-metadata",
        "size",
        "upload-time",
        "provenance",
        "gpg-sig",
    }
)
_TOP_KEYS = frozenset(
    {"meta", "name", "files", "versions", "project-status", "tracks", "alternate-locations"}
)
_META_KEYS = frozenset({"api-version", "_last-serial"})


class PageParseError(ValueError):
    """An upstream page could not be understood; the message says where and why."""


# --------------------------------------------------------------------------- helpers


def _check_api_version(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise PageParseError(f"{where}: api-version must be a string, got {_kind(value)}")
    match = _API_VERSION_RE.match(value.strip())
    if match is None:
        raise PageParseError(f"{where}: api-version {value!r:.40} is not Major.Minor")
    if match.group(1) != "1":
        raise PageParseError(f"{where}: unsupported api-version {value!r:.40} (major must be 1)")
    return value.strip()


def _kind(value: object) -> str:
    return type(value).__name__


def _as_str(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise PageParseError(f"{where} must be a string, got {_kind(value)}")
    return value


def _opt_str(value: object, where: str) -> str | None:
    """A string, with JSON null and "" meaning "not set"."""
    if value is None:
        return None
    return _as_str(value, where) or None


def _serial(value: object, where: str) -> int | None:
    """A non-negative serial; bandersnatch writes it as a string of digits."""
    if value is None:
        return None
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 19:
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise PageParseError(f"{where} must be a non-negative integer, got {value!r:.40}")


def _hash_map(value: object, where: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise PageParseError(f"{where} must be an object, got {_kind(value)}")
    hashes: dict[str, str] = {}
    for name, digest in value.items():
        key = name.lower()
        key = _HASH_NAMES.get(key, key)  # one string per known name, not one per file
        if not _HASH_NAME_RE.match(key):
            raise PageParseError(f"{where}: invalid hash name {name!r:.40}")
        if not isinstance(digest, str) or not _HEX_RE.match(digest):
            raise PageParseError(f"{where}[{key}] must be a hex digest, got {digest!r:.80}")
        lowered = digest.lower()
        hashes[key] = digest if lowered == digest else lowered
    return hashes


def _str_tuple(value: object, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise PageParseError(f"{where} must be a list of strings, got {_kind(value)}")
    return tuple(_as_str(item, f"{where}[{i}]") for i, item in enumerate(value))


def _check_url(url: str, where: str) -> str:
    """Reject URLs that ``urllib.parse`` cannot split, so later code cannot trip on them.

    ``urlsplit`` only raises on brackets (IPv6 literals) and on non-ASCII hosts, so only
    such URLs are split here: a large page has tens of thousands of URLs.
    """
    if not url:
        raise PageParseError(f"{where}: empty URL")
    if "[" in url or "]" in url or not url.isascii():
        try:
            urlsplit(url)
        except ValueError as exc:
            raise PageParseError(f"{where}: invalid URL {url!r:.80}: {exc}") from exc
    return url


def _filename(value: str, where: str) -> str:
    if not is_valid_filename(value):
        raise PageParseError(f"{where}: unsafe or invalid filename {value!r:.80}")
    return value


def _project_name(value: str, where: str) -> str:
    if not is_valid_project_name(value):
        raise PageParseError(f"{where}: invalid project name {value!r:.80}")
    return normalize(value)


# --------------------------------------------------------------------------- JSON in


def _json_yanked(value: object, where: str) -> bool | str:
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return value or False  # PEP 691: a falsy value is "not yanked"
    raise PageParseError(f"{where} must be a boolean or a string, got {_kind(value)}")


def _json_core_metadata(value: object, where: str) -> bool | dict[str, str]:
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    hashes = _hash_map(value, where)
    return hashes or False


def _json_size(value: object, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise PageParseError(f"{where} must be a non-negative integer, got {value!r:.40}")


def _json_gpg_sig(value: object, where: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise PageParseError(f"{where} must be a boolean, got {_kind(value)}")


#: The ``extra`` of a file that has no unknown keys (shared: most have none).
NO_EXTRA: Mapping[str, Any] = MappingProxyType({})


class _Interned:
    """One string object per distinct short value within a page (``requires-python`` and
    ``upload-time`` repeat across a release's files): a large page costs less memory."""

    def __init__(self) -> None:
        self._seen: dict[str, str] = {}

    def __call__(self, value: str | None) -> str | None:
        if value is None or len(value) > 64:
            return value
        return self._seen.setdefault(value, value)


def _json_file(
    raw: object, where: str, intern: _Interned | None = None, base_url: str | None = None
) -> DistFile:
    if not isinstance(raw, dict):
        raise PageParseError(f"{where} must be an object, got {_kind(raw)}")
    if "filename" not in raw or "url" not in raw:
        raise PageParseError(f"{where} lacks 'filename' or 'url'")
    url = _check_url(_as_str(raw["url"], f"{where}.url"), f"{where}.url")
    if base_url is not None:
        url = absolute_url(base_url, url, f"{where}.url")
    metadata_key = "core-metadata" if "core-metadata" in raw else "dist-info-metadata"
    share = intern if intern is not None else _Interned()
    return DistFile(
        filename=_filename(_as_str(raw["filename"], f"{where}.filename"), where),
        url=url,
        hashes=_hash_map(
            raw.get("hashes") if raw.get("hashes") is not None else {}, f"{where}.hashes"
        ),
        requires_python=share(_opt_str(raw.get("requires-python"), f"{where}.requires-python")),
        yanked=_json_yanked(raw.get("yanked"), f"{where}.yanked"),
        core_metadata=_json_core_metadata(raw.get(metadata_key), f"{where}.{metadata_key}"),
        size=_json_size(raw.get("size"), f"{where}.size"),
        upload_time=share(_opt_str(raw.get("upload-time"), f"{where}.upload-time")),
        provenance=_opt_str(raw.get("provenance"), f"{where}.provenance"),
        gpg_sig=_json_gpg_sig(raw.get("gpg-sig"), f"{where}.gpg-sig"),
        extra=(
            NO_EXTRA
            if raw.keys() <= _FILE_KEYS
            else {k: v for k, v in raw.items() if k not in _FILE_KEYS}
        ),
    )


#: An absolute http(s) URL that ``urljoin`` gives back unchanged: lowercase scheme, a
#: host, printable ASCII, no ``;`` params and no empty ``?`` or ``#`` (what it would drop).
#: Most URLs on a page are like this, and the check costs a tenth of the join.
_OUTSIDE = r"\x00-\x20\x7f-\U0010ffff"  # not printable ASCII
_PLAIN_ABSOLUTE = re.compile(
    rf"https?://[^{_OUTSIDE}/?#;\[\]]+(?:/[^{_OUTSIDE}?#;]*)?(?:\?[^{_OUTSIDE}#;]+)?"
    rf"(?:#[^{_OUTSIDE}]+)?\Z"
)


def absolute_url(base_url: str, url: str, where: str = "url") -> str:
    """``url`` made absolute against the page's URL, as ``urljoin`` does (quicker for the
    URLs it would give back unchanged); PageParseError for one it cannot join."""
    if _PLAIN_ABSOLUTE.match(url):
        return url
    try:
        return urljoin(base_url, url)
    except ValueError as exc:
        raise PageParseError(f"{where}: invalid URL {url!r:.80}: {exc}") from exc


def _json_project_status(value: object) -> tuple[str | None, str | None]:
    """PEP 792 ``{"status": ..., "reason": ...}``; the PEP's prose also says ``state``."""
    if value is None:
        return None, None
    if not isinstance(value, dict):
        raise PageParseError(f"project-status must be an object, got {_kind(value)}")
    status = value.get("status", value.get("state"))
    return (
        _opt_str(status, "project-status.status"),
        _opt_str(value.get("reason"), "project-status.reason"),
    )


def decode_page(data: bytes | str, kind: str = "JSON") -> str:
    """A page's text (UTF-8, a byte order mark dropped); ``kind`` names it in the error."""
    if isinstance(data, str):
        return data.removeprefix("\ufeff")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PageParseError(f"{kind} page is not valid UTF-8: {exc}") from exc


def _load_json(text: str) -> dict[str, Any]:
    try:
        doc = json.loads(text, parse_constant=_reject_constant)
    except RecursionError as exc:
        raise PageParseError("JSON page is nested too deeply") from exc
    except ValueError as exc:  # JSONDecodeError, and int digit limits
        raise PageParseError(f"JSON page is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise PageParseError(f"JSON page must be an object, got {_kind(doc)}")
    return doc


def _reject_constant(name: str) -> None:
    raise PageParseError(f"JSON page contains the non-standard constant {name}")


_WHITESPACE = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


class _JsonScanner:
    """The top-level object of a JSON page decoded key by key, and its ``files`` list
    entry by entry, each entry made a ``DistFile`` at once: the decoded form of a whole
    page (several times its size) never exists, and no single call runs long (a thread
    parsing a huge page leaves the event loop its turns). Accepts what ``json.loads``
    accepts and decodes it alike (the same decoder; of duplicate keys the last one wins).
    """

    def __init__(self, text: str, base_url: str | None) -> None:
        self.text = text
        self.base_url = base_url
        self.pos = 0
        self.intern = _Interned()

    def _skip(self) -> str:
        """The next character that is not whitespace ("" at the end), not consumed."""
        match = _WHITESPACE.match(self.text, self.pos)
        assert match is not None  # the pattern matches the empty string
        self.pos = match.end()
        return self.text[self.pos : self.pos + 1]

    def _value(self) -> Any:
        self._skip()
        try:
            value, self.pos = _DECODER.raw_decode(self.text, self.pos)
        except RecursionError as exc:
            raise PageParseError("JSON page is nested too deeply") from exc
        except ValueError as exc:  # JSONDecodeError, and int digit limits
            raise PageParseError(f"JSON page is not valid JSON: {exc}") from exc
        return value

    def _next(self, allowed: str) -> str:
        found = self._skip()
        if not found or found not in allowed:
            expected = " or ".join(repr(c) for c in allowed)
            raise PageParseError(
                f"JSON page is not valid JSON: expected {expected} at char {self.pos}"
            )
        self.pos += 1
        return found

    def scan(self) -> tuple[dict[str, Any], tuple[DistFile, ...] | None]:
        """The top-level object without its ``files`` list, and the files (None when
        ``files`` is not a list)."""
        doc: dict[str, Any] = {}
        files: tuple[DistFile, ...] | None = None
        self._next("{")
        if self._skip() == "}":
            self.pos += 1
        else:
            while True:
                if self._skip() != '"':
                    raise PageParseError(
                        f"JSON page is not valid JSON: expected a key at char {self.pos}"
                    )
                key = self._value()
                self._next(":")
                doc.pop(key, None)
                files = None if key == "files" else files
                if key == "files" and self._skip() == "[":
                    files = self._files()
                else:
                    doc[key] = self._value()
                if self._next(",}") == "}":
                    break
        if self._skip():
            raise PageParseError(f"JSON page is not valid JSON: extra data at char {self.pos}")
        return doc, files

    def _files(self) -> tuple[DistFile, ...]:
        self.pos += 1  # the "["
        if self._skip() == "]":
            self.pos += 1
            return ()
        files: list[DistFile] = []
        while True:
            where = f"files[{len(files)}]"
            files.append(_json_file(self._value(), where, self.intern, self.base_url))
            if self._next(",]") == "]":
                return tuple(files)


def parse_project_json(data: bytes | str, base_url: str | None = None) -> ProjectPage:
    """Parse a PEP 691 project page (any api-version 1.x); with ``base_url`` (the page's
    own URL) every file URL is made absolute.

    Decoded incrementally (``_JsonScanner``): memory stays a small multiple of the page's
    size however many files it lists."""
    text = decode_page(data)
    if not text.lstrip(" \t\n\r").startswith("{"):
        _load_json(text)  # not an object: json.loads says what is wrong
        raise PageParseError("JSON page must be an object")
    doc, files = _JsonScanner(text, base_url).scan()
    del text
    meta = doc.get("meta", {})
    if not isinstance(meta, dict):
        raise PageParseError(f"meta must be an object, got {_kind(meta)}")
    if "name" not in doc:
        raise PageParseError("JSON page lacks 'name'")
    if files is None:
        raise PageParseError(f"files must be a list, got {_kind(doc.get('files'))}")
    versions = doc.get("versions")
    status, reason = _json_project_status(doc.get("project-status"))
    return ProjectPage(
        name=_project_name(_as_str(doc["name"], "name"), "name"),
        files=files,
        versions=None if versions is None else _str_tuple(versions, "versions"),
        api_version=_check_api_version(meta.get("api-version", "1.0"), "meta"),
        last_serial=_serial(meta.get("_last-serial"), "meta._last-serial"),
        project_status=status,
        project_status_reason=reason,
        tracks=_str_tuple(doc.get("tracks"), "tracks"),
        alternate_locations=_str_tuple(doc.get("alternate-locations"), "alternate-locations"),
        extra={k: v for k, v in doc.items() if k not in _TOP_KEYS},
        meta_extra={k: v for k, v in meta.items() if k not in _META_KEYS},
    )


# --------------------------------------------------------------------------- HTML in


def _fragment_hashes(fragment: str) -> dict[str, str] | None:
    """``sha256=<hex>`` -> {"sha256": hex}; None when the fragment is not a hash."""
    name, eq, digest = fragment.partition("=")
    name = name.lower()
    if eq and _HASH_NAME_RE.match(name) and _HEX_RE.match(digest):
        return {name: digest.lower()}
    return None


def _html_core_metadata(value: str | None) -> bool | dict[str, str]:
    """Attribute present means metadata exists; ``false`` is read as absent."""
    if value is None:
        return True
    value = value.strip()
    if value.lower() == "false":
        return False
    return _fragment_hashes(value) or True


def _html_bool(value: str | None) -> bool | None:
    if value is None:
        return None
    return {"true": True, "false": False}.get(value.strip().lower())


def _attr(attrs: Mapping[str, str | None], name: str) -> str | None:
    """The attribute value, "" for a bare attribute, None when absent."""
    if name not in attrs:
        return None
    return attrs[name] or ""


class _ProjectHtmlParser(HTMLParser):
    def __init__(self, page_url: str) -> None:
        super().__init__(convert_charrefs=True)
        self.base_url = page_url
        self.saw_base = False
        self.api_version: str | None = None
        self.project_status: str | None = None
        self.project_status_reason: str | None = None
        self.tracks: list[str] = []
        self.alternate_locations: list[str] = []
        self.last_serial: int | None = None
        self.anchors: list[tuple[dict[str, str | None], str]] = []
        self._open: dict[str, str | None] | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._close_anchor()
            self._open = dict(attrs)
        elif tag == "meta":
            self._meta(dict(attrs))
        elif tag == "base" and not self.saw_base:
            href = dict(attrs).get("href")
            if href:
                try:
                    self.base_url = urljoin(self.base_url, href)
                except ValueError as exc:
                    raise PageParseError(f"invalid <base href> {href!r:.80}") from exc
                self.saw_base = True

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag == "a":
            self._close_anchor()

    def handle_endtag(self, tag: str) -> None:
        if tag == "a":
            self._close_anchor()

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._text.append(data)

    def handle_comment(self, data: str) -> None:
        match = _SERIAL_COMMENT_RE.match(data)
        if match:
            self.last_serial = int(match.group(1))

    def close(self) -> None:
        super().close()
        self._close_anchor()

    def _close_anchor(self) -> None:
        if self._open is not None:
            self.anchors.append((self._open, "".join(self._text).strip()))
        self._open, self._text = None, []

    def _meta(self, attrs: dict[str, str | None]) -> None:
        name = (attrs.get("name") or "").strip().lower()
        content = attrs.get("content")
        if content is None:
            return
        if name == "pypi:repository-version":
            self.api_version = content
        elif name == "pypi:project-status":
            self.project_status = content.strip() or None
        elif name == "pypi:project-status-reason":
            self.project_status_reason = content or None
        elif name == "pypi:tracks":
            self.tracks.append(content)
        elif name == "pypi:alternate-locations":
            self.alternate_locations.append(content)


def _html_file(attrs: dict[str, str | None], text: str, base_url: str, where: str) -> DistFile:
    href = (attrs.get("href") or "").strip()
    location, sharp, fragment = href.partition("#")
    hashes = _fragment_hashes(fragment) if sharp else None
    if hashes is None:
        hashes, location = {}, href
    try:
        url = location if _ABSOLUTE_URL_RE.match(location) else urljoin(base_url, location)
        filename = text or unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    except ValueError as exc:
        raise PageParseError(f"{where}: invalid href {href!r:.80}: {exc}") from exc
    _check_url(url, where)
    core = _attr(attrs, "data-core-metadata")
    if core is None:
        core = _attr(attrs, "data-dist-info-metadata")
    yanked = _attr(attrs, "data-yanked")
    return DistFile(
        filename=_filename(filename, where),
        url=url,
        hashes=hashes,
        requires_python=_attr(attrs, "data-requires-python") or None,
        yanked=False if yanked is None else (yanked or True),
        core_metadata=False if core is None else _html_core_metadata(core),
        provenance=_attr(attrs, "data-provenance") or None,
        gpg_sig=_html_bool(_attr(attrs, "data-gpg-sig")),
    )


def parse_project_html(data: bytes | str, project: str, page_url: str) -> ProjectPage:
    """Parse a PEP 503 project page fetched from ``page_url``; hrefs become absolute."""
    name = _project_name(project, "project")
    text = decode_page(data, "HTML")
    parser = _ProjectHtmlParser(page_url)
    parser.feed(text)
    parser.close()
    files = tuple(
        _html_file(attrs, label, parser.base_url, f"anchor {i}")
        for i, (attrs, label) in enumerate(parser.anchors)
        if attrs.get("href")
    )
    api_version = parser.api_version
    return ProjectPage(
        name=name,
        files=files,
        api_version="1.0" if api_version is None else _check_api_version(api_version, "meta"),
        last_serial=parser.last_serial,
        project_status=parser.project_status,
        project_status_reason=parser.project_status_reason,
        tracks=tuple(parser.tracks),
        alternate_locations=tuple(parser.alternate_locations),
    )


# --------------------------------------------------------------------------- out


def preferred_hash(hashes: Mapping[str, str]) -> tuple[str, str] | None:
    """The (name, digest) to advertise: sha256 if known, else the next best."""
    for name in HASH_PREFERENCE:
        if name in hashes:
            return name, hashes[name]
    for name in sorted(hashes):
        return name, hashes[name]
    return None


def _esc(value: str) -> str:
    return html.escape(value, quote=True)


def _html_href(file: DistFile) -> str:
    best = preferred_hash(file.hashes)
    if best is None or "#" in file.url:
        return file.url
    return f"{file.url}#{best[0]}={best[1]}"


def _html_core_metadata_value(value: bool | Mapping[str, str]) -> str | None:
    if value is False:
        return None
    if value is True:
        return "true"
    best = preferred_hash(value)
    return "true" if best is None else f"{best[0]}={best[1]}"


def _html_anchor(file: DistFile) -> str:
    attrs = [f'href="{_esc(_html_href(file))}"']
    if file.requires_python:
        attrs.append(f'data-requires-python="{_esc(file.requires_python)}"')
    if file.yanked is not False:
        reason = file.yanked if isinstance(file.yanked, str) else ""
        attrs.append(f'data-yanked="{_esc(reason)}"')
    core = _html_core_metadata_value(file.core_metadata)
    if core is not None:
        # PEP 714: the legacy alias is allowed in HTML and must equal data-core-metadata.
        attrs.append(f'data-dist-info-metadata="{_esc(core)}"')
        attrs.append(f'data-core-metadata="{_esc(core)}"')
    if file.gpg_sig is not None:
        attrs.append(f'data-gpg-sig="{"true" if file.gpg_sig else "false"}"')
    if file.provenance:
        attrs.append(f'data-provenance="{_esc(file.provenance)}"')
    return f"    <a {' '.join(attrs)}>{_esc(file.filename)}</a><br />\n"


def _html_metas(page: ProjectPage) -> list[str]:
    metas = [("pypi:repository-version", MIRROR_API_VERSION)]
    if page.project_status:
        metas.append(("pypi:project-status", page.project_status))
    if page.project_status_reason:
        metas.append(("pypi:project-status-reason", page.project_status_reason))
    metas.extend(("pypi:tracks", url) for url in page.tracks)
    metas.extend(("pypi:alternate-locations", url) for url in page.alternate_locations)
    return [f'    <meta name="{n}" content="{_esc(c)}">\n' for n, c in metas]


#: Files rendered per piece of a page's bytes: pieces are encoded as they are made, so
#: the text of a large page and its bytes never both exist whole.
RENDER_BATCH = 512


def _encoded(texts: Iterable[str]) -> Iterator[bytes]:
    """``texts`` as UTF-8, ``RENDER_BATCH`` of them joined per piece."""
    batch: list[str] = []
    for text in texts:
        batch.append(text)
        if len(batch) >= RENDER_BATCH:
            yield "".join(batch).encode("utf-8")
            batch.clear()
    if batch:
        yield "".join(batch).encode("utf-8")


def render_project_html(page: ProjectPage) -> bytes:
    """A PEP 503 page in the shape PyPI serves (plus its ``<!--SERIAL n-->`` trailer)."""
    return b"".join(render_project_html_pieces(page))


def render_project_html_pieces(page: ProjectPage) -> list[bytes]:
    """``render_project_html`` in pieces (a large page's bytes are never joined)."""
    name = _esc(page.name)
    head = ["<!DOCTYPE html>\n<html>\n  <head>\n"]
    head.extend(_html_metas(page))
    head.append(f"    <title>Links for {name}</title>\n  </head>\n  <body>\n")
    head.append(f"    <h1>Links for {name}</h1>\n")
    tail = ["  </body>\n</html>\n"]
    if page.last_serial is not None:
        tail.append(f"<!--SERIAL {page.last_serial}-->\n")
    return [
        "".join(head).encode("utf-8"),
        *_encoded(_html_anchor(f) for f in page.files),
        "".join(tail).encode("utf-8"),
    ]


def derive_versions(files: Sequence[DistFile]) -> tuple[str, ...]:
    """Versions named by the files' filenames, sorted; unparseable ones are skipped."""
    found: dict[str, Version] = {}
    for file in files:
        text = version_from_filename(file.filename)
        if text is not None and text not in found:
            found[text] = Version(text)
    return tuple(sorted(found, key=found.__getitem__))


def _json_file_out(file: DistFile) -> dict[str, Any]:
    out: dict[str, Any] = {k: v for k, v in file.extra.items() if k not in _FILE_KEYS}
    out.update(
        {
            "filename": file.filename,
            "url": file.url,
            "hashes": dict(file.hashes),
            "yanked": file.yanked,
            "core-metadata": (
                file.core_metadata
                if isinstance(file.core_metadata, bool)
                else dict(file.core_metadata)
            ),
        }
    )
    # PEP 714: "dist-info-metadata" (in _FILE_KEYS, so dropped above) never appears in JSON.
    optional = {
        "requires-python": file.requires_python,
        "size": file.size,
        "upload-time": file.upload_time,
        "provenance": file.provenance,
        "gpg-sig": file.gpg_sig,
    }
    out.update({k: v for k, v in optional.items() if v is not None})
    return out


_dump = functools.partial(json.dumps, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def render_project_json(page: ProjectPage) -> bytes:
    """A PEP 691 page at ``MIRROR_API_VERSION``, keys sorted, compact, UTF-8."""
    return b"".join(render_project_json_pieces(page))


def render_project_json_pieces(page: ProjectPage) -> list[bytes]:
    """``render_project_json`` in pieces: the bytes of one ``json.dumps(doc,
    sort_keys=True)`` of the whole page, made file by file (the keys before ``"files"``,
    each file, the keys after it), so that no call runs long and no whole copy of the
    text is made."""
    meta: dict[str, Any] = {k: v for k, v in page.meta_extra.items() if k not in _META_KEYS}
    meta["api-version"] = MIRROR_API_VERSION
    if page.last_serial is not None:
        meta["_last-serial"] = page.last_serial
    doc: dict[str, Any] = {k: v for k, v in page.extra.items() if k not in _TOP_KEYS}
    doc.update(
        {
            "meta": meta,
            "name": page.name,
            "versions": list(
                page.versions if page.versions is not None else derive_versions(page.files)
            ),
        }
    )
    status = {"status": page.project_status, "reason": page.project_status_reason}
    if any(v is not None for v in status.values()):
        doc["project-status"] = {k: v for k, v in status.items() if v is not None}
    for key, values in (("tracks", page.tracks), ("alternate-locations", page.alternate_locations)):
        if values:
            doc[key] = list(values)
    before = _dump({k: v for k, v in doc.items() if k < "files"})
    after = _dump({k: v for k, v in doc.items() if k > "files"})
    files = (("," if i else "") + _dump(_json_file_out(f)) for i, f in enumerate(page.files))
    return [
        (before[:-1] + ("," if before != "{}" else "") + '"files":[').encode("utf-8"),
        *_encoded(files),
        ("]" + ("," + after[1:] if after != "{}" else "}")).encode("utf-8"),
    ]
