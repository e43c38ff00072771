"""Tests of the fake upstream itself (tests/fakepypi): if these fail, nothing built on the
fake can be trusted."""

from __future__ import annotations

import asyncio
import base64
import csv
import hashlib
import io
import json
import os
import shutil
import sys
import tarfile
import time
import xmlrpc.client
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.fakepypi import (
    FakePyPI,
    build_sdist,
    build_wheel,
    negotiate,
    running_upstream,
    wheel_metadata,
)

JSON = "application/vnd.pypi.simple.v1+json"
PIP_ACCEPT = f"{JSON}, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01"


@pytest.fixture
async def fake() -> AsyncIterator[FakePyPI]:
    async with running_upstream() as pypi:
        yield pypi


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture
def demo(fake: FakePyPI, tmp_path: Path) -> FakePyPI:
    """``Demo.Pkg`` with 1.0 (wheel + sdist) and 2.0 (wheel) registered."""
    fake.add_file(
        "Demo.Pkg",
        build_wheel(tmp_path, "Demo.Pkg", "1.0", requires_dist=["attrs>=20"], pad_bytes=5000),
    )
    fake.add_file("Demo.Pkg", build_sdist(tmp_path, "Demo.Pkg", "1.0"))
    fake.add_file("demo-pkg", build_wheel(tmp_path, "Demo.Pkg", "2.0", requires_python=">=3.9"))
    return fake


async def get_json(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url, headers={"Accept": JSON}) as resp:
        assert resp.status == 200, await resp.text()
        return json.loads(await resp.read())


async def rpc(session: aiohttp.ClientSession, fake: FakePyPI, method: str, *params: Any) -> Any:
    body = xmlrpc.client.dumps(params, method, allow_none=True)
    async with session.post(fake.url + "pypi", data=body.encode()) as resp:
        assert resp.status == 200
        (result,), _ = xmlrpc.client.loads(await resp.read(), use_builtin_types=True)
        return result


def files_by_name(page: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["filename"]: f for f in page["files"]}


# -- builders ------------------------------------------------------------------------------


def test_wheel_is_well_formed_with_a_correct_record(tmp_path: Path) -> None:
    """The wheel has the spec filename, METADATA fields and a RECORD whose hashes and
    sizes match every member."""
    path = build_wheel(
        tmp_path,
        "Foo.Bar",
        "1.0",
        requires_dist=["attrs>=20", "idna"],
        requires_python=">=3.8",
        extra_files={"foo_bar/data.txt": b"hello"},
        pad_bytes=10_000,
    )
    assert path.name == "foo_bar-1.0-py3-none-any.whl"
    assert path.stat().st_size > 10_000  # padding is stored, not compressed away
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        assert {"foo_bar/__init__.py", "foo_bar/data.txt"} <= names
        assert b'__version__ = "1.0"' in zf.read("foo_bar/__init__.py")
        record = list(csv.reader(io.StringIO(zf.read("foo_bar-1.0.dist-info/RECORD").decode())))
        assert {row[0] for row in record} == names
        for name, digest, size in record:
            if name.endswith("RECORD"):
                assert digest == size == ""
                continue
            data = zf.read(name)
            expected = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            assert digest == "sha256=" + expected.decode()
            assert int(size) == len(data)
        assert b"Tag: py3-none-any" in zf.read("foo_bar-1.0.dist-info/WHEEL")
    metadata = wheel_metadata(path).decode()
    for line in (
        "Metadata-Version: 2.1",
        "Name: Foo.Bar",
        "Version: 1.0",
        "Requires-Python: >=3.8",
        "Requires-Dist: attrs>=20",
        "Requires-Dist: idna",
    ):
        assert line in metadata.splitlines()


def test_builders_are_deterministic(tmp_path: Path) -> None:
    """The same arguments give byte-identical wheels and sdists (stable digests)."""
    a = build_wheel(tmp_path / "a", "demo", "1.0", pad_bytes=100).read_bytes()
    b = build_wheel(tmp_path / "b", "demo", "1.0", pad_bytes=100).read_bytes()
    assert a == b
    c = build_sdist(tmp_path / "a", "demo", "1.0").read_bytes()
    d = build_sdist(tmp_path / "b", "demo", "1.0").read_bytes()
    assert c == d


def test_wheel_tags_and_sdist_layout(tmp_path: Path) -> None:
    """Tags go into the filename; the sdist has PKG-INFO and pyproject.toml at its root."""
    wheel = build_wheel(
        tmp_path, "demo", "1.0", python_tag="cp311", abi_tag="cp311", platform_tag="linux_x86_64"
    )
    assert wheel.name == "demo-1.0-cp311-cp311-linux_x86_64.whl"
    sdist = build_sdist(tmp_path, "Foo.Bar", "2.0", requires_python=">=3.9")
    assert sdist.name == "foo_bar-2.0.tar.gz"
    with tarfile.open(sdist) as tar:
        names = set(tar.getnames())
        pkg_info = tar.extractfile("foo_bar-2.0/PKG-INFO")
        assert pkg_info is not None
        assert b"Requires-Python: >=3.9" in pkg_info.read()
    assert {"foo_bar-2.0/PKG-INFO", "foo_bar-2.0/pyproject.toml"} <= names


def test_negotiation() -> None:
    """pip's Accept gets JSON; */* and no Accept get text/html; nothing acceptable → None."""
    assert negotiate(PIP_ACCEPT) == JSON
    assert negotiate(None) == "text/html"
    assert negotiate("*/*") == "text/html"
    assert negotiate(f"{JSON}, */*") == JSON
    assert negotiate(f"{JSON};q=0, text/html") == "text/html"
    assert negotiate("application/vnd.pypi.simple.v1+html") == "application/vnd.pypi.simple.v1+html"
    assert negotiate("application/xml") is None
    assert negotiate("text/html", format_param=JSON) == JSON


# -- simple API ----------------------------------------------------------------------------


async def test_root_index_json_and_html(demo: FakePyPI, session: aiohttp.ClientSession) -> None:
    """/simple/ lists projects with serials in JSON, and links in HTML."""
    async with session.get(demo.url + "simple/", headers={"Accept": JSON}) as resp:
        assert resp.headers["Content-Type"] == JSON
        assert resp.headers["X-PyPI-Last-Serial"] == str(demo.serial)
        root = json.loads(await resp.read())
    assert root["meta"] == {"api-version": "1.4", "_last-serial": demo.serial}
    assert root["projects"] == [{"name": "Demo.Pkg", "_last-serial": demo.serial}]
    async with session.get(demo.url + "simple/") as resp:
        assert resp.headers["Content-Type"] == "text/html; charset=utf-8"
        assert '<a href="/simple/demo-pkg/">Demo.Pkg</a>' in await resp.text()


async def test_project_page_json(demo: FakePyPI, session: aiohttp.ClientSession) -> None:
    """PEP 691 + 700 + 658/714 + 792 fields, as PyPI emits them."""
    async with session.get(demo.url + "simple/demo-pkg/", headers={"Accept": PIP_ACCEPT}) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == JSON
        assert resp.headers["Cache-Control"] == "max-age=600, public"
        project = demo.project("demo-pkg")
        assert resp.headers["X-PyPI-Last-Serial"] == str(project.last_serial)
        page = json.loads(await resp.read())
    assert page["meta"]["api-version"] == "1.4"
    assert page["name"] == "demo-pkg"
    assert page["versions"] == ["1.0", "2.0"]
    assert page["project-status"] == {"status": "active"}
    files = files_by_name(page)
    assert list(files) == [
        "demo_pkg-1.0-py3-none-any.whl",
        "demo_pkg-1.0.tar.gz",
        "demo_pkg-2.0-py3-none-any.whl",
    ]
    record = demo.file("demo-pkg", "demo_pkg-2.0-py3-none-any.whl")
    entry = files["demo_pkg-2.0-py3-none-any.whl"]
    b2 = record.blake2b_256
    assert entry["url"] == f"{demo.url}packages/{b2[:2]}/{b2[2:4]}/{b2[4:]}/{record.filename}"
    assert entry["hashes"] == {"sha256": record.sha256}
    assert entry["size"] == record.source.stat().st_size
    assert entry["requires-python"] == ">=3.9"
    assert entry["yanked"] is False
    assert entry["upload-time"].endswith("Z")
    assert entry["core-metadata"] == {
        "sha256": hashlib.sha256(record.core_metadata or b"").hexdigest()
    }
    assert "dist-info-metadata" not in entry and "data-dist-info-metadata" not in entry
    assert files["demo_pkg-1.0.tar.gz"]["core-metadata"] is False


async def test_project_page_html(
    demo: FakePyPI, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """PEP 503 anchors with the sha256 fragment and data-* attributes."""
    wheel = build_wheel(tmp_path, "Demo.Pkg", "3.0", requires_python="<4,>=3.8")
    demo.add_file("Demo.Pkg", wheel, yanked="broken build")
    async with session.get(demo.url + "simple/demo-pkg/", headers={"Accept": "text/html"}) as resp:
        assert resp.headers["Content-Type"] == "text/html; charset=utf-8"
        text = await resp.text()
    record = demo.file("demo-pkg", wheel.name)
    sha = record.metadata_sha256
    assert f'href="{record.url}#sha256={record.sha256}"' in text
    assert 'data-requires-python="&lt;4,&gt;=3.8"' in text
    assert 'data-yanked="broken build"' in text
    assert f'data-core-metadata="sha256={sha}"' in text
    assert f'data-dist-info-metadata="sha256={sha}"' in text
    assert '<meta name="pypi:repository-version" content="1.4">' in text
    assert f"<!--SERIAL {demo.project('demo-pkg').last_serial}-->" in text


async def test_redirects_and_not_found(demo: FakePyPI, session: aiohttp.ClientSession) -> None:
    """Non-normalised names and a missing slash get 301; unknown projects 404; an
    unacceptable Accept 406."""
    for path in ("simple/Demo.Pkg/", "simple/demo_pkg/", "simple/demo-pkg", "simple"):
        async with session.get(demo.url + path, allow_redirects=False) as resp:
            assert resp.status == 301, path
            assert resp.headers["Location"] in ("/simple/demo-pkg/", "/simple/")
    async with session.get(demo.url + "simple/Demo.Pkg/?format=x", allow_redirects=False) as r:
        assert r.headers["Location"] == "/simple/demo-pkg/?format=x"
    async with session.get(demo.url + "simple/nope/") as resp:
        assert resp.status == 404
    async with session.get(demo.url + "simple/demo-pkg/", headers={"Accept": "image/png"}) as r:
        assert r.status == 406


async def test_etag_and_304(demo: FakePyPI, session: aiohttp.ClientSession, tmp_path: Path) -> None:
    """Strong ETag per body; If-None-Match gives 304 until the page changes."""
    url = demo.url + "simple/demo-pkg/"
    async with session.get(url, headers={"Accept": JSON}) as resp:
        etag = resp.headers["ETag"]
        assert etag.startswith('"') and not etag.startswith("W/")
    async with session.get(url, headers={"Accept": JSON, "If-None-Match": etag}) as resp:
        assert resp.status == 304
        assert resp.headers["ETag"] == etag
    async with session.get(url, headers={"Accept": "text/html", "If-None-Match": etag}) as resp:
        assert resp.status == 200  # other representation, other tag
    demo.add_file("demo-pkg", build_wheel(tmp_path, "demo-pkg", "4.0"))
    async with session.get(url, headers={"Accept": JSON, "If-None-Match": etag}) as resp:
        assert resp.status == 200
        assert resp.headers["ETag"] != etag


# -- files ---------------------------------------------------------------------------------


async def test_file_get_head_and_range(demo: FakePyPI, session: aiohttp.ClientSession) -> None:
    """Files come back whole with Content-Length, HEAD has no body, single ranges give
    206, and ranges past the end 416."""
    record = demo.file("demo-pkg", "demo_pkg-1.0-py3-none-any.whl")
    data = record.source.read_bytes()
    async with session.get(record.url) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Length"] == str(len(data))
        assert resp.headers["Accept-Ranges"] == "bytes"
        assert "Content-Encoding" not in resp.headers
        assert await resp.read() == data
    async with session.head(record.url) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Length"] == str(len(data))
        assert await resp.read() == b""
    async with session.get(record.url, headers={"Range": "bytes=100-199"}) as resp:
        assert resp.status == 206
        assert resp.headers["Content-Range"] == f"bytes 100-199/{len(data)}"
        assert await resp.read() == data[100:200]
    async with session.get(record.url, headers={"Range": "bytes=-22"}) as resp:
        assert resp.status == 206
        assert await resp.read() == data[-22:]
    async with session.get(record.url, headers={"Range": f"bytes={len(data)}-"}) as resp:
        assert resp.status == 416
        assert resp.headers["Content-Range"] == f"bytes */{len(data)}"
    async with session.get(demo.url + "packages/aa/bb/cc/nope-1.0.tar.gz") as resp:
        assert resp.status == 404


async def test_metadata_file(
    demo: FakePyPI, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """<file>.metadata serves the wheel's METADATA; serve_metadata=False hides it."""
    record = demo.file("demo-pkg", "demo_pkg-1.0-py3-none-any.whl")
    async with session.get(record.url + ".metadata") as resp:
        assert resp.status == 200
        body = await resp.read()
    assert body == wheel_metadata(record.source)
    assert hashlib.sha256(body).hexdigest() == record.metadata_sha256
    plain = demo.add_file(
        "demo-pkg", build_wheel(tmp_path, "demo-pkg", "5.0"), serve_metadata=False
    )
    async with session.get(plain.url + ".metadata") as resp:
        assert resp.status == 404
    page = await get_json(session, demo.url + "simple/demo-pkg/")
    assert files_by_name(page)[plain.filename]["core-metadata"] is False
    sdist = demo.file("demo-pkg", "demo_pkg-1.0.tar.gz")
    async with session.get(sdist.url + ".metadata") as resp:
        assert resp.status == 404


# -- JSON API ------------------------------------------------------------------------------


async def test_json_api(demo: FakePyPI, session: aiohttp.ClientSession) -> None:
    """/pypi/<p>/json has info, releases, urls and last_serial; the per-version one has no
    releases; other spellings redirect to the display name; unknown → 404."""
    async with session.get(demo.url + "pypi/Demo.Pkg/json") as resp:
        assert resp.status == 200
        assert resp.headers["X-PyPI-Last-Serial"] == str(demo.project("demo-pkg").last_serial)
        doc = json.loads(await resp.read())
    assert doc["info"]["name"] == "Demo.Pkg"
    assert doc["info"]["version"] == "2.0"
    assert doc["info"]["requires_python"] == ">=3.9"
    assert doc["last_serial"] == demo.project("demo-pkg").last_serial
    assert set(doc["releases"]) == {"1.0", "2.0"}
    wheel = next(f for f in doc["releases"]["1.0"] if f["packagetype"] == "bdist_wheel")
    record = demo.file("demo-pkg", wheel["filename"])
    assert wheel["digests"] == {
        "sha256": record.sha256,
        "blake2b_256": record.blake2b_256,
        "md5": record.md5,
    }
    assert wheel["python_version"] == "py3"
    assert wheel["url"] == record.url
    assert wheel["yanked"] is False and wheel["yanked_reason"] is None
    assert wheel["upload_time_iso_8601"].endswith("Z")
    sdist = next(f for f in doc["releases"]["1.0"] if f["packagetype"] == "sdist")
    assert sdist["python_version"] == "source"
    assert [f["filename"] for f in doc["urls"]] == ["demo_pkg-2.0-py3-none-any.whl"]

    async with session.get(demo.url + "pypi/demo-pkg/json", allow_redirects=False) as resp:
        assert resp.status == 301
        assert resp.headers["Location"] == "/pypi/Demo.Pkg/json"
    one = await get_json(session, demo.url + "pypi/Demo.Pkg/1.0/json")
    assert "releases" not in one
    assert one["info"]["version"] == "1.0"
    assert one["info"]["requires_dist"] == ["attrs>=20"]
    assert len(one["urls"]) == 2
    for path in ("pypi/nope/json", "pypi/Demo.Pkg/9.9/json"):
        async with session.get(demo.url + path) as resp:
            assert resp.status == 404


# -- changelog and XML-RPC -----------------------------------------------------------------


async def test_changelog_actions_and_serials(
    demo: FakePyPI, session: aiohttp.ClientSession
) -> None:
    """Each mutation takes one new serial with PyPI's action wording, and the project's
    last serial follows."""
    assert [row[3] for row in demo.changelog[:3]] == [
        "create",
        "new release",
        "add py3 file demo_pkg-1.0-py3-none-any.whl",
    ]
    assert demo.changelog[3][3] == "add source file demo_pkg-1.0.tar.gz"
    assert [row[4] for row in demo.changelog] == list(range(1, demo.serial + 1))
    start = demo.serial
    demo.set_yanked("demo-pkg", "demo_pkg-2.0-py3-none-any.whl", "oops")
    demo.set_yanked("demo-pkg", "demo_pkg-2.0-py3-none-any.whl", False)
    demo.remove_file("Demo.Pkg", "demo_pkg-1.0.tar.gz")
    demo.set_project_status("demo-pkg", "archived", "no longer maintained")
    demo.remove_release("demo-pkg", "2.0")
    demo.remove_project("demo-pkg")
    rows = await rpc(session, demo, "changelog_since_serial", start)
    assert [(r[0], r[1], r[3], r[4]) for r in rows] == [
        ("Demo.Pkg", "2.0", "yank release", start + 1),
        ("Demo.Pkg", "2.0", "unyank release", start + 2),
        ("Demo.Pkg", "1.0", "remove file demo_pkg-1.0.tar.gz", start + 3),
        ("Demo.Pkg", None, "set project status archived", start + 4),
        ("Demo.Pkg", "2.0", "remove release", start + 5),
        ("Demo.Pkg", None, "remove project", start + 6),
    ]
    assert all(isinstance(r[2], int) and abs(r[2] - time.time()) < 60 for r in rows)
    assert await rpc(session, demo, "changelog_last_serial") == start + 6
    assert await rpc(session, demo, "list_packages_with_serial") == {}


async def test_xmlrpc_paging_and_serial_list(
    demo: FakePyPI, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """changelog_since_serial returns at most changelog_page_size rows per call."""
    demo.add_file("other", build_sdist(tmp_path, "other", "0.1"))
    demo.changelog_page_size = 3
    seen: list[int] = []
    since = 0
    while rows := await rpc(session, demo, "changelog_since_serial", since):
        assert len(rows) <= 3
        seen += [r[4] for r in rows]
        since = rows[-1][4]
    assert seen == list(range(1, demo.serial + 1))
    assert await rpc(session, demo, "list_packages_with_serial") == {
        "Demo.Pkg": demo.project("demo-pkg").last_serial,
        "other": demo.serial,
    }
    assert demo.xmlrpc_calls[-1] == "list_packages_with_serial"


async def test_xmlrpc_can_be_disabled(fake: FakePyPI, session: aiohttp.ClientSession) -> None:
    """xmlrpc_mode "not_found" answers 404, "fault" answers an XML-RPC Fault."""
    body = xmlrpc.client.dumps((), "changelog_last_serial").encode()
    fake.xmlrpc_mode = "not_found"
    async with session.post(fake.url + "pypi", data=body) as resp:
        assert resp.status == 404
    fake.xmlrpc_mode = "fault"
    async with session.post(fake.url + "pypi", data=body) as resp:
        assert resp.status == 200
        with pytest.raises(xmlrpc.client.Fault):
            xmlrpc.client.loads(await resp.read())
    fake.xmlrpc_mode = "ok"
    assert await rpc(session, fake, "changelog_last_serial") == 0


# -- project status ------------------------------------------------------------------------


async def test_project_status(demo: FakePyPI, session: aiohttp.ClientSession) -> None:
    """PEP 792: status in JSON and HTML; a quarantined project lists no files and its
    files are gone."""
    record = demo.file("demo-pkg", "demo_pkg-2.0-py3-none-any.whl")
    demo.set_project_status("demo-pkg", "quarantined", "malware")
    page = await get_json(session, demo.url + "simple/demo-pkg/")
    assert page["project-status"] == {"status": "quarantined", "reason": "malware"}
    assert page["files"] == [] and page["versions"] == []
    async with session.get(demo.url + "simple/demo-pkg/") as resp:
        text = await resp.text()
    assert '<meta name="pypi:project-status" content="quarantined">' in text
    assert '<meta name="pypi:project-status-reason" content="malware">' in text
    async with session.get(record.url) as resp:
        assert resp.status == 404
    demo.set_project_status("demo-pkg", "active")
    async with session.get(record.url) as resp:
        assert resp.status == 200


# -- fault knobs ---------------------------------------------------------------------------


async def test_outage(demo: FakePyPI, session: aiohttp.ClientSession) -> None:
    """outage answers everything with the given status, and is still logged."""
    demo.outage = 503
    record = demo.file("demo-pkg", "demo_pkg-2.0-py3-none-any.whl")
    for url in (demo.url + "simple/demo-pkg/", record.url, demo.url + "pypi/Demo.Pkg/json"):
        async with session.get(url) as resp:
            assert resp.status == 503
    async with session.post(demo.url + "pypi", data=b"") as resp:
        assert resp.status == 503
    assert demo.count("/simple/") == 1 and demo.count("/pypi") == 2
    demo.outage = None
    async with session.get(record.url) as resp:
        assert resp.status == 200


async def test_delay(fake: FakePyPI, session: aiohttp.ClientSession) -> None:
    """delay holds every answer back by that many seconds."""
    fake.delay = 0.3
    started = time.monotonic()
    async with session.get(fake.url + "simple/") as resp:
        assert resp.status == 200
    assert time.monotonic() - started >= 0.3


async def test_truncated_file(demo: FakePyPI, session: aiohttp.ClientSession) -> None:
    """truncate_files announces the full length, sends part, and drops the connection."""
    demo.truncate_files = True
    record = demo.file("demo-pkg", "demo_pkg-1.0-py3-none-any.whl")
    received = bytearray()
    with pytest.raises(aiohttp.ClientPayloadError):
        async with session.get(record.url) as resp:
            assert resp.headers["Content-Length"] == str(record.size)
            async for chunk in resp.content.iter_any():
                received += chunk
    assert 0 < len(received) < record.size
    assert bytes(received) == record.source.read_bytes()[: len(received)]


async def test_tampered_file(demo: FakePyPI, session: aiohttp.ClientSession) -> None:
    """tamper_files keeps the length but changes the bytes (also for .metadata)."""
    demo.tamper_files = True
    record = demo.file("demo-pkg", "demo_pkg-1.0-py3-none-any.whl")
    async with session.get(record.url) as resp:
        body = await resp.read()
    assert len(body) == record.size
    assert hashlib.sha256(body).hexdigest() != record.sha256
    async with session.get(record.url + ".metadata") as resp:
        metadata = await resp.read()
    assert hashlib.sha256(metadata).hexdigest() != record.metadata_sha256


async def test_stalled_file(demo: FakePyPI, session: aiohttp.ClientSession) -> None:
    """stall_files sends headers and then nothing: a client read timeout fires."""
    demo.stall_files = True
    record = demo.file("demo-pkg", "demo_pkg-1.0-py3-none-any.whl")
    timeout = aiohttp.ClientTimeout(sock_read=0.3)
    with pytest.raises(asyncio.TimeoutError):
        async with session.get(record.url, timeout=timeout) as resp:
            assert resp.status == 200
            await resp.read()


async def test_lagging_serial(demo: FakePyPI, session: aiohttp.ClientSession) -> None:
    """lagging_serial lowers the serials pages report; XML-RPC stays truthful."""
    demo.lagging_serial = 2
    last = demo.project("demo-pkg").last_serial
    async with session.get(demo.url + "simple/demo-pkg/", headers={"Accept": JSON}) as resp:
        assert resp.headers["X-PyPI-Last-Serial"] == str(last - 2)
        assert json.loads(await resp.read())["meta"]["_last-serial"] == last - 2
    root = await get_json(session, demo.url + "simple/")
    assert root["meta"]["_last-serial"] == demo.serial - 2
    assert root["projects"][0]["_last-serial"] == last - 2
    assert await rpc(session, demo, "changelog_last_serial") == demo.serial


async def test_html_only(demo: FakePyPI, session: aiohttp.ClientSession) -> None:
    """html_only ignores Accept and ?format=."""
    demo.html_only = True
    async with session.get(demo.url + "simple/demo-pkg/?format=" + JSON) as resp:
        assert resp.headers["Content-Type"].startswith("text/html")
    async with session.get(demo.url + "simple/", headers={"Accept": JSON}) as resp:
        assert resp.headers["Content-Type"].startswith("text/html")


async def test_extra_links(demo: FakePyPI, session: aiohttp.ClientSession) -> None:
    """extra_links appear as extra files on every project page, in both formats."""
    demo.extra_links = ["http://evil.example/x-1.0.tar.gz"]
    page = await get_json(session, demo.url + "simple/demo-pkg/")
    evil = files_by_name(page)["x-1.0.tar.gz"]
    assert evil["url"] == "http://evil.example/x-1.0.tar.gz"
    async with session.get(demo.url + "simple/demo-pkg/") as resp:
        assert 'href="http://evil.example/x-1.0.tar.gz#sha256=' in await resp.text()


async def test_request_log(demo: FakePyPI, session: aiohttp.ClientSession) -> None:
    """requests logs (method, path); count() filters by prefix; reset_log() clears."""
    demo.reset_log()
    record = demo.file("demo-pkg", "demo_pkg-2.0-py3-none-any.whl")
    async with session.get(demo.url + "simple/demo-pkg/"):
        pass
    async with session.head(record.url):
        pass
    assert demo.requests == [("GET", "/simple/demo-pkg/"), ("HEAD", record.url_path)]
    assert demo.count("/packages/") == 1
    assert demo.count("/packages/", method="GET") == 0
    demo.reset_log()
    assert demo.requests == [] and demo.count("/") == 0


async def test_static_files(fake: FakePyPI, session: aiohttp.ClientSession) -> None:
    """add_static serves arbitrary bytes (e.g. TUF metadata)."""
    url = fake.add_static("/tuf/1.root.json", b"{}", "application/json")
    async with session.get(url) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "application/json"
        assert await resp.read() == b"{}"
    async with session.get(fake.url + "tuf/2.root.json") as resp:
        assert resp.status == 404


async def test_stop_and_restart_on_the_same_port(
    demo: FakePyPI, session: aiohttp.ClientSession
) -> None:
    """While stopped the port refuses connections; start() comes back on the same URL with
    the same state."""
    url = demo.url
    await demo.stop()
    with pytest.raises(aiohttp.ClientConnectionError):
        async with session.get(url + "simple/"):
            pass
    await demo.start()
    assert demo.url == url
    page = await get_json(session, url + "simple/demo-pkg/")
    assert page["versions"] == ["1.0", "2.0"]


async def test_stop_releases_stalled_downloads(demo: FakePyPI) -> None:
    """stop() does not hang on a stalled download; the client sees the connection drop."""
    demo.stall_files = True
    record = demo.file("demo-pkg", "demo_pkg-1.0-py3-none-any.whl")
    async with aiohttp.ClientSession() as client, client.get(record.url) as resp:
        read = asyncio.ensure_future(resp.read())
        started = time.monotonic()
        await demo.stop()
        assert time.monotonic() - started < 2
        with pytest.raises(aiohttp.ClientPayloadError):
            await read


# -- real clients --------------------------------------------------------------------------


def _clean_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"PIP_FIND_LINKS", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL"}
        and not k.startswith("UV_")
    }
    env["PIP_CONFIG_FILE"] = os.devnull
    return env


async def _run(*argv: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        env=_clean_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode(errors="replace")


async def test_pip_downloads_from_the_fake(demo: FakePyPI, tmp_path: Path) -> None:
    """Real pip resolves and downloads a wheel through the fake's simple API."""
    dest = tmp_path / "dl"
    code, out = await _run(
        sys.executable,
        "-m",
        "pip",
        "download",
        "--isolated",
        "--no-cache-dir",
        "--disable-pip-version-check",
        "--no-deps",
        "--index-url",
        demo.url + "simple/",
        "-d",
        str(dest),
        "demo.pkg==2.0",
    )
    assert code == 0, out
    downloaded = dest / "demo_pkg-2.0-py3-none-any.whl"
    record = demo.file("demo-pkg", downloaded.name)
    assert hashlib.sha256(downloaded.read_bytes()).hexdigest() == record.sha256
    assert demo.count("/simple/demo-pkg/") >= 1


async def test_uv_installs_from_the_fake(demo: FakePyPI, tmp_path: Path) -> None:
    """Real uv installs a wheel from the fake (it checks RECORD and the .metadata file)."""
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if uv is None:
        pytest.skip("uv not installed")
    target = tmp_path / "site"
    code, out = await _run(
        uv,
        "pip",
        "install",
        "--no-config",
        "--no-cache",
        "--no-deps",
        "--python",
        sys.executable,
        "--index-url",
        demo.url + "simple/",
        "--target",
        str(target),
        "demo-pkg==1.0",
    )
    assert code == 0, out
    assert (target / "demo_pkg" / "__init__.py").read_text().count('__version__ = "1.0"') == 1
    assert (target / "demo_pkg-1.0.dist-info" / "RECORD").exists()
