"""Parsing upstream project pages (PEP 691 JSON, PEP 503 HTML) and rendering the mirror's."""

from __future__ import annotations

import json
import random
import time
from dataclasses import replace
from typing import Any

import pytest

from mirror.core.index import (
    PageParseError,
    derive_versions,
    parse_project_html,
    parse_project_json,
    render_project_html,
    render_project_json,
)
from mirror.core.model import MIRROR_API_VERSION, DistFile, ProjectPage

SHA_A = "a" * 64
SHA_B = "b" * 64
PAGE_URL = "https://index.example/simple/foo-bar/"


def _json_bytes(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def _pypi_json_page() -> dict[str, Any]:
    return {
        "meta": {"api-version": "1.4", "_last-serial": 4242, "_private": {"x": 1}},
        "name": "Foo.Bar",
        "versions": ["1.0", "2.0"],
        "project-status": {"status": "deprecated", "reason": "use baz"},
        "tracks": ["https://other.example/simple/foo-bar/"],
        "alternate-locations": ["https://alt.example/simple/foo-bar/"],
        "_top_private": [1, 2],
        "files": [
            {
                "filename": "foo_bar-1.0-py3-none-any.whl",
                "url": "https://files.example/packages/aa/bb/cc/foo_bar-1.0-py3-none-any.whl",
                "hashes": {"sha256": SHA_A.upper(), "blake2b_256": "cd" * 32},
                "requires-python": ">=3.8",
                "yanked": "broken build",
                "core-metadata": {"sha256": SHA_B},
                "dist-info-metadata": {"sha256": SHA_B},
                "size": 1234,
                "upload-time": "2024-01-02T03:04:05.123456Z",
                "provenance": "https://files.example/integrity/foo-bar/1.0/x/provenance",
                "gpg-sig": False,
                "x-future-field": {"nested": [1, "two"]},
            },
            {
                "filename": "foo_bar-2.0.tar.gz",
                "url": "https://files.example/packages/dd/ee/ff/foo_bar-2.0.tar.gz",
                "hashes": {"sha256": SHA_B},
                "dist-info-metadata": True,
            },
        ],
    }


# ----------------------------------------------------------------------------- JSON in


def test_parse_json_keeps_every_field() -> None:
    page = parse_project_json(_json_bytes(_pypi_json_page()))
    assert page.name == "foo-bar"
    assert page.api_version == "1.4"
    assert page.last_serial == 4242
    assert page.meta_extra == {"_private": {"x": 1}}
    assert page.versions == ("1.0", "2.0")
    assert (page.project_status, page.project_status_reason) == ("deprecated", "use baz")
    assert page.tracks == ("https://other.example/simple/foo-bar/",)
    assert page.alternate_locations == ("https://alt.example/simple/foo-bar/",)
    assert page.extra == {"_top_private": [1, 2]}
    whl, sdist = page.files
    assert whl.filename == "foo_bar-1.0-py3-none-any.whl"
    assert whl.hashes == {"sha256": SHA_A, "blake2b_256": "cd" * 32}  # lower-cased
    assert whl.sha256 == SHA_A
    assert whl.requires_python == ">=3.8"
    assert whl.yanked == "broken build"
    assert whl.is_yanked
    assert whl.core_metadata == {"sha256": SHA_B}
    assert whl.size == 1234
    assert whl.upload_time == "2024-01-02T03:04:05.123456Z"
    assert whl.provenance is not None
    assert whl.gpg_sig is False
    assert whl.extra == {"x-future-field": {"nested": [1, "two"]}}
    # PEP 714: the old key is accepted as input when core-metadata is absent.
    assert sdist.core_metadata is True
    assert sdist.yanked is False
    assert sdist.requires_python is None
    assert sdist.extra == {}


def test_parse_json_minimal_pep_691_page() -> None:
    page = parse_project_json(b'{"meta":{"api-version":"1.0"},"name":"x","files":[]}')
    assert page == ProjectPage(name="x", api_version="1.0")


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("yanked", "", False),  # a falsy value means "not yanked"
        ("yanked", None, False),
        ("yanked", True, True),
        ("core-metadata", {}, False),
        ("core-metadata", None, False),
        ("requires-python", "", None),
        ("provenance", None, None),
    ],
)
def test_parse_json_falsy_values(field: str, value: object, expected: object) -> None:
    doc = {"meta": {"api-version": "1.1"}, "name": "x", "files": [_file(**{field: value})]}
    attr = {"core-metadata": "core_metadata", "requires-python": "requires_python"}
    assert (
        getattr(parse_project_json(_json_bytes(doc)).files[0], attr.get(field, field)) == expected
    )


def test_parse_json_null_hashes_mean_none_known() -> None:
    page = parse_project_json(_json_bytes(_doc(files=[_file(hashes=None)])))
    assert page.files[0].hashes == {}


def test_parse_json_accepts_bandersnatch_string_serial_and_pep_792_state_alias() -> None:
    doc = {
        "meta": {"api-version": "1.1", "_last-serial": "17"},
        "name": "x",
        "files": [],
        "project-status": {"state": "archived"},
    }
    page = parse_project_json(_json_bytes(doc))
    assert page.last_serial == 17
    assert page.project_status == "archived"


def _file(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "filename": "x-1.0.tar.gz",
        "url": "https://files.example/x-1.0.tar.gz",
        "hashes": {"sha256": SHA_A},
    }
    base.update(overrides)
    return base


def _doc(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {"meta": {"api-version": "1.1"}, "name": "x", "files": [_file()]}
    base.update(overrides)
    return base


@pytest.mark.parametrize(
    "doc",
    [
        [],
        "page",
        _doc(name=5),
        _doc(name="../etc"),
        _doc(name="x" * 201),
        {"meta": {"api-version": "1.1"}, "files": []},
        _doc(files={"a": 1}),
        _doc(files=None),
        _doc(files=["x-1.0.tar.gz"]),
        _doc(files=[{"filename": "x-1.0.tar.gz"}]),
        _doc(files=[_file(filename=7)]),
        _doc(files=[_file(filename="../../etc/passwd")]),
        _doc(files=[_file(filename="x\x00.whl")]),
        _doc(files=[_file(filename=".hidden")]),
        _doc(files=[_file(url=None)]),
        _doc(files=[_file(url="")]),
        _doc(files=[_file(url="https://[::1/x-1.0.tar.gz")]),
        _doc(files=[_file(url="https://exa\uff03mple.com/x-1.0.tar.gz")]),
        _doc(files=[_file(hashes=["sha256", SHA_A])]),
        _doc(files=[_file(hashes={"sha256": 5})]),
        _doc(files=[_file(hashes={"sha256": "not-hex"})]),
        _doc(files=[_file(hashes={"../x": SHA_A})]),
        _doc(files=[_file(yanked=1)]),
        _doc(files=[_file(yanked=["r"])]),
        _doc(files=[_file(**{"core-metadata": "sha256=abc"})]),
        _doc(files=[_file(**{"core-metadata": {"sha256": None}})]),
        _doc(files=[_file(size="10")]),
        _doc(files=[_file(size=-1)]),
        _doc(files=[_file(size=True)]),
        _doc(files=[_file(size=1.5)]),
        _doc(files=[_file(**{"gpg-sig": "yes"})]),
        _doc(files=[_file(**{"requires-python": 3})]),
        _doc(files=[_file(**{"upload-time": 0})]),
        _doc(files=[_file(provenance={"url": "x"})]),
        _doc(versions="1.0"),
        _doc(versions=[1.0]),
        _doc(**{"project-status": "archived"}),
        _doc(**{"project-status": {"status": 1}}),
        _doc(tracks="https://x/"),
        _doc(**{"alternate-locations": [None]}),
        _doc(meta=["api-version", "1.1"]),
        _doc(meta={"api-version": 1.1}),
        _doc(meta={"api-version": "2.0"}),
        _doc(meta={"api-version": "one"}),
        _doc(meta={"api-version": "1.1", "_last-serial": -1}),
        _doc(meta={"api-version": "1.1", "_last-serial": True}),
        _doc(meta={"api-version": "1.1", "_last-serial": "12a"}),
    ],
)
def test_parse_json_rejects_wrong_types_with_page_parse_error(doc: object) -> None:
    with pytest.raises(PageParseError):
        parse_project_json(_json_bytes(doc))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"{",
        b'{"name": "x", "files": []',
        b"\xff\xfe{}",
        b'{"name": "caf\xe9", "files": []}',
        b'{"meta":{"api-version":"1.1"},"name":"x","files":[],"n":NaN}',
        b'{"meta":{"api-version":"1.1"},"name":"x","files":[],"n":Infinity}',
        b'{"meta":{"api-version":"1.1"},"name":"x","files":[],"n":' + b"9" * 5000 + b"}",
        b"[" * 100_000 + b"]" * 100_000,
        b'{"meta":{"api-version":"1.1"},"name":"x","files":[],"n":'
        + b"[" * 100_000
        + b"]" * 100_000
        + b"}",
    ],
)
def test_parse_json_hostile_bytes(data: bytes) -> None:
    with pytest.raises(PageParseError):
        parse_project_json(data)


def test_moderately_nested_extra_survives_parse_and_render() -> None:
    nested: Any = "leaf"
    for _ in range(200):
        nested = [nested]
    page = parse_project_json(_json_bytes(_doc(extra_key=nested)))
    assert json.loads(render_project_json(page))["extra_key"] == nested


def test_parse_json_error_message_says_where() -> None:
    with pytest.raises(PageParseError, match=r"files\[0\]\.size"):
        parse_project_json(_json_bytes(_doc(files=[_file(size="big")])))


# ----------------------------------------------------------------------------- HTML in

_PYPI_HTML = f"""<!DOCTYPE html>
<html>
  <head>
    <meta name="pypi:repository-version" content="1.4">
    <meta name="pypi:project-status" content="quarantined">
    <meta name="pypi:project-status-reason" content="the project is &quot;haunted&quot;">
    <meta name="pypi:tracks" content="https://up.example/simple/foo-bar/">
    <meta name="pypi:alternate-locations" content="https://a.example/simple/foo-bar/">
    <meta name="pypi:alternate-locations" content="https://b.example/simple/foo-bar/">
    <title>Links for foo-bar</title>
  </head>
  <body>
    <h1>Links for foo-bar</h1>
    <a href="../../packages/aa/bb/cc/foo_bar-1.0-py3-none-any.whl#sha256={SHA_A.upper()}"
       data-requires-python="&gt;=3.7,&lt;4" data-yanked="" data-dist-info-metadata="sha256={SHA_B}"
       data-core-metadata="sha256={SHA_B}" data-gpg-sig="false"
       data-provenance="https://index.example/integrity/foo-bar/1.0/x/provenance"
       >foo_bar-1.0-py3-none-any.whl</a><br />
    <a href="https://files.example/foo_bar-0.9.tar.gz#md5=0123456789abcdef0123456789abcdef"
       data-yanked="bad &amp; broken">  foo_bar-0.9.tar.gz  </a><br />
    <a href="/files/foo_bar-0.8.zip" data-yanked data-dist-info-metadata="true"></a>
    <a name="not-a-link">ignored</a>
    <a href="foo_bar-0.7.tar.gz#egg=foo_bar-0.7" data-core-metadata="false">foo_bar-0.7.tar.gz</a>
  </body>
</html>
<!--SERIAL 99-->
"""


def test_parse_html_pypi_page() -> None:
    page = parse_project_html(_PYPI_HTML.encode(), "Foo_Bar", PAGE_URL)
    assert page.name == "foo-bar"
    assert page.api_version == "1.4"
    assert page.last_serial == 99
    assert page.project_status == "quarantined"
    assert page.project_status_reason == 'the project is "haunted"'
    assert page.tracks == ("https://up.example/simple/foo-bar/",)
    assert page.alternate_locations == (
        "https://a.example/simple/foo-bar/",
        "https://b.example/simple/foo-bar/",
    )
    assert page.versions is None
    whl, tgz, zipf, egg = page.files
    assert whl == DistFile(
        filename="foo_bar-1.0-py3-none-any.whl",
        url="https://index.example/packages/aa/bb/cc/foo_bar-1.0-py3-none-any.whl",
        hashes={"sha256": SHA_A},
        requires_python=">=3.7,<4",
        yanked=True,
        core_metadata={"sha256": SHA_B},
        provenance="https://index.example/integrity/foo-bar/1.0/x/provenance",
        gpg_sig=False,
    )
    assert tgz.filename == "foo_bar-0.9.tar.gz"
    assert tgz.hashes == {"md5": "0123456789abcdef0123456789abcdef"}
    assert tgz.url == "https://files.example/foo_bar-0.9.tar.gz"
    assert tgz.yanked == "bad & broken"
    assert tgz.core_metadata is False
    # Empty anchor text: the filename is the URL's last path segment.
    assert zipf.filename == "foo_bar-0.8.zip"
    assert zipf.url == "https://index.example/files/foo_bar-0.8.zip"
    assert zipf.yanked is True
    assert zipf.core_metadata is True
    # A fragment that is not a hash stays in the URL.
    assert egg.url == "https://index.example/simple/foo-bar/foo_bar-0.7.tar.gz#egg=foo_bar-0.7"
    assert egg.hashes == {}
    assert egg.core_metadata is False


def test_parse_html_core_metadata_wins_over_the_alias() -> None:
    html = f'<a href="x-1.0.tar.gz" data-dist-info-metadata="true" data-core-metadata="sha256={SHA_A}">x-1.0.tar.gz</a>'  # noqa: E501
    page = parse_project_html(html.encode(), "x", PAGE_URL)
    assert page.files[0].core_metadata == {"sha256": SHA_A}


def test_parse_html_respects_base_href_and_url_escapes() -> None:
    html = (
        '<html><head><base href="https://cdn.example/pkgs/"></head><body>'
        '<a href="sub/x-1.0.tar.gz?a=1&amp;b=2">x-1.0.tar.gz</a>'
        '<a href="na%C3%AFve-1.0.tar.gz"></a></body></html>'
    )
    page = parse_project_html(html.encode(), "x", PAGE_URL)
    assert page.files[0].url == "https://cdn.example/pkgs/sub/x-1.0.tar.gz?a=1&b=2"
    assert page.files[1].filename == "naïve-1.0.tar.gz"


def test_parse_html_without_version_meta_is_1_0() -> None:
    page = parse_project_html(b"<html><body></body></html>", "x", PAGE_URL)
    assert page.api_version == "1.0"
    assert page.files == ()


@pytest.mark.parametrize(
    ("data", "project"),
    [
        (b"<a href='x'>caf\xe9</a>", "x"),
        (b'<a href="../../../etc/passwd">../../../etc/passwd</a>', "x"),
        (b'<a href="/x/">.hidden</a>', "x"),
        (b'<meta name="pypi:repository-version" content="2.0">', "x"),
        (b'<meta name="pypi:repository-version" content="latest">', "x"),
        (b'<a href="http://[::1/x.whl">x.whl</a>', "x"),
        (b'<a href="http://[::1/x.whl"></a>', "x"),
        (b'<base href="http://[::1/"><a href="x.whl">x.whl</a>', "x"),
        (b"<html></html>", "not a name"),
        (b"<html></html>", ""),
    ],
)
def test_parse_html_hostile_input(data: bytes, project: str) -> None:
    with pytest.raises(PageParseError):
        parse_project_html(data, project, PAGE_URL)


def test_parse_html_tolerates_broken_markup() -> None:
    html = b'<a href="x-1.0.tar.gz">x-1.0.tar.gz<a href="x-2.0.tar.gz">x-2.0.tar.gz'
    page = parse_project_html(html, "x", PAGE_URL)
    assert [f.filename for f in page.files] == ["x-1.0.tar.gz", "x-2.0.tar.gz"]


# ----------------------------------------------------------------------------- HTML out


def test_render_html_shape_and_escaping() -> None:
    page = ProjectPage(
        name="foo-bar",
        last_serial=7,
        project_status="archived",
        project_status_reason='"quoted" <reason>',
        files=(
            DistFile(
                filename="foo&bar-1.0.tar.gz",
                url="https://files.example/a?x=1&y=2",
                hashes={"md5": "00" * 16, "sha512": "11" * 64, "sha256": SHA_A},
                requires_python="<4,>=3.8",
                yanked='say "no"',
                core_metadata=True,
                gpg_sig=True,
                provenance="https://p.example/x?a&b",
            ),
            DistFile(
                filename="foo-2.0.tar.gz",
                url="https://files.example/foo-2.0.tar.gz#sha256=" + SHA_B,
                hashes={"sha256": SHA_A},
            ),
            DistFile(
                filename="foo-3.0.tar.gz",
                url="https://files.example/foo-3.0.tar.gz",
                hashes={"sha512": "22" * 64, "md5": "33" * 16},
                yanked=True,
                core_metadata={"sha384": "44" * 48},
            ),
            DistFile(filename="foo-4.0.tar.gz", url="https://files.example/foo-4.0.tar.gz"),
        ),
    )
    text = render_project_html(page).decode()
    assert text.startswith("<!DOCTYPE html>\n")
    assert f'<meta name="pypi:repository-version" content="{MIRROR_API_VERSION}">' in text
    assert '<meta name="pypi:project-status" content="archived">' in text
    assert 'content="&quot;quoted&quot; &lt;reason&gt;"' in text
    assert "<title>Links for foo-bar</title>" in text
    assert "<h1>Links for foo-bar</h1>" in text
    assert text.rstrip().endswith("<!--SERIAL 7-->")
    lines = [line.strip() for line in text.splitlines() if line.strip().startswith("<a ")]
    assert lines[0] == (
        f'<a href="https://files.example/a?x=1&amp;y=2#sha256={SHA_A}"'
        ' data-requires-python="&lt;4,&gt;=3.8" data-yanked="say &quot;no&quot;"'
        ' data-dist-info-metadata="true" data-core-metadata="true" data-gpg-sig="true"'
        ' data-provenance="https://p.example/x?a&amp;b">foo&amp;bar-1.0.tar.gz</a><br />'
    )
    # A URL that already has a fragment is left alone.
    assert f'href="https://files.example/foo-2.0.tar.gz#sha256={SHA_B}"' in lines[1]
    assert "data-yanked" not in lines[1]
    assert "data-core-metadata" not in lines[1]
    # Without sha256 the next best hash is advertised.
    assert f'#sha512={"22" * 64}"' in lines[2]
    assert 'data-yanked=""' in lines[2]
    assert f'data-core-metadata="sha384={"44" * 48}"' in lines[2]
    assert f'data-dist-info-metadata="sha384={"44" * 48}"' in lines[2]
    assert lines[3] == '<a href="https://files.example/foo-4.0.tar.gz">foo-4.0.tar.gz</a><br />'


def test_render_is_deterministic_for_equal_pages() -> None:
    one = DistFile(
        filename="x-1.0.tar.gz",
        url="https://h/x-1.0.tar.gz",
        hashes={"sha256": SHA_A, "md5": "0" * 32},
        extra={"b": 1, "a": {"y": 1, "z": 2}},
    )
    two = replace(
        one, hashes={"md5": "0" * 32, "sha256": SHA_A}, extra={"a": {"z": 2, "y": 1}, "b": 1}
    )
    p1 = ProjectPage(name="x", files=(one,), meta_extra={"_a": 1, "_b": 2})
    p2 = ProjectPage(name="x", files=(two,), meta_extra={"_b": 2, "_a": 1})
    assert p1 == p2
    assert render_project_html(p1) == render_project_html(p2)
    assert render_project_json(p1) == render_project_json(p2)


# ----------------------------------------------------------------------------- JSON out


def test_render_json_fields() -> None:
    page = ProjectPage(
        name="x",
        api_version="1.0",
        files=(
            DistFile(
                filename="x-1.0.tar.gz",
                url="https://h/x-1.0.tar.gz",
                hashes={"sha256": SHA_A},
                core_metadata={"sha256": SHA_B},
                extra={"dist-info-metadata": True, "size": 99, "_private": "kept"},
            ),
        ),
        meta_extra={"api-version": "0.1", "_last-serial": 3, "_x": "y"},
    )
    doc = json.loads(render_project_json(page))
    assert doc["meta"] == {"api-version": MIRROR_API_VERSION, "_x": "y"}
    assert doc["name"] == "x"
    assert doc["versions"] == ["1.0"]
    assert "project-status" not in doc
    assert "tracks" not in doc
    assert "alternate-locations" not in doc
    (file,) = doc["files"]
    assert file == {
        "filename": "x-1.0.tar.gz",
        "url": "https://h/x-1.0.tar.gz",
        "hashes": {"sha256": SHA_A},
        "yanked": False,
        "core-metadata": {"sha256": SHA_B},
        "_private": "kept",
    }


def test_render_json_never_emits_dist_info_metadata() -> None:
    page = parse_project_json(_json_bytes(_pypi_json_page()))
    body = render_project_json(page)
    assert b"dist-info-metadata" not in body
    assert json.loads(body)["files"][1]["core-metadata"] is True


def test_render_json_is_compact_utf8() -> None:
    page = ProjectPage(name="x", project_status="archived", project_status_reason="naïve ✓")
    body = render_project_json(page)
    assert "naïve ✓".encode() in body
    assert b", " not in body
    assert b": " not in body
    assert json.loads(body)["project-status"] == {"status": "archived", "reason": "naïve ✓"}


def test_render_json_derives_sorted_versions_when_upstream_gave_none() -> None:
    names = [
        "x-1.0.tar.gz",
        "x-1.10-py3-none-any.whl",
        "x-1.9.zip",
        "x-1.0-py3-none-any.whl",
        "x-2.0rc1.tar.gz",
        "x-1.0.win32.exe",
        "x-1.0.tar.bz2",
    ]
    files = tuple(DistFile(filename=n, url=f"https://h/{n}") for n in names)
    assert derive_versions(files) == ("1.0", "1.9", "1.10", "2.0rc1")
    page = ProjectPage(name="x", files=files)
    assert json.loads(render_project_json(page))["versions"] == ["1.0", "1.9", "1.10", "2.0rc1"]
    # Upstream's own list is kept as given.
    page = replace(page, versions=("legacy-version", "1.0"))
    assert json.loads(render_project_json(page))["versions"] == ["legacy-version", "1.0"]


# ----------------------------------------------------------------------------- round trips

_TRICKY = ['say "hi"', "a<b>&c", "naïve ✓", "  spaced  ", "x'y", "tab\there"]


def _random_file(rng: random.Random, i: int) -> DistFile:
    stem = rng.choice(["foo", "foo_bar", "Foo.Bar", "a&b"])
    ext = rng.choice(["-py3-none-any.whl", ".tar.gz", ".zip", "-py2.7.egg"])
    filename = f"{stem}-{i}.{rng.randint(0, 20)}{ext}"
    url = f"https://files.example/packages/{i:02x}/{filename}" + rng.choice(["", "?a=1&b=2"])
    cores: list[bool | dict[str, str]] = [False, True, {"sha256": f"{i:064x}"}]
    yanks: list[bool | str] = [False, True, rng.choice(_TRICKY)]
    return DistFile(
        filename=filename,
        url=url,
        hashes=rng.choice([{}, {"sha256": f"{i + 1:064x}"}]),
        requires_python=rng.choice([None, ">=3.8", "<4,>=2.7", "!=3.0.*"]),
        yanked=rng.choice(yanks),
        core_metadata=rng.choice(cores),
        size=rng.choice([None, 0, rng.randint(1, 10**10)]),
        upload_time=rng.choice([None, "2024-01-02T03:04:05.123456Z"]),
        provenance=rng.choice([None, f"https://p.example/{i}/provenance?x&y"]),
        gpg_sig=rng.choice([None, True, False]),
        extra=rng.choice([{}, {"_private": rng.choice(_TRICKY)}, {"future": [1, {"k": None}]}]),
    )


def _random_page(seed: int) -> ProjectPage:
    rng = random.Random(seed)
    status = rng.choice([None, "active", "archived", "quarantined", "deprecated"])
    return ProjectPage(
        name=rng.choice(["foo", "foo-bar", "a1"]),
        files=tuple(_random_file(rng, i) for i in range(rng.randint(0, 8))),
        versions=rng.choice([None, (), ("1.0", "2.0")]),
        api_version=MIRROR_API_VERSION,
        last_serial=rng.choice([None, 0, rng.randint(1, 10**9)]),
        project_status=status,
        project_status_reason=rng.choice([None, rng.choice(_TRICKY)]),
        tracks=rng.choice([(), ("https://t.example/simple/foo/",)]),
        alternate_locations=rng.choice([(), ("https://a.example/x/", "https://b.example/x/")]),
        extra=rng.choice([{}, {"_top": {"a": [1, 2.5, "ü"]}}]),
        meta_extra=rng.choice([{}, {"_served-by": "mirror"}]),
    )


@pytest.mark.parametrize("seed", range(200))
def test_json_round_trip(seed: int) -> None:
    page = _random_page(seed)
    expected = replace(
        page, versions=page.versions if page.versions is not None else derive_versions(page.files)
    )
    assert parse_project_json(render_project_json(page)) == expected


@pytest.mark.parametrize("seed", range(200))
def test_html_round_trip_keeps_what_html_can_carry(seed: int) -> None:
    page = _random_page(seed)
    parsed = parse_project_html(render_project_html(page), page.name, "https://m.example/simple/x/")
    assert parsed.name == page.name
    assert parsed.api_version == MIRROR_API_VERSION
    assert parsed.last_serial == page.last_serial
    assert (parsed.project_status, parsed.project_status_reason) == (
        page.project_status,
        page.project_status_reason,
    )
    assert parsed.tracks == page.tracks
    assert parsed.alternate_locations == page.alternate_locations
    assert len(parsed.files) == len(page.files)
    for got, want in zip(parsed.files, page.files, strict=True):
        assert got.filename == want.filename
        assert got.url == want.url
        assert got.hashes == want.hashes
        assert got.requires_python == want.requires_python
        assert got.yanked == want.yanked
        assert got.core_metadata == want.core_metadata
        assert got.gpg_sig == want.gpg_sig
        assert got.provenance == want.provenance


def test_html_round_trip_keeps_only_the_advertised_hash() -> None:
    file = DistFile(
        filename="x-1.0.tar.gz",
        url="https://h/x-1.0.tar.gz",
        hashes={"md5": "0" * 32, "sha256": SHA_A},
    )
    page = ProjectPage(name="x", files=(file,))
    parsed = parse_project_html(render_project_html(page), "x", PAGE_URL)
    assert parsed.files[0].hashes == {"sha256": SHA_A}


# ----------------------------------------------------------------------------- big pages


def _big_json_page(target_bytes: int) -> bytes:
    files = []
    size = 0
    i = 0
    while size < target_bytes:
        name = f"bigproject-{i // 20}.{i % 20}-cp311-cp311-manylinux_2_17_x86_64.whl"
        entry = {
            "filename": name,
            "url": f"https://files.example/packages/{i % 256:02x}/{i % 255:02x}/{'ab' * 29}/{name}",
            "hashes": {"sha256": f"{i:064x}"},
            "requires-python": ">=3.8",
            "yanked": False,
            "core-metadata": {"sha256": f"{i + 1:064x}"},
            "size": 1000 + i,
            "upload-time": "2024-01-02T03:04:05.123456Z",
        }
        size += len(json.dumps(entry)) + 1
        files.append(entry)
        i += 1
    return _json_bytes(
        {"meta": {"api-version": "1.1", "_last-serial": 1}, "name": "bigproject", "files": files}
    )


def test_five_megabyte_page_parses_and_renders_quickly() -> None:
    data = _big_json_page(5 * 1024 * 1024)
    start = time.perf_counter()
    page = parse_project_json(data)
    html = render_project_html(page)
    body = render_project_json(page)
    reparsed = parse_project_html(html, "bigproject", PAGE_URL)
    elapsed = time.perf_counter() - start
    assert len(page.files) > 9_000
    assert len(reparsed.files) == len(page.files)
    assert json.loads(body)["versions"][-1] == page.files[-1].filename.split("-")[1]
    # "Well under a second" on a developer machine; the bound is loose for slow CI.
    assert elapsed < 5.0, f"parse+render of a 5 MB page took {elapsed:.2f}s"
