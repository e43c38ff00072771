"""Pull-through pages: formats, negotiation, redirects, freshness, stale-if-error, offline."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from tests.conftest import MirrorFactory, RunningMirror
from tests.fakepypi import FakePyPI, build_sdist, build_wheel

JSON = "application/vnd.pypi.simple.v1+json"
HTML_V1 = "application/vnd.pypi.simple.v1+html"
PIP_ACCEPT = f"{JSON}, {HTML_V1}; q=0.1, text/html; q=0.01"
UV_ACCEPT = f"{JSON}, {HTML_V1};q=0.2, text/html;q=0.01"


def publish_demo(tmp_path: Path, upstream: FakePyPI) -> None:
    upstream.add_file("demo", build_wheel(tmp_path, "demo", "1.0", requires_python=">=3.8"))
    upstream.add_file("demo", build_sdist(tmp_path, "demo", "1.0"))
    upstream.add_file("demo", build_wheel(tmp_path, "demo", "2.0"), yanked="broken build")


async def get_json_page(mirror: RunningMirror, project: str) -> dict[str, object]:
    status, headers, body = await mirror.get(f"/simple/{project}/", headers={"Accept": JSON})
    assert status == 200, body
    assert headers["Content-Type"] == JSON
    page: dict[str, object] = json.loads(body)
    return page


async def test_json_page_keeps_every_upstream_field_and_points_at_the_mirror(
    tmp_path: Path, upstream: FakePyPI, mirror: RunningMirror
) -> None:
    publish_demo(tmp_path, upstream)
    page = await get_json_page(mirror, "demo")
    meta = page["meta"]
    assert isinstance(meta, dict)
    assert meta["api-version"].startswith("1.")
    assert meta["_last-serial"] == upstream.project("demo").last_serial
    assert page["name"] == "demo"
    assert page["versions"] == ["1.0", "2.0"]
    files = {f["filename"]: f for f in page["files"]}  # type: ignore[union-attr]
    wheel = files["demo-1.0-py3-none-any.whl"]
    record = upstream.file("demo", "demo-1.0-py3-none-any.whl")
    assert wheel["hashes"] == {"sha256": record.sha256}
    assert wheel["requires-python"] == ">=3.8"
    assert wheel["size"] == record.size
    assert wheel["upload-time"]
    assert wheel["core-metadata"] == {"sha256": record.metadata_sha256}
    assert "dist-info-metadata" not in wheel
    assert wheel["url"].startswith("../../packages/") and record.url_path.endswith(
        wheel["url"].removeprefix("../..")
    )
    assert files["demo-2.0-py3-none-any.whl"]["yanked"] == "broken build"
    assert files["demo-1.0.tar.gz"]["yanked"] is False


async def test_html_page_has_hash_fragments_and_data_attributes(
    tmp_path: Path, upstream: FakePyPI, mirror: RunningMirror
) -> None:
    publish_demo(tmp_path, upstream)
    status, headers, body = await mirror.get("/simple/demo/", headers={"Accept": "text/html"})
    assert status == 200
    assert headers["Content-Type"].startswith("text/html")
    html = body.decode()
    record = upstream.file("demo", "demo-1.0-py3-none-any.whl")
    assert f"#sha256={record.sha256}" in html
    assert 'data-requires-python="&gt;=3.8"' in html
    assert 'data-yanked="broken build"' in html
    assert f'data-core-metadata="sha256={record.metadata_sha256}"' in html
    assert f'data-dist-info-metadata="sha256={record.metadata_sha256}"' in html


async def test_negotiation_follows_accept_q_values_and_format_parameter(
    tmp_path: Path, upstream: FakePyPI, mirror: RunningMirror
) -> None:
    publish_demo(tmp_path, upstream)
    cases = {
        PIP_ACCEPT: JSON,
        UV_ACCEPT: JSON,
        "*/*": "text/html",
        "text/html": "text/html",
        HTML_V1: HTML_V1,
        f"{JSON};q=0.1, {HTML_V1};q=0.9": HTML_V1,
        "application/vnd.pypi.simple.latest+json": JSON,
    }
    for accept, expected in cases.items():
        status, headers, _ = await mirror.get("/simple/demo/", headers={"Accept": accept})
        assert status == 200, accept
        assert headers["Content-Type"].split(";")[0] == expected, accept
        assert "Accept" in headers["Vary"]
    status, headers, _ = await mirror.get(
        f"/simple/demo/?format={JSON}", headers={"Accept": "text/html"}
    )
    assert headers["Content-Type"] == JSON
    status, _, _ = await mirror.get("/simple/demo/", headers={"Accept": "image/png"})
    assert status == 406
    status, _, _ = await mirror.get("/simple/demo/?format=image/png")
    assert status == 406


async def test_malformed_accept_is_a_client_error(
    tmp_path: Path, upstream: FakePyPI, mirror: RunningMirror
) -> None:
    publish_demo(tmp_path, upstream)
    for accept in ("text/html;q=abc", "nonsense", "text/html;q=7", "x" * 10000):
        status, _, body = await mirror.get("/simple/demo/", headers={"Accept": accept})
        assert 400 <= status < 500, (accept[:40], status, body)


async def test_redirects_to_normalised_name_and_trailing_slash(
    tmp_path: Path, upstream: FakePyPI, mirror: RunningMirror
) -> None:
    publish_demo(tmp_path, upstream)
    for path, location in [
        ("/simple/Demo/", "/simple/demo/"),
        ("/simple/DEMO", "/simple/demo/"),
        ("/simple/demo", "/simple/demo/"),
        ("/simple", "/simple/"),
        ("/simple/De_mo./?format=text/html", None),
    ]:
        status, headers, _ = await mirror.get(path)
        if location is None:
            assert status in (301, 404)
            continue
        assert status == 301, path
        assert headers["Location"] == location


async def test_unknown_project_is_404_and_cached_as_negative(
    upstream: FakePyPI, mirror: RunningMirror
) -> None:
    status, _, body = await mirror.get("/simple/nothing-here/")
    assert status == 404 and b"not found" in body
    upstream.reset_log()
    status, _, _ = await mirror.get("/simple/nothing-here/")
    assert status == 404
    assert upstream.count("/simple/nothing-here/") == 0


async def test_page_headers_and_gzip(
    tmp_path: Path, upstream: FakePyPI, mirror: RunningMirror
) -> None:
    for version in range(30):
        upstream.add_file("big", build_wheel(tmp_path, "big", f"1.{version}"))
    status, headers, body = await mirror.get("/simple/big/", headers={"Accept": JSON})
    assert status == 200
    assert headers["Cache-Control"] == "max-age=600, public"
    assert int(headers["Content-Length"]) == len(body)
    assert headers["ETag"].startswith('"')
    assert headers["X-PyPI-Last-Serial"] == str(upstream.project("big").last_serial)
    status, zipped_headers, zipped = await mirror.get(
        "/simple/big/", headers={"Accept": JSON, "Accept-Encoding": "gzip"}
    )
    assert zipped_headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(zipped) == body
    status, _, _ = await mirror.get(
        "/simple/big/", headers={"Accept": JSON, "If-None-Match": headers["ETag"]}
    )
    assert status == 304


async def test_hostile_links_are_dropped_and_never_fetched(
    tmp_path: Path, upstream: FakePyPI, mirror: RunningMirror
) -> None:
    publish_demo(tmp_path, upstream)
    upstream.extra_links = ["http://evil.example/packages/evil-1.0.tar.gz", "file:///etc/passwd"]
    page = await get_json_page(mirror, "demo")
    urls = [f["url"] for f in page["files"]]  # type: ignore[union-attr]
    assert all(u.startswith("../../packages/") for u in urls)
    assert not any("evil" in u or "passwd" in u for u in urls)


async def test_fresh_page_is_served_without_asking_upstream(
    tmp_path: Path, upstream: FakePyPI, mirror: RunningMirror
) -> None:
    publish_demo(tmp_path, upstream)
    await get_json_page(mirror, "demo")
    upstream.reset_log()
    for _ in range(5):
        await get_json_page(mirror, "demo")
    assert upstream.count("/simple/demo/") == 0


async def test_expired_page_is_revalidated_with_etag(
    tmp_path: Path, upstream: FakePyPI, make_mirror: MirrorFactory
) -> None:
    publish_demo(tmp_path, upstream)
    mirror = await make_mirror({"serve": {"index-ttl": 0}})
    await get_json_page(mirror, "demo")
    upstream.reset_log()
    await get_json_page(mirror, "demo")
    assert upstream.count("/simple/demo/") == 1
    upstream.add_file("demo", build_wheel(tmp_path, "demo", "3.0"))
    page = await get_json_page(mirror, "demo")
    assert "3.0" in page["versions"]  # type: ignore[operator]


async def test_stale_page_is_served_when_upstream_fails(
    tmp_path: Path, upstream: FakePyPI, make_mirror: MirrorFactory
) -> None:
    publish_demo(tmp_path, upstream)
    mirror = await make_mirror({"serve": {"index-ttl": 0}, "upstream": {"retries": 0}})
    before = await get_json_page(mirror, "demo")
    upstream.outage = 503
    assert await get_json_page(mirror, "demo") == before
    await upstream.stop()
    assert await get_json_page(mirror, "demo") == before
    status, _, body = await mirror.get("/simple/never-fetched/")
    assert status == 502
    assert body.count(b"\n") == 1


async def test_upstream_timeout_on_uncached_page_is_504(
    tmp_path: Path, upstream: FakePyPI, make_mirror: MirrorFactory
) -> None:
    publish_demo(tmp_path, upstream)
    mirror = await make_mirror({"upstream": {"retries": 0, "timeout": 0.3}})
    upstream.delay = 2.0
    status, _, body = await mirror.get("/simple/demo/")
    assert status == 504, body


async def test_root_lists_upstream_projects(
    tmp_path: Path, upstream: FakePyPI, mirror: RunningMirror
) -> None:
    publish_demo(tmp_path, upstream)
    upstream.add_file("Other.Project", build_wheel(tmp_path, "Other.Project", "1.0"))
    status, headers, body = await mirror.get("/simple/", headers={"Accept": JSON})
    assert status == 200 and headers["Content-Type"] == JSON
    root = json.loads(body)
    names = {p["name"]: p for p in root["projects"]}
    assert set(names) == {"demo", "other-project"}
    assert names["demo"]["_last-serial"] == upstream.project("demo").last_serial
    status, headers, body = await mirror.get("/simple/", headers={"Accept": "text/html"})
    assert b'href="demo/"' in body or b'href="/simple/demo/"' in body


async def test_offline_mode_lists_only_files_held_locally(
    tmp_path: Path, upstream: FakePyPI, make_mirror: MirrorFactory
) -> None:
    publish_demo(tmp_path, upstream)
    online = await make_mirror()
    page = await get_json_page(online, "demo")
    wheel = next(f for f in page["files"] if f["filename"] == "demo-1.0-py3-none-any.whl")  # type: ignore[union-attr]
    status, _, _ = await online.get("/simple/demo/" + wheel["url"])
    assert status == 200
    await online.stop()
    await upstream.stop()
    offline = await make_mirror({"serve": {"offline": True}})
    page = await get_json_page(offline, "demo")
    assert [f["filename"] for f in page["files"]] == ["demo-1.0-py3-none-any.whl"]  # type: ignore[union-attr]
    assert page["versions"] == ["1.0"]
    status, _, _ = await offline.get("/simple/unknown/")
    assert status == 404
