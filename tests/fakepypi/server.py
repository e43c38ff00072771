"""``FakePyPI``: a real aiohttp server on loopback that plays PyPI in tests.

Serves the simple API (PEP 503 HTML / PEP 691 JSON by Accept), files under ``/packages/``
with HEAD and single Range, PEP 658 ``.metadata`` files, the JSON API and the XML-RPC
changelog, with plain-attribute knobs for faults. State lives on the object; the aiohttp
application is built fresh by ``make_app()`` on every ``start()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import xmlrpc.client
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from aiohttp import web
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from .model import FileRecord, IndexState, Project, Release
from .render import (
    JSON,
    TEXT_HTML,
    json_api,
    latest_release,
    negotiate,
    simple_project,
    synthetic_entries,
)
from .render import simple_root as render_root
from .xmlrpc import DEFAULT_PAGE_SIZE, handle_xmlrpc

__all__ = ["FakePyPI"]

_CHUNK = 1 << 16
_PAGE_CACHE = "max-age=600, public"
_API_CACHE = "max-age=900, public"
_FILE_CACHE = "max-age=365000000, immutable, public"
_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class _Blob:
    """Bytes to serve from /packages/: a file on disk or an in-memory body."""

    size: int
    etag: str
    path: Path | None = None
    data: bytes = b""

    def chunks(self, start: int, length: int) -> Iterator[tuple[int, bytes]]:
        """Yield (absolute offset, bytes) covering [start, start + length)."""
        if self.path is None:
            for off in range(start, start + length, _CHUNK):
                yield off, self.data[off : min(off + _CHUNK, start + length)]
            return
        with self.path.open("rb") as fh:
            fh.seek(start)
            remaining, offset = length, start
            while remaining > 0:
                chunk = fh.read(min(_CHUNK, remaining))
                if not chunk:
                    raise OSError(f"{self.path} is shorter than registered")
                yield offset, chunk
                offset += len(chunk)
                remaining -= len(chunk)


class FakePyPI(IndexState):
    """A PyPI look-alike. Mutators (``add_file``, ``remove_file``, ``remove_release``,
    ``remove_project``, ``set_yanked``, ``set_release_yanked``, ``set_project_status``)
    come from :class:`~tests.fakepypi.model.IndexState`; all knobs below are plain
    attributes that tests may set at any time, also while the server runs."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__()
        self.host = host
        #: The bound port (0 until first started; kept across stop/start).
        self.port = port
        #: "http://127.0.0.1:PORT/" once started (stays set after stop()).
        self.url = ""

        # -- fault knobs --------------------------------------------------------------------
        #: Answer every request (any path, any method) with this HTTP status, e.g. 503.
        self.outage: int | None = None
        #: Seconds to wait before answering any request.
        self.delay: float = 0.0
        #: Files/.metadata: announce the full Content-Length, send about half, then close.
        self.truncate_files: bool = False
        #: Files/.metadata: flip the byte at offset size // 2 (length unchanged).
        self.tamper_files: bool = False
        #: Simple pages and JSON API report serials this much lower (a lagging CDN):
        #: X-PyPI-Last-Serial, meta._last-serial, per-project _last-serial, last_serial.
        #: XML-RPC is not affected.
        self.lagging_serial: int = 0
        #: Ignore Accept and ?format= on simple pages; always answer text/html.
        self.html_only: bool = False
        #: Absolute URLs added as extra files to every project page (hostile links).
        self.extra_links: list[str] = []
        #: Files/.metadata: send the headers, then never send the body (until stop()).
        self.stall_files: bool = False
        #: Files/.metadata: seconds to wait after each 64 KiB chunk of the body (a slow
        #: download, ended early by stop()).
        self.file_chunk_delay: float = 0.0
        #: Accept connections and read requests (any path, any method), but never answer
        #: them: a request that arrived while this is set hangs until stop(); requests
        #: after it was cleared are answered.
        self.hang: bool = False
        #: XML-RPC at POST /pypi: "ok", "not_found" (HTTP 404) or "fault" (a Fault reply).
        self.xmlrpc_mode: Literal["ok", "not_found", "fault"] = "ok"
        #: Project (normalised name) → how many made-up files its simple page lists besides
        #: its own (``render.synthetic_entries``; never downloadable): a page as large as
        #: a test needs, e.g. 230_000 entries for 100 MB of JSON.
        self.synthetic_files: dict[str, int] = {}
        #: Rows per changelog_since_serial() call (PyPI: 50000).
        self.changelog_page_size: int = DEFAULT_PAGE_SIZE

        # -- observation --------------------------------------------------------------------
        #: Every request received, as (method, path), in arrival order.
        self.requests: list[tuple[str, str]] = []
        #: Every XML-RPC method name called, in order.
        self.xmlrpc_calls: list[str] = []

        self.static: dict[str, tuple[bytes, str]] = {}
        self._synthetic_cache: tuple[tuple[bytes, int, str, str], bytes] | None = None
        self._runner: web.AppRunner | None = None
        self._stopping = asyncio.Event()

    # -- observation helpers --------------------------------------------------------------

    def count(self, path_prefix: str, method: str | None = None) -> int:
        """How many logged requests have a path starting with ``path_prefix``
        (and, if given, this method)."""
        return sum(
            1
            for m, p in self.requests
            if p.startswith(path_prefix) and (method is None or m == method)
        )

    def reset_log(self) -> None:
        """Forget logged requests and XML-RPC calls."""
        self.requests.clear()
        self.xmlrpc_calls.clear()

    # -- state helpers --------------------------------------------------------------------

    def add_file(
        self,
        project: str,
        path: Path,
        *,
        yanked: bool | str = False,
        requires_python: str | None = None,
        upload_time: str | None = None,
        serve_metadata: bool = True,
    ) -> FileRecord:
        """Register a file (see :meth:`IndexState.add_file`); sets ``record.url`` once the
        server's address is known."""
        record = super().add_file(
            project,
            path,
            yanked=yanked,
            requires_python=requires_python,
            upload_time=upload_time,
            serve_metadata=serve_metadata,
        )
        if self.url:
            record.url = self.url.rstrip("/") + record.url_path
        return record

    def add_static(
        self, path: str, data: bytes, content_type: str = "application/octet-stream"
    ) -> str:
        """Serve ``data`` at URL ``path`` (e.g. TUF metadata under /tuf/); return its URL."""
        self.static[path] = (data, content_type)
        return self.url.rstrip("/") + path

    def page_serial(self, serial: int) -> int:
        """``serial`` as a (possibly lagging) page reports it."""
        return max(serial - self.lagging_serial, 0)

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._runner is not None

    async def start(self) -> None:
        """Listen on host:port (port 0 the first time picks a free port; later starts
        reuse the same port, so configured URLs stay valid)."""
        if self._runner is not None:
            raise RuntimeError("FakePyPI is already running")
        self._stopping = asyncio.Event()
        runner = web.AppRunner(
            self.make_app(),
            handle_signals=False,
            shutdown_timeout=1.0,
            handler_cancellation=True,
            access_log=None,
        )
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        self.url = f"http://{self.host}:{self.port}/"
        base = self.url.rstrip("/")
        for project in self.projects.values():
            for record in project.files():
                record.url = base + record.url_path

    async def stop(self) -> None:
        """Stop listening (new connections are refused) and drop open connections,
        including stalled ones. Safe to call twice."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        self._stopping.set()
        await runner.cleanup()

    # -- application ----------------------------------------------------------------------

    def make_app(self) -> web.Application:
        """A fresh aiohttp application serving this object's state."""
        app = web.Application(middlewares=[self._middleware])
        r = app.router
        r.add_get("/simple", self._redirect_simple_root)
        r.add_get("/simple/", self._simple_root)
        r.add_get("/simple/{name}", self._redirect_simple_project)
        r.add_get("/simple/{name}/", self._simple_project)
        r.add_get("/packages/{tail:.+}", self._packages)
        r.add_get("/pypi/{name}/json", self._json_api)
        r.add_get("/pypi/{name}/{version}/json", self._json_api)
        for path in ("/pypi", "/pypi/", "/RPC2"):
            r.add_post(path, self._xmlrpc)
        r.add_get("/{tail:.*}", self._static)
        return app

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.requests.append((request.method, request.path))
        if self.hang:
            await self._stopping.wait()
            _close_connection(request)
            return web.Response(status=503)  # never sent: the connection is closed
        if self.delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=self.delay)
        if self.outage is not None:
            return web.Response(status=self.outage, text=f"fakepypi outage {self.outage}\n")
        return await handler(request)

    # -- simple API -----------------------------------------------------------------------

    def _content_type(self, request: web.Request) -> str | None:
        if self.html_only:
            return TEXT_HTML
        return negotiate(request.headers.get("Accept"), request.query.get("format"))

    @staticmethod
    def _etag(body: bytes) -> str:
        return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'

    @staticmethod
    def _not_modified(request: web.Request, etag: str) -> bool:
        header = request.headers.get("If-None-Match")
        if not header:
            return False
        tags = [t.strip().removeprefix("W/") for t in header.split(",")]
        return "*" in tags or etag in tags

    def _page(
        self,
        request: web.Request,
        body: bytes,
        content_type: str,
        serial: int,
        cache_control: str = _PAGE_CACHE,
    ) -> web.Response:
        etag = self._etag(body)
        headers = {
            "ETag": etag,
            "X-PyPI-Last-Serial": str(serial),
            "Cache-Control": cache_control,
            "Vary": "Accept, Accept-Encoding",
        }
        if self._not_modified(request, etag):
            return web.Response(status=304, headers=headers)
        charset = "utf-8" if content_type == TEXT_HTML else None
        return web.Response(body=body, content_type=content_type, charset=charset, headers=headers)

    @staticmethod
    def _redirect(request: web.Request, path: str) -> web.Response:
        location = path + (f"?{request.query_string}" if request.query_string else "")
        return web.Response(status=301, headers={"Location": location})

    async def _redirect_simple_root(self, request: web.Request) -> web.Response:
        return self._redirect(request, "/simple/")

    async def _simple_root(self, request: web.Request) -> web.Response:
        content_type = self._content_type(request)
        if content_type is None:
            return web.Response(status=406, text="406 Not Acceptable\n")
        serial = self.page_serial(self.serial)
        entries = [(p, self.page_serial(p.last_serial)) for p in self.projects.values()]
        body = render_root(entries, serial, content_type)
        return self._page(request, body, content_type, serial)

    async def _redirect_simple_project(self, request: web.Request) -> web.Response:
        name = canonicalize_name(request.match_info["name"])
        return self._redirect(request, f"/simple/{name}/")

    async def _simple_project(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        normalized = canonicalize_name(name)
        if name != normalized:
            return self._redirect(request, f"/simple/{normalized}/")
        project = self.projects.get(normalized)
        if project is None:
            return web.Response(status=404, text="404 Not Found\n")
        content_type = self._content_type(request)
        if content_type is None:
            return web.Response(status=406, text="406 Not Acceptable\n")
        serial = self.page_serial(project.last_serial)
        body = simple_project(project, serial, content_type, self.extra_links)
        count = self.synthetic_files.get(normalized, 0)
        if count:
            body = self._with_synthetic(body, project, count, content_type)
        return self._page(request, body, content_type, serial)

    def _with_synthetic(
        self, body: bytes, project: Project, count: int, content_type: str
    ) -> bytes:
        """``body`` with ``count`` made-up entries; the last page made is kept (they are
        large, and a test asking for one while it measures latency must not wait for it)."""
        key = (body, count, content_type, self.url)
        if self._synthetic_cache is not None and self._synthetic_cache[0] == key:
            return self._synthetic_cache[1]
        entries = synthetic_entries(project, count, self.url, content_type)
        if content_type == JSON:
            head, sep, tail = body.partition(b'"files":[')
            comma = b"" if tail.startswith(b"]") else b","
            page = b"".join((head, sep, entries, comma, tail))
        else:
            head, sep, tail = body.rpartition(b"  </body>")
            page = b"".join((head, entries, sep, tail))
        self._synthetic_cache = (key, page)
        return page

    # -- JSON API -------------------------------------------------------------------------

    async def _json_api(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        version = request.match_info.get("version")
        project = self.projects.get(canonicalize_name(name))
        if project is None or project.status == "quarantined":
            return web.json_response({"message": "Not Found"}, status=404)
        if name != project.name:  # PyPI redirects to the project's display name
            suffix = f"{version}/json" if version is not None else "json"
            return self._redirect(request, f"/pypi/{project.name}/{suffix}")
        release = latest_release(project) if version is None else _find_release(project, version)
        if release is None:
            return web.json_response({"message": "Not Found"}, status=404)
        serial = self.page_serial(project.last_serial)
        body = json_api(project, release, serial, self.url, with_releases=version is None)
        return self._page(request, body, "application/json", serial, _API_CACHE)

    # -- XML-RPC --------------------------------------------------------------------------

    async def _xmlrpc(self, request: web.Request) -> web.Response:
        if self.xmlrpc_mode == "not_found":
            return web.Response(status=404, text="404 Not Found\n")
        body = await request.read()
        method = _xmlrpc_method_name(body)
        self.xmlrpc_calls.append(method)
        if self.xmlrpc_mode == "fault":
            fault = xmlrpc.client.Fault(-32500, "RuntimeError: XML-RPC API is disabled")
            payload = xmlrpc.client.dumps(fault, methodresponse=True).encode()
        else:
            payload = handle_xmlrpc(self, body, page_size=self.changelog_page_size)
        return web.Response(body=payload, content_type="text/xml", charset="utf-8")

    # -- files ----------------------------------------------------------------------------

    def _blob(self, path: str) -> _Blob | None:
        record = self.file_by_url_path(path)
        if record is not None:
            project = self.projects.get(record.project)
            if project is None or project.status == "quarantined":
                return None
            return _Blob(size=record.size, etag=f'"{record.md5}"', path=record.source)
        if path.endswith(".metadata"):
            record = self.file_by_url_path(path.removesuffix(".metadata"))
            if record is not None and record.metadata_sha256 and record.core_metadata:
                project = self.projects.get(record.project)
                if project is None or project.status == "quarantined":
                    return None
                data = record.core_metadata
                etag = '"' + hashlib.md5(data, usedforsecurity=False).hexdigest() + '"'
                return _Blob(size=len(data), etag=etag, data=data)
        return None

    async def _packages(self, request: web.Request) -> web.StreamResponse:
        blob = self._blob(request.path)
        if blob is None:
            return web.Response(status=404, text="404 Not Found\n")
        headers = {
            "Accept-Ranges": "bytes",
            "Cache-Control": _FILE_CACHE,
            "ETag": blob.etag,
            "Content-Type": "application/octet-stream",
        }
        start, length, status = 0, blob.size, 200
        byte_range = _parse_range(request.headers.get("Range"), blob.size)
        if byte_range == "unsatisfiable":
            headers["Content-Range"] = f"bytes */{blob.size}"
            return web.Response(status=416, headers=headers)
        if byte_range is not None:
            start, end = byte_range
            length, status = end - start + 1, 206
            headers["Content-Range"] = f"bytes {start}-{end}/{blob.size}"

        response = web.StreamResponse(status=status, headers=headers)
        response.content_length = length
        await response.prepare(request)
        if request.method == "HEAD":
            await response.write_eof()
            return response
        if self.stall_files:
            await self._stopping.wait()
            _close_connection(request)
            return response
        budget = length // 2 if self.truncate_files else length
        tamper_at = blob.size // 2 if self.tamper_files else -1
        for offset, chunk in blob.chunks(start, length):
            if budget <= 0:
                break
            data = chunk[:budget]
            if offset <= tamper_at < offset + len(data):
                flipped = bytearray(data)
                flipped[tamper_at - offset] ^= 0xFF
                data = bytes(flipped)
            await response.write(data)
            budget -= len(data)
            if self.file_chunk_delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout=self.file_chunk_delay)
        if self.truncate_files:
            _close_connection(request)
            return response
        await response.write_eof()
        return response

    async def _static(self, request: web.Request) -> web.Response:
        entry = self.static.get(request.path)
        if entry is None:
            return web.Response(status=404, text="404 Not Found\n")
        data, content_type = entry
        return web.Response(body=data, headers={"Content-Type": content_type})


def _find_release(project: Project, version: str) -> Release | None:
    if version in project.releases:
        return project.releases[version]
    try:
        wanted = Version(version)
    except InvalidVersion:
        return None
    for release in project.releases.values():
        with contextlib.suppress(InvalidVersion):
            if Version(release.version) == wanted:
                return release
    return None


def _parse_range(
    header: str | None, size: int
) -> tuple[int, int] | Literal["unsatisfiable"] | None:
    """A single ``bytes=`` range as inclusive (start, end); None to ignore the header."""
    if not header:
        return None
    match = _RANGE_RE.match(header.strip())
    if match is None:  # multiple ranges or bad syntax: answer the whole file
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # suffix: the last N bytes
        n = int(last)
        if n == 0 or size == 0:
            return "unsatisfiable"
        return max(size - n, 0), size - 1
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:  # invalid: ignore
        return None
    if start >= size:
        return "unsatisfiable"
    return start, min(end, size - 1)


def _close_connection(request: web.Request) -> None:
    """Close the socket after flushing what was written (the body stays short)."""
    transport = request.transport
    if transport is not None:
        transport.close()


def _xmlrpc_method_name(body: bytes) -> str:
    match = re.search(rb"<methodName>\s*([^<\s]*)\s*</methodName>", body)
    return match.group(1).decode("utf-8", "replace") if match else ""
