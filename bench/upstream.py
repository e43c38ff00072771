"""The fake PyPI for the benchmark, in its own process (``python -m bench.upstream``).

It builds the corpus, publishes it on ``tests.fakepypi.FakePyPI`` at 127.0.0.1, writes a
manifest (JSON) once it listens, and serves until SIGTERM. Running it apart from the load
generator keeps the two from sharing one event loop (and one core's worth of GIL).

``POST /_bench/count`` with ``{"path": "/packages/..."}`` answers how many GETs the fake
received for that path: the single-flight phase counts upstream downloads with it.
``POST /_bench/stats`` answers every request received so far, by kind (``page``,
``json_api``, ``file``, ``metadata``, ``xmlrpc``, ``root``, ``other``) and in ``total``: the
sync phase takes the difference around each run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from pathlib import Path

from aiohttp import web

from bench.corpus import CorpusSpec, build
from tests.fakepypi import FakePyPI


def request_kind(method: str, path: str) -> str:
    """What a request to a PyPI-like upstream asked for."""
    if method == "POST" and path in ("/pypi", "/pypi/", "/RPC2"):
        return "xmlrpc"
    if path == "/simple/":
        return "root"
    if path.startswith("/simple/"):
        return "page"
    if path.startswith("/pypi/"):
        return "json_api"
    if path.startswith("/packages/"):
        return "metadata" if path.endswith(".metadata") else "file"
    return "other"


class BenchPyPI(FakePyPI):
    """FakePyPI plus a counter endpoint (POST, so the GET catch-all does not shadow it)."""

    def make_app(self) -> web.Application:
        app = super().make_app()
        app.router.add_post("/_bench/count", self._count)
        app.router.add_post("/_bench/stats", self._stats)
        return app

    async def _stats(self, request: web.Request) -> web.Response:
        counts: dict[str, int] = {"total": 0}
        for method, path in self.requests:
            if path.startswith("/_bench/"):
                continue
            kind = request_kind(method, path)
            counts[kind] = counts.get(kind, 0) + 1
            counts["total"] += 1
        return web.json_response(counts)

    async def _count(self, request: web.Request) -> web.Response:
        path = str((await request.json())["path"])
        hits = sum(1 for method, p in self.requests if method == "GET" and p == path)
        return web.json_response({"path": path, "get": hits})


async def serve(spec: CorpusSpec, corpus_dir: Path, manifest: Path) -> None:
    """Build, publish and serve until SIGTERM/SIGINT; write ``manifest`` once listening."""
    built = await asyncio.to_thread(build, spec, corpus_dir)
    pypi = BenchPyPI()
    projects: dict[str, list[dict[str, object]]] = {}
    for project, path in built:
        record = pypi.add_file(project, path)
        projects.setdefault(record.project, []).append(
            {
                "filename": record.filename,
                "url_path": record.url_path,
                "size": record.size,
                "sha256": record.sha256,
            }
        )
    await pypi.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tmp = manifest.with_suffix(".tmp")
    tmp.write_text(json.dumps({"url": pypi.url, "projects": projects}))
    tmp.replace(manifest)
    try:
        await stop.wait()
    finally:
        await pypi.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--corpus-dir", type=Path, required=True)
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--projects", type=int, default=CorpusSpec.projects)
    parser.add_argument("--wheels", type=int, default=CorpusSpec.wheels_per_project)
    parser.add_argument("--min-size", type=int, default=CorpusSpec.min_size)
    parser.add_argument("--max-size", type=int, default=CorpusSpec.max_size)
    parser.add_argument("--big-size", type=int, default=CorpusSpec.big_size)
    parser.add_argument("--small-files", type=int, default=CorpusSpec.small_files)
    parser.add_argument("--small-size", type=int, default=CorpusSpec.small_size)
    parser.add_argument("--large-size", type=int, default=CorpusSpec.large_size)
    parser.add_argument("--install-projects", type=int, default=CorpusSpec.install_projects)
    parser.add_argument("--install-versions", type=int, default=CorpusSpec.install_versions)
    args = parser.parse_args(argv)
    spec = CorpusSpec(
        projects=args.projects,
        wheels_per_project=args.wheels,
        min_size=args.min_size,
        max_size=args.max_size,
        big_size=args.big_size,
        small_files=args.small_files,
        small_size=args.small_size,
        large_size=args.large_size,
        install_projects=args.install_projects,
        install_versions=args.install_versions,
    )
    asyncio.run(serve(spec, args.corpus_dir, args.manifest))
    return 0


if __name__ == "__main__":
    sys.exit(main())
