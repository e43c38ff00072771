"""The root project list: incremental parsing and rendering with bounded memory."""

from __future__ import annotations

import json
import tracemalloc
from collections.abc import Iterable, Iterator
from html.parser import HTMLParser

import pytest

from mirror.core.index import PageParseError
from mirror.core.model import MIRROR_API_VERSION, RootEntry
from mirror.core.rootlist import RootHtmlParser, RootJsonParser, RootRenderer

CHUNK = 64 * 1024


def _rechunk(pieces: Iterable[bytes], size: int) -> Iterator[bytes]:
    """Re-cut a byte stream into ``size``-byte chunks (splitting tokens and characters)."""
    pending: list[bytes] = []
    length = 0
    for piece in pieces:
        pending.append(piece)
        length += len(piece)
        if length >= size:
            buffer = b"".join(pending)
            cut = len(buffer) - len(buffer) % size
            for start in range(0, cut, size):
                yield buffer[start : start + size]
            pending, length = [buffer[cut:]], len(buffer) - cut
    if length:
        yield b"".join(pending)


def _json_root_pieces(count: int, serial: int = 123_456_789) -> Iterator[bytes]:
    yield b'{"projects": ['
    for start in range(0, count, 1000):  # batched: the generator must not dominate
        batch = range(start, min(start + 1000, count))
        sep = b"," if start else b""
        yield sep + b",".join(b'{"name": "Project_%d", "_last-serial": %d}' % (i, i) for i in batch)
    # meta after projects: keys may come in any order
    yield b'], "meta": {"_last-serial": %d, "api-version": "1.1"}}' % serial


def _html_root_pieces(count: int) -> Iterator[bytes]:
    yield (
        b'<!DOCTYPE html>\n<html>\n  <head>\n    <meta name="pypi:repository-version" '
        b'content="1.1">\n    <title>Simple index</title>\n  </head>\n  <body>\n'
    )
    for start in range(0, count, 1000):
        batch = range(start, min(start + 1000, count))
        yield b"".join(
            b'    <a href="/simple/project-%d/">Project_%d</a>\n' % (i, i) for i in batch
        )
    yield b"  </body>\n</html>\n<!--SERIAL 4242-->\n"


def _feed_all(parser: RootJsonParser | RootHtmlParser, chunks: Iterable[bytes]) -> list[RootEntry]:
    entries: list[RootEntry] = []
    for chunk in chunks:
        entries.extend(parser.feed(chunk))
    entries.extend(parser.close())
    return entries


# ----------------------------------------------------------------------------- JSON


def test_json_600k_projects_in_64k_chunks_with_bounded_memory() -> None:
    """PyPI-sized root (600,000 projects, ~28 MB): count, last entry, peak memory."""
    parser = RootJsonParser()
    count = 0
    last: RootEntry | None = None
    tracemalloc.start()
    try:
        for chunk in _rechunk(_json_root_pieces(600_000), CHUNK):
            for entry in parser.feed(chunk):
                count += 1
                last = entry
        for entry in parser.close():
            count += 1
            last = entry
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 600_000
    assert last == RootEntry(name="Project_599999", last_serial=599_999)
    assert parser.last_serial == 123_456_789
    assert parser.api_version == "1.1"
    assert peak < 20 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB"


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64])
def test_json_any_split_point_gives_the_same_entries(size: int) -> None:
    doc = (
        '{"meta": {"api-version": "1.0", "_last-serial": 9}, "projects": ['
        '{"name": "naïve-ü", "_last-serial": 1}, {"_last-serial": 2, "name": "日本語"},'
        ' {"name": "plain"}, {"name": "esc\\"aped"}, {"name": "u\\u00e9"}]}'
    ).encode()
    entries = _feed_all(RootJsonParser(), _rechunk([doc], size))
    # Non-ASCII names are not valid PEP 508 names; they are skipped, not fatal.
    assert entries == [RootEntry("plain")]


def test_json_skips_invalid_names_and_counts_them() -> None:
    doc = json.dumps(
        {
            "meta": {"api-version": "1.1"},
            "projects": [
                {"name": "ok", "_last-serial": 1},
                {"name": "../etc"},
                {"name": 5},
                {"nom": "x"},
                {"name": "x" * 300},
                {"name": "also-ok", "extra": {"name": "nested-ignored"}},
            ],
        }
    ).encode()
    parser = RootJsonParser()
    assert _feed_all(parser, [doc]) == [RootEntry("ok", 1), RootEntry("also-ok")]
    assert parser.skipped == 4


def test_json_ignores_unknown_keys_and_lookalike_dotted_keys() -> None:
    doc = json.dumps(
        {
            "projects.item": {"name": "fake"},
            "meta.api-version": "9.9",
            "meta": {"api-version": "1.0", "_future": [1, {"a": 2}]},
            "_private": {"projects": [{"name": "also-fake"}]},
            "projects": [{"name": "real", "_last-serial": "7"}],
        }
    ).encode()
    parser = RootJsonParser()
    assert _feed_all(parser, [doc]) == [RootEntry("real", 7)]
    assert parser.api_version == "1.0"
    assert parser.last_serial is None


def test_json_empty_projects_list() -> None:
    parser = RootJsonParser()
    assert _feed_all(parser, [b'{"meta": {"api-version": "1.0"}, "projects": []}']) == []


@pytest.mark.parametrize(
    "doc",
    [
        b"",
        b'{"meta": {"api-version": "1.0"}, "projects": [{"name": "a"}',
        b'{"meta": {"api-version": "1.0"}, "projects": [{"name": "a"}, {"na',
        b'{"meta": {"api-version": "1.0"}, "projects": [{"name": "a"}]',
        b'{"meta": {"api-version": "1.0"}}',
        b'[{"name": "a"}]',
        b'"projects"',
        b'{"projects": {"name": "a"}}',
        b'{"projects": ["a", "b"]}',
        b'{"projects": [{"name": "a"}]} trailing',
        b'{"projects": [{"name": "a", "_last-serial": -1}]}',
        b'{"projects": [{"name": "a", "_last-serial": true}]}',
        b'{"projects": [], "meta": {"_last-serial": 1.5}}',
        b'{"projects": [{"name": "caf\xe9"}]}',
        b'{"projects": [{"name": tru}]}',
    ],
)
def test_json_truncated_or_malformed_raises(doc: bytes) -> None:
    parser = RootJsonParser()
    with pytest.raises(PageParseError):
        for chunk in _rechunk([doc], 5):
            parser.feed(chunk)
        parser.close()


def test_json_feed_after_close_is_an_error() -> None:
    parser = RootJsonParser()
    parser.feed(b'{"projects": []}')
    parser.close()
    with pytest.raises(PageParseError):
        parser.feed(b"{}")


# ----------------------------------------------------------------------------- HTML


def test_html_many_projects_with_bounded_memory() -> None:
    parser = RootHtmlParser()
    count = 0
    last: RootEntry | None = None
    tracemalloc.start()
    try:
        for chunk in _rechunk(_html_root_pieces(50_000), CHUNK):
            for entry in parser.feed(chunk):
                count += 1
                last = entry
        for entry in parser.close():
            count += 1
            last = entry
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 50_000
    assert last == RootEntry(name="Project_49999")
    assert parser.api_version == "1.1"
    assert parser.last_serial == 4242
    assert peak < 20 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB"


@pytest.mark.parametrize("size", [1, 2, 3, 5, 64])
def test_html_any_split_point_gives_the_same_entries(size: int) -> None:
    doc = (
        "\ufeff<html><body>"
        '<a href="a/">Alpha</a><br/>'
        "<a href='b/'>\n  beta.pkg  \n</a>"
        '<a href="c/">caf&#233;</a>'  # valid markup, invalid project name: skipped
        '<a href="d/">d&amp;e</a>'
        '<a href="x/">ünïcode</a>'
        '<A HREF="z/">Zeta</A>'
        "</body></html>"
    ).encode()
    parser = RootHtmlParser()
    entries = _feed_all(parser, _rechunk([doc], size))
    assert entries == [RootEntry("Alpha"), RootEntry("beta.pkg"), RootEntry("Zeta")]
    assert parser.skipped == 3


@pytest.mark.parametrize(
    "doc",
    [
        b"",
        b'<html><body><a href="a/">a</a>',
        b'<html><body><a href="a/">a</a><a href="b/">b',
        b'<html><body><a href="a/">a</a><a hr',
        b'<html><body><a href="a/">a</a></body></html><!--SERIAL',
        b'<html><body><a href="a/">caf\xc3',
        b'<html><body><a href="a/">caf\xe9</a></body></html>',
    ],
)
def test_html_truncated_or_invalid_utf8_raises(doc: bytes) -> None:
    parser = RootHtmlParser()
    with pytest.raises(PageParseError):
        for chunk in _rechunk([doc], 3):
            parser.feed(chunk)
        parser.close()


def test_html_huge_anchor_text_is_not_buffered() -> None:
    parser = RootHtmlParser()
    parser.feed(b'<html><body><a href="x/">')
    for _ in range(100):
        parser.feed(b"x" * CHUNK)
    entries = parser.feed(b"</a></body></html>") + parser.close()
    assert entries == []
    assert parser.skipped == 1


# ----------------------------------------------------------------------------- rendering

_ENTRIES = [
    RootEntry("Django", 10),
    RootEntry("zope.interface", None),
    RootEntry("Foo_Bar", 3),
]


def _render_html(entries: list[RootEntry], serial: int | None) -> str:
    r = RootRenderer()
    return (
        r.html_head() + b"".join(r.html_entry(e) for e in entries) + r.html_tail(serial)
    ).decode()


def _render_json(entries: list[RootEntry], serial: int | None) -> bytes:
    r = RootRenderer()
    body = [r.json_head(serial)]
    body += [r.json_entry(e, first=i == 0) for i, e in enumerate(entries)]
    body.append(r.json_tail())
    return b"".join(body)


def test_rendered_html_is_bandersnatch_style_and_parses_back() -> None:
    text = _render_html(_ENTRIES, 42)
    assert text.startswith("<!DOCTYPE html>\n")
    assert f'<meta name="pypi:repository-version" content="{MIRROR_API_VERSION}">' in text
    assert '    <a href="django/">Django</a><br/>\n' in text
    assert '    <a href="zope-interface/">zope.interface</a><br/>\n' in text
    assert '    <a href="foo-bar/">Foo_Bar</a><br/>\n' in text
    assert text.rstrip().endswith("<!--SERIAL 42-->")

    parser = RootHtmlParser()
    assert _feed_all(parser, [text.encode()]) == [RootEntry(e.name) for e in _ENTRIES]
    assert parser.last_serial == 42


def test_rendered_html_is_well_formed() -> None:
    class Checker(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.open: list[str] = []

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            if tag not in ("meta", "br"):
                self.open.append(tag)

        def handle_endtag(self, tag: str) -> None:
            if tag not in ("meta", "br"):
                assert self.open.pop() == tag

    checker = Checker()
    checker.feed(_render_html(_ENTRIES, None))
    checker.close()
    assert checker.open == []


@pytest.mark.parametrize("serial", [None, 77])
def test_rendered_json_is_valid_and_parses_back(serial: int | None) -> None:
    body = _render_json(_ENTRIES, serial)
    doc = json.loads(body)
    meta = {"api-version": MIRROR_API_VERSION}
    if serial is not None:
        meta["_last-serial"] = serial  # type: ignore[assignment]
    assert doc["meta"] == meta
    assert doc["projects"] == [
        {"name": "Django", "_last-serial": 10},
        {"name": "zope.interface"},
        {"name": "Foo_Bar", "_last-serial": 3},
    ]
    parser = RootJsonParser()
    assert _feed_all(parser, _rechunk([body], 4)) == _ENTRIES
    assert parser.last_serial == serial
    assert parser.api_version == MIRROR_API_VERSION


def test_rendered_empty_lists_are_valid() -> None:
    assert json.loads(_render_json([], None)) == {
        "meta": {"api-version": MIRROR_API_VERSION},
        "projects": [],
    }
    assert _feed_all(RootHtmlParser(), [_render_html([], None).encode()]) == []
