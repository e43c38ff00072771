"""PEP 691 content negotiation against the Accept headers real clients send."""

from __future__ import annotations

import pytest

from mirror.core.negotiate import IndexFormat, MalformedAccept, choose_format

JSON = IndexFormat.JSON_V1
HTML = IndexFormat.HTML_V1
LEGACY = IndexFormat.HTML_LEGACY

# pip >= 22.2, src/pip/_internal/index/collector.py (_get_simple_response)
PIP = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01"  # noqa: E501
# uv, crates/uv-client (the PEP 691 recommended header)
UV = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01"  # noqa: E501
FIREFOX = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"
CHROME = (
    "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,"
    "image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7"
)


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (PIP, JSON),
        (UV, JSON),
        ("*/*", LEGACY),  # curl, old pip without an explicit preference
        (FIREFOX, LEGACY),
        (CHROME, LEGACY),
        ("application/vnd.pypi.simple.v1+json", JSON),  # JSON-only client
        ("text/html", LEGACY),  # pip < 22.2
        ("application/vnd.pypi.simple.v1+html", HTML),
    ],
)
def test_real_clients(accept: str, expected: IndexFormat) -> None:
    assert choose_format(accept, None) is expected


@pytest.mark.parametrize("accept", [None, "", "   ", ", ,"])
def test_no_preference_means_legacy_html(accept: str | None) -> None:
    assert choose_format(accept, None) is LEGACY


def test_json_only_client_gets_406_rather_than_html_when_json_is_refused() -> None:
    assert choose_format("application/json", None) is None
    assert choose_format("image/png, application/xml", None) is None


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ("application/vnd.pypi.simple.latest+json", JSON),
        ("application/vnd.pypi.simple.latest+html", HTML),
        ("application/vnd.pypi.simple.v1+json;q=0.5, text/html", LEGACY),  # q decides
        ("text/html;q=0.9, application/vnd.pypi.simple.v1+html", HTML),
        ("text/html, application/vnd.pypi.simple.v1+json", JSON),  # tie: server preference
        ("application/vnd.pypi.simple.v1+html, text/html", HTML),
        ("application/*", JSON),
        ("application/*;q=0.5, text/*", LEGACY),
        ("text/*", LEGACY),
        ("application/vnd.pypi.simple.v1+json, */*", JSON),  # explicit beats wildcard
        ("text/html, application/*", LEGACY),  # explicit beats type wildcard at equal q
        ("*/*, application/vnd.pypi.simple.v1+json;q=0", LEGACY),  # specific q=0 excludes
        ("*/*;q=0, text/html", LEGACY),
        ("*/*;q=0", None),
        ("application/*, application/vnd.pypi.simple.v1+json;q=0", HTML),
        ("text/html;q=0, application/vnd.pypi.simple.v1+html;q=0", None),
        ("application/vnd.pypi.simple.v2+json", None),
    ],
)
def test_q_values_and_specificity(accept: str, expected: IndexFormat | None) -> None:
    assert choose_format(accept, None) is expected


@pytest.mark.parametrize(
    "accept",
    [
        "  application/vnd.pypi.simple.v1+json ;  q=1.0 ,text/html;q=0.01",
        "APPLICATION/VND.PYPI.SIMPLE.V1+JSON",
        "application/vnd.pypi.simple.v1+json;charset=utf-8;q=1;foo=bar",
        "application/vnd.pypi.simple.v1+json;Q=0.9, text/html;q=0.5",
        "application/vnd.pypi.simple.v1+json;q=1.000",
        "application/vnd.pypi.simple.v1+json;flag, text/html;q=.5",
        "\tapplication/vnd.pypi.simple.v1+json\t",
    ],
)
def test_lenient_with_whitespace_case_and_extra_params(accept: str) -> None:
    assert choose_format(accept, None) is JSON


@pytest.mark.parametrize(
    ("accept", "fragment"),
    [
        ("text/html;q=abc", "q-value"),
        ("text/html;q=", "q-value"),
        ("text/html;q=1.5", "range"),
        ("text/html;q=-0.5", "q-value"),
        ("text/html;q=nan", "q-value"),
        ("texthtml", "type/subtype"),
        ("text/", "type/subtype"),
        ("/html", "type/subtype"),
        ("text html/x", "type/subtype"),
        ("*/json", "only"),
        ("text/html\x00", "control"),
        ("text/html\r\nX-Evil: 1", "control"),
        ("text/html, " * 1000, "longer"),
    ],
)
def test_malformed_accept_raises_with_a_reason(accept: str, fragment: str) -> None:
    with pytest.raises(MalformedAccept, match=fragment):
        choose_format(accept, None)


@pytest.mark.parametrize(
    ("param", "expected"),
    [
        ("application/vnd.pypi.simple.v1+json", JSON),
        ("application/vnd.pypi.simple.latest+json", JSON),
        ("application/vnd.pypi.simple.v1+html", HTML),
        ("application/vnd.pypi.simple.latest+html", HTML),
        ("text/html", LEGACY),
        (" Application/Vnd.PyPI.Simple.V1+JSON ", JSON),
        ("application/json", None),
        ("*/*", None),
        ("application/vnd.pypi.simple.v1+json;q=0.5", None),
        ("json", None),
    ],
)
def test_format_param_wins_over_accept(param: str, expected: IndexFormat | None) -> None:
    assert choose_format("text/html", param) is expected
    assert choose_format("text/html;q=abc", param) is expected  # Accept is not even parsed


def test_empty_format_param_is_ignored() -> None:
    assert choose_format(PIP, "") is JSON


def test_content_types() -> None:
    assert LEGACY.content_type == "text/html; charset=utf-8"
    assert HTML.content_type == "application/vnd.pypi.simple.v1+html"
    assert JSON.content_type == "application/vnd.pypi.simple.v1+json"
    # A "latest" request is answered with the concrete version's type (PEP 691).
    chosen = choose_format("application/vnd.pypi.simple.latest+json", None)
    assert chosen is not None
    assert chosen.content_type == "application/vnd.pypi.simple.v1+json"
