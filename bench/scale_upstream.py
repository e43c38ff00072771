"""A generated PyPI of N metadata-only projects for the scale phase
(``python -m bench.scale_upstream --projects 100000 --manifest M``).

Nothing is held per project: project ``i`` is ``scale-<i>`` (zero-padded), created at
serial ``i + 1`` with release ``1.0`` of ``--files`` files (a pure wheel, an sdist, then
CPython wheels), and its
pages and JSON API answer are rendered on demand by ``tests.fakepypi.render`` from
throw-away records whose sizes and digests derive from the file name. The files are never
served (404): the scale sync keeps none of them (``[sync] max-file-size = 1``, so every
listed file is filtered out) — what is measured is the per-project cost of the sync and
of ``serve``, not downloads.

Speaks what the mirror's sync asks: XML-RPC at ``POST /pypi`` (``changelog_last_serial``,
``changelog_since_serial`` paged at 50,000 rows, ``list_packages_with_serial`` streamed),
``/simple/`` (streamed), ``/simple/<p>/`` in PEP 691 JSON or PEP 503 HTML, and
``/pypi/<p>/json``. Bench endpoints (POST, so they cannot collide with the catch-all GET):

- ``/_bench/bump`` ``{"count": k}``: ``k`` projects, spread over the range, get a new
  release (``1.<n>``) at new serials — what an incremental sync then picks up;
- ``/_bench/stats``: requests received, by kind.

It writes the manifest (its URL) once it listens and serves until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import signal
import sys
import xmlrpc.client
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from bench.upstream import request_kind
from tests.fakepypi.model import FileRecord, Project, Release
from tests.fakepypi.render import JSON, TEXT_HTML, json_api, negotiate, simple_project

PAGE_ROWS = 50_000
_UPLOADED = datetime(2020, 1, 1, tzinfo=UTC)
_TIMESTAMP = 1_577_836_800
_LIST_CHUNK = 5_000


class ScalePyPI:
    """The generated index: ``projects`` base projects plus the bumps made since start."""

    def __init__(self, projects: int, files: int) -> None:
        self.n = projects
        self.files = max(1, files)
        self.width = max(6, len(str(projects - 1)))
        self.url = ""
        #: project index → number of extra releases (1.1, 1.2, ...)
        self.bumped: dict[int, int] = {}
        #: rows after the base serials: (project index, version, serial)
        self.rows: list[tuple[int, str, int]] = []
        self.stats: Counter[str] = Counter()

    # -- the model ------------------------------------------------------------------------

    @property
    def serial(self) -> int:
        return self.n + len(self.rows)

    def name(self, i: int) -> str:
        return f"scale-{i:0{self.width}d}"

    def index_of(self, name: str) -> int | None:
        prefix, _, number = name.partition("-")
        if prefix != "scale" or len(number) != self.width or not number.isdigit():
            return None
        i = int(number)
        return i if i < self.n else None

    def last_serial(self, i: int) -> int:
        serial = i + 1
        if i in self.bumped:
            serial = max(s for j, _, s in self.rows if j == i)
        return serial

    def project(self, i: int) -> Project:
        name = self.name(i)
        project = Project(name=name, normalized=name, last_serial=self.last_serial(i))
        for n in range(self.bumped.get(i, 0) + 1):
            version = f"1.{n}"
            release = Release(version=version)
            for k in range(self.files):
                record = self._record(name, version, k)
                release.files[record.filename] = record
            project.releases[version] = release
        return project

    def _record(self, name: str, version: str, k: int) -> FileRecord:
        stem = f"{name.replace('-', '_')}-{version}"
        wheel = k != 1
        if k == 0:
            filename = f"{stem}-py3-none-any.whl"
        elif k == 1:
            filename = f"{stem}.tar.gz"
        else:
            tag = f"cp3{8 + k}"
            filename = f"{stem}-{tag}-{tag}-manylinux_2_17_x86_64.whl"
        seed = hashlib.sha256(filename.encode()).digest()
        b2 = hashlib.blake2b(filename.encode(), digest_size=32).hexdigest()
        url_path = f"/packages/{b2[:2]}/{b2[2:4]}/{b2[4:]}/{filename}"
        metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n\n".encode()
        return FileRecord(
            project=name,
            filename=filename,
            version=version,
            source=Path("/nonexistent") / filename,
            size=10_000 + int.from_bytes(seed[:4], "big") % 500_000,
            sha256=seed.hex(),
            blake2b_256=b2,
            md5=hashlib.md5(filename.encode(), usedforsecurity=False).hexdigest(),
            packagetype="bdist_wheel" if wheel else "sdist",
            python_version=("py3" if k == 0 else f"cp3{8 + k}") if wheel else "source",
            requires_python=">=3.8",
            yanked=False,
            upload_time=_UPLOADED,
            core_metadata=metadata if wheel else None,
            serve_metadata=wheel,
            url_path=url_path,
            url=self.url.rstrip("/") + url_path,
        )

    def bump(self, count: int) -> list[str]:
        """``count`` projects spread over the range get a new release each."""
        count = max(0, min(count, self.n))
        step = max(1, self.n // max(count, 1))
        names = []
        for c in range(count):
            i = (c * step + step // 2) % self.n
            n = self.bumped.get(i, 0) + 1
            self.bumped[i] = n
            self.rows.append((i, f"1.{n}", self.serial + 1))
            names.append(self.name(i))
        return names

    # -- XML-RPC --------------------------------------------------------------------------

    def changelog_since(self, since: int) -> list[list[Any]]:
        out: list[list[Any]] = []
        for serial in range(max(since + 1, 1), min(self.n, since + PAGE_ROWS) + 1):
            out.append([self.name(serial - 1), "1.0", _TIMESTAMP, "new release", serial])
        for i, version, serial in self.rows:
            if serial > since and len(out) < PAGE_ROWS:
                out.append([self.name(i), version, _TIMESTAMP, "new release", serial])
        return out

    def list_chunks(self) -> list[bytes]:
        """``list_packages_with_serial`` as xmlrpc.client writes a struct, in chunks."""
        chunks = [b"<?xml version='1.0'?>\n<methodResponse>\n<params>\n<param>\n<value><struct>\n"]
        for start in range(0, self.n, _LIST_CHUNK):
            chunks.append(
                "".join(
                    f"<member>\n<name>{self.name(i)}</name>\n"
                    f"<value><int>{self.last_serial(i)}</int></value>\n</member>\n"
                    for i in range(start, min(start + _LIST_CHUNK, self.n))
                ).encode()
            )
        chunks.append(b"</struct></value>\n</param>\n</params>\n</methodResponse>\n")
        return chunks

    # -- HTTP -----------------------------------------------------------------------------

    def make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._count])
        r = app.router
        r.add_post("/pypi", self._xmlrpc)
        r.add_post("/RPC2", self._xmlrpc)
        r.add_get("/simple/", self._root)
        r.add_get("/simple/{name}/", self._page)
        r.add_get("/pypi/{name}/json", self._json_api)
        r.add_post("/_bench/bump", self._bump)
        r.add_post("/_bench/stats", self._stats)
        return app

    @web.middleware
    async def _count(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if not request.path.startswith("/_bench/"):
            self.stats[request_kind(request.method, request.path)] += 1
            self.stats["total"] += 1
        return await handler(request)

    async def _xmlrpc(self, request: web.Request) -> web.StreamResponse:
        params, method = xmlrpc.client.loads(await request.read())
        self.stats[f"xmlrpc:{method}"] += 1
        if method == "list_packages_with_serial":
            response = web.StreamResponse(headers={"Content-Type": "text/xml; charset=utf-8"})
            await response.prepare(request)
            for chunk in self.list_chunks():
                await response.write(chunk)
            await response.write_eof()
            return response
        result: Any
        if method == "changelog_last_serial":
            result = self.serial
        elif method == "changelog_since_serial" and len(params) == 1:
            result = self.changelog_since(int(params[0]))
        else:
            fault = xmlrpc.client.Fault(-32601, f"method {method!r} not supported")
            body = xmlrpc.client.dumps(fault, methodresponse=True)
            return web.Response(text=body, content_type="text/xml")
        body = xmlrpc.client.dumps((result,), methodresponse=True, allow_none=True)
        return web.Response(text=body, content_type="text/xml")

    def _headers(self, serial: int, body: bytes) -> dict[str, str]:
        return {
            "X-PyPI-Last-Serial": str(serial),
            "ETag": '"' + hashlib.sha256(body).hexdigest()[:32] + '"',
            "Cache-Control": "max-age=600, public",
        }

    async def _root(self, request: web.Request) -> web.StreamResponse:
        content_type = negotiate(request.headers.get("Accept"), request.query.get("format"))
        if content_type is None:
            return web.Response(status=406)
        response = web.StreamResponse(
            headers={"Content-Type": content_type, "X-PyPI-Last-Serial": str(self.serial)}
        )
        await response.prepare(request)
        is_json = content_type == JSON
        head = (
            '{"meta":{"api-version":"1.4","_last-serial":' + str(self.serial) + '},"projects":['
            if is_json
            else "<!DOCTYPE html>\n<html><body>\n"
        )
        await response.write(head.encode())
        for start in range(0, self.n, _LIST_CHUNK):
            stop = min(start + _LIST_CHUNK, self.n)
            if is_json:
                part = ",".join(
                    json.dumps({"name": self.name(i), "_last-serial": self.last_serial(i)})
                    for i in range(start, stop)
                )
                part = ("," if start else "") + part
            else:
                part = "".join(
                    f'<a href="/simple/{self.name(i)}/">{self.name(i)}</a>\n'
                    for i in range(start, stop)
                )
            await response.write(part.encode())
        await response.write(b"]}" if is_json else b"</body></html>\n")
        await response.write_eof()
        return response

    async def _page(self, request: web.Request) -> web.Response:
        i = self.index_of(request.match_info["name"])
        if i is None:
            return web.Response(status=404, text="404 Not Found\n")
        content_type = negotiate(request.headers.get("Accept"), request.query.get("format"))
        if content_type is None:
            return web.Response(status=406)
        project = self.project(i)
        body = simple_project(project, project.last_serial, content_type)
        charset = "utf-8" if content_type == TEXT_HTML else None
        return web.Response(
            body=body,
            content_type=content_type,
            charset=charset,
            headers=self._headers(project.last_serial, body),
        )

    async def _json_api(self, request: web.Request) -> web.Response:
        i = self.index_of(request.match_info["name"])
        if i is None:
            return web.json_response({"message": "Not Found"}, status=404)
        project = self.project(i)
        latest = list(project.releases.values())[-1]
        body = json_api(project, latest, project.last_serial, self.url, with_releases=True)
        return web.Response(
            body=body,
            content_type="application/json",
            headers=self._headers(project.last_serial, body),
        )

    async def _bump(self, request: web.Request) -> web.Response:
        count = int((await request.json()).get("count", 0))
        names = self.bump(count)
        return web.json_response({"bumped": names, "serial": self.serial})

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response(dict(self.stats))


async def serve(projects: int, files: int, manifest: Path) -> None:
    index = ScalePyPI(projects, files)
    runner = web.AppRunner(index.make_app(), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
    await site.start()
    port = int(runner.addresses[0][1])
    index.url = f"http://127.0.0.1:{port}/"
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tmp = manifest.with_suffix(".tmp")
    tmp.write_text(json.dumps({"url": index.url, "projects": projects, "serial": index.serial}))
    tmp.replace(manifest)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--projects", type=int, required=True)
    parser.add_argument("--files", type=int, default=2, help="files listed per release")
    parser.add_argument("--manifest", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        import uvloop  # the generator should cost the machine as little as it can
    except ImportError:  # pragma: no cover - uvloop is a dependency of the mirror
        asyncio.run(serve(args.projects, args.files, args.manifest))
    else:
        uvloop.run(serve(args.projects, args.files, args.manifest))
    return 0


if __name__ == "__main__":
    sys.exit(main())
