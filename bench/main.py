"""The benchmark: our pull-through cache against peers, all measured in the same run.

One deterministic corpus (``bench.corpus``) is published by a fake PyPI in its own process
(``bench.upstream``). Each proxy — ours, proxpi, devpi — starts with an empty cache and
goes through the same phases, one server at a time, with the same aiohttp load generator
(``bench.load``):

1. cold: every project page once, then every file once, at concurrency 8;
2. warm files: N GETs of cached files at concurrency 32 (nginx on ``deploy/nginx.conf``
   over ours' web root is the static upper bound here, with the daemon stopped so that
   every answer is static);
3. warm pages: N project pages with pip's Accept (PEP 691 JSON) at concurrency 32;
4. single flight: C concurrent GETs of one uncached 5 MB file, counting the upstream's
   GETs for it;
5. memory: peak RSS (VmHWM) of each server's process tree after the run.

It prints a table with ours/peer ratios and the targets of ``bench.report``, and writes the
raw numbers to ``bench/results/latest.json``. Nothing is asserted; all traffic stays on
127.0.0.1; every loop is bounded in count and every wait in time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from yarl import URL

from bench import report
from bench.corpus import BIG_PROJECT, CorpusSpec
from bench.load import (
    FILE_HEADERS,
    PIP_PAGE_HEADERS,
    WRK,
    LoadResult,
    get_json,
    post_json,
    run_load,
    run_wrk,
)
from bench.servers import (
    NGINX,
    PEERS_BIN,
    REPO,
    Server,
    ServerError,
    peak_rss,
    start_devpi,
    start_nginx,
    start_ours,
    start_proxpi,
)

ALL_PEERS = ("ours", "nginx", "proxpi", "devpi")


@dataclass(frozen=True)
class Options:
    """Knobs of one run (see ``--help``)."""

    peers: tuple[str, ...]
    spec: CorpusSpec
    files_n: int
    pages_n: int
    single_flight: int
    cold_concurrency: int
    warm_concurrency: int
    phase_deadline_s: float
    total_deadline_s: float
    proxpi_threads: int
    repeat: int
    out: Path
    keep: bool
    loader: str
    work: Path = Path()


@dataclass
class Upstream:
    """The fake PyPI child process and what it published."""

    proc: asyncio.subprocess.Process
    url: str
    projects: dict[str, list[dict[str, Any]]]

    async def gets(self, path: str) -> int:
        answer = await post_json(self.url + "_bench/count", {"path": path})
        assert isinstance(answer, dict)
        return int(answer["get"])

    @property
    def corpus_projects(self) -> list[str]:
        return sorted(p for p in self.projects if p != BIG_PROJECT)

    @property
    def sha256_by_filename(self) -> dict[str, str]:
        return {f["filename"]: f["sha256"] for fs in self.projects.values() for f in fs}


async def start_upstream(work: Path, spec: CorpusSpec, timeout_s: float = 180.0) -> Upstream:
    """Build the corpus and serve it from ``python -m bench.upstream``; wait for its manifest."""
    manifest = work / "manifest.json"
    log = work / "logs" / "upstream.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.executable,
        "-m",
        "bench.upstream",
        "--corpus-dir",
        str(work / "corpus"),
        "--manifest",
        str(manifest),
        "--projects",
        str(spec.projects),
        "--wheels",
        str(spec.wheels_per_project),
        "--min-size",
        str(spec.min_size),
        "--max-size",
        str(spec.max_size),
        "--big-size",
        str(spec.big_size),
    ]
    with log.open("ab") as out:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=REPO,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
    loop = asyncio.get_running_loop()
    stop_at = loop.time() + timeout_s
    while not manifest.exists():
        if proc.returncode is not None or loop.time() > stop_at:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise ServerError(f"fake upstream did not start:\n{log.read_text()[-2000:]}")
        await asyncio.sleep(0.1)
    data = json.loads(manifest.read_text())
    return Upstream(proc, data["url"], data["projects"])


async def stop_process(proc: asyncio.subprocess.Process, timeout_s: float = 10.0) -> None:
    """SIGTERM, bounded wait, then SIGKILL — only this one process we started."""
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), timeout_s)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


async def discover_files(server: Server, upstream: Upstream) -> dict[str, str]:
    """filename → absolute URL on ``server``, read from its own (already cached) JSON pages."""
    urls: dict[str, str] = {}
    sem = asyncio.Semaphore(8)

    async def one(project: str) -> None:
        page_url = server.index_url + project + "/"
        async with sem:
            page = await get_json(page_url, PIP_PAGE_HEADERS)
        assert isinstance(page, dict), page_url
        for entry in page.get("files", []):
            urls[entry["filename"]] = str(URL(page_url).join(URL(entry["url"])))

    await asyncio.gather(*(one(p) for p in [*upstream.corpus_projects, BIG_PROJECT]))
    missing = set(upstream.sha256_by_filename) - set(urls)
    if missing:
        raise ServerError(f"{server.name} pages lack {len(missing)} files, e.g. {min(missing)}")
    return urls


def warm_order(urls: list[str]) -> list[str]:
    """A fixed shuffle, so every peer sees the same request sequence."""
    ordered = sorted(urls)
    random.Random(1).shuffle(ordered)
    return ordered


WarmUrls = tuple[list[str], list[str]]


async def measure_proxy(
    server: Server, upstream: Upstream, opts: Options
) -> tuple[dict[str, Any], WarmUrls]:
    """Phases 1-5 on one pull-through proxy that starts with an empty cache; also returns
    the (file, page) URLs it was measured with."""
    out: dict[str, Any] = {"notes": server.notes}
    projects = upstream.corpus_projects
    page_urls = [server.index_url + p + "/" for p in projects]
    deadline = opts.phase_deadline_s

    cold_pages = await run_load(
        page_urls,
        total=len(page_urls),
        concurrency=opts.cold_concurrency,
        headers=PIP_PAGE_HEADERS,
        deadline_s=deadline,
    )
    out["cold_pages"] = cold_pages.summary()
    by_name = await discover_files(server, upstream)
    sha = upstream.sha256_by_filename
    corpus_files = [f["filename"] for p in projects for f in upstream.projects[p]]
    file_urls = [by_name[name] for name in corpus_files]
    expected = {by_name[name]: sha[name] for name in corpus_files}

    cold = await run_load(
        file_urls,
        total=len(file_urls),
        concurrency=opts.cold_concurrency,
        headers=FILE_HEADERS,
        deadline_s=deadline,
        expected_sha256=expected,
    )
    out["cold_files"] = cold.summary()
    out.update(await measure_warm(file_urls, page_urls, opts))

    big = upstream.projects[BIG_PROJECT][0]
    big_url = by_name[big["filename"]]
    before = await upstream.gets(big["url_path"])
    flight = await run_load(
        [big_url],
        total=opts.single_flight,
        concurrency=opts.single_flight,
        headers=FILE_HEADERS,
        deadline_s=deadline,
        expected_sha256={big_url: big["sha256"]},
    )
    after = await upstream.gets(big["url_path"])
    out["single_flight"] = {
        **flight.summary(),
        "clients": opts.single_flight,
        "file_bytes": big["size"],
        "upstream_gets": after - before,
    }
    out["memory"] = peak_rss(server.pid)
    return out, (file_urls, page_urls)


async def measure_warm(file_urls: list[str], page_urls: list[str], opts: Options) -> dict[str, Any]:
    """Phases 2 and 3 against already cached files and pages (wrk when available).

    Each runs ``opts.repeat`` times; the run with the best rate is reported (others only
    slow a run down, never speed it up, on a shared machine) and all rates are kept.
    """
    out: dict[str, Any] = {}
    for phase, urls, total, headers in (
        ("warm_files", file_urls, opts.files_n, FILE_HEADERS),
        ("warm_pages", page_urls, opts.pages_n, PIP_PAGE_HEADERS),
    ):
        ordered = warm_order(urls)
        runs: list[LoadResult] = []
        for _ in range(max(1, opts.repeat)):
            if opts.loader == "wrk":
                result = await run_wrk(
                    ordered,
                    total=total,
                    concurrency=opts.warm_concurrency,
                    headers=headers,
                    deadline_s=opts.phase_deadline_s,
                    script_dir=opts.work,
                )
            else:
                result = await run_load(
                    ordered,
                    total=total,
                    concurrency=opts.warm_concurrency,
                    headers=headers,
                    deadline_s=opts.phase_deadline_s,
                )
            runs.append(result)
        best = max(runs, key=lambda r: r.req_per_s)
        out[phase] = {
            **best.summary(),
            "repeats": len(runs),
            "req_per_s_all": [round(r.req_per_s, 2) for r in runs],
        }
    return out


async def measure_nginx(work: Path, ours: Server, urls: WarmUrls, opts: Options) -> dict[str, Any]:
    """Warm phases through nginx over ours' web root. Ours is already stopped, so a request
    nginx cannot serve statically fails (502) instead of quietly reaching the daemon."""
    web_root = Path(str(ours.notes["web_root"]))
    nginx = await start_nginx(work, web_root, int(str(ours.notes["port"])))
    try:
        files, pages = (
            [u.replace(ours.base_url, nginx.base_url, 1) for u in group] for group in urls
        )
        out: dict[str, Any] = {"notes": nginx.notes}
        out.update(await measure_warm(files, pages, opts))
        out["memory"] = peak_rss(nginx.pid)
        return out
    finally:
        await nginx.stop()


async def run_peer(
    name: str, start: Callable[[], Awaitable[Server]], upstream: Upstream, opts: Options
) -> tuple[dict[str, Any], WarmUrls, Server]:
    """Start one proxy, measure it, stop it."""
    print(f"[bench] {name}: starting", flush=True)
    server = await start()
    try:
        t0 = time.perf_counter()
        result, urls = await measure_proxy(server, upstream, opts)
        print(f"[bench] {name}: measured in {time.perf_counter() - t0:.1f}s", flush=True)
    except BaseException:
        print(f"[bench] {name} failed; log tail:\n{server.log_tail()}", file=sys.stderr)
        raise
    finally:
        await server.stop()
    return result, urls, server


def peer_versions() -> dict[str, str]:
    """Versions of the peers as installed (best effort)."""
    versions: dict[str, str] = {}
    python = PEERS_BIN / "python"
    if python.exists():
        code = (
            "import importlib.metadata as m\n"
            "for d in ('proxpi', 'gunicorn', 'devpi-server'):\n"
            "    try: print(d, m.version(d))\n"
            "    except m.PackageNotFoundError: pass\n"
        )
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [str(python), "-c", code], capture_output=True, text=True, timeout=30, check=False
            ).stdout
            for line in out.splitlines():
                dist, _, version = line.partition(" ")
                versions[dist] = version
    if NGINX is not None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            err = subprocess.run(
                [NGINX, "-v"], capture_output=True, text=True, timeout=10, check=False
            ).stderr
            versions["nginx"] = err.strip().rsplit("/", 1)[-1]
    return versions


async def bench(opts: Options, work: Path) -> dict[str, Any]:
    """Run every selected peer against one upstream; return the raw results by peer."""
    results: dict[str, Any] = {}
    spec = opts.spec
    print(
        f"[bench] building and publishing the corpus ({spec.projects} projects x "
        f"{spec.wheels_per_project} wheels + one {spec.big_size / 1e6:.0f} MB file)",
        flush=True,
    )
    upstream = await start_upstream(work, spec)
    try:
        if "ours" in opts.peers:
            results["ours"], urls, ours = await run_peer(
                "ours", lambda: start_ours(work, upstream.url), upstream, opts
            )
            if "nginx" in opts.peers:
                print("[bench] nginx: starting (static upper bound, daemon stopped)", flush=True)
                try:
                    results["nginx"] = await measure_nginx(work, ours, urls, opts)
                except Exception as exc:  # a peer failing must not lose ours' numbers
                    results["nginx"] = not_measured("nginx", exc)
        for name, starter in (
            ("proxpi", lambda: start_proxpi(work, upstream.url, opts.proxpi_threads)),
            ("devpi", lambda: start_devpi(work, upstream.url)),
        ):
            if name not in opts.peers:
                continue
            try:
                results[name], _, _ = await run_peer(name, starter, upstream, opts)
            except Exception as exc:  # a peer failing must not lose the others' numbers
                results[name] = not_measured(name, exc)
    finally:
        await stop_process(upstream.proc)
    return results


def not_measured(name: str, exc: Exception) -> dict[str, Any]:
    """Report a peer that failed; its entry in the results says why."""
    print(f"[bench] {name}: not measured: {exc!r}", file=sys.stderr)
    lines = str(exc).splitlines()
    return {"error": f"{type(exc).__name__}: {lines[0] if lines else ''}"}


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="bench/run.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--peers",
        default=",".join(ALL_PEERS),
        help="comma-separated subset of " + ",".join(ALL_PEERS),
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a small corpus and few requests (a smoke run, under a minute)",
    )
    parser.add_argument("--projects", type=int, default=CorpusSpec.projects)
    parser.add_argument("--files-n", type=int, default=3000, help="warm file requests")
    parser.add_argument("--pages-n", type=int, default=3000, help="warm page requests")
    parser.add_argument(
        "--single-flight", type=int, default=50, help="concurrent clients on one uncached file"
    )
    parser.add_argument(
        "--phase-deadline",
        type=float,
        default=60.0,
        help="seconds after which a phase stops issuing requests",
    )
    parser.add_argument(
        "--total-deadline",
        type=float,
        default=900.0,
        help="seconds after which the whole run is abandoned",
    )
    parser.add_argument(
        "--proxpi-threads",
        type=int,
        default=8,
        help="gunicorn threads for proxpi (its Docker image uses 2)",
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "latest.json")
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs of each warm phase (the best is reported)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary work dir")
    parser.add_argument(
        "--loader",
        choices=("auto", "wrk", "aiohttp"),
        default="auto",
        help="load generator of the warm phases (auto: wrk if installed)",
    )
    args = parser.parse_args(argv)
    loader = ("wrk" if WRK else "aiohttp") if args.loader == "auto" else args.loader
    if loader == "wrk" and WRK is None:
        parser.error("wrk is not installed (make bench installs it with apt-get as root)")
    peers = tuple(p.strip() for p in args.peers.split(",") if p.strip())
    unknown = set(peers) - set(ALL_PEERS)
    if unknown:
        parser.error(f"unknown peers: {', '.join(sorted(unknown))}")
    if "nginx" in peers and "ours" not in peers:
        parser.error("nginx serves ours' web root: it needs ours in --peers")
    spec = CorpusSpec(projects=args.projects)
    files_n, pages_n, repeat = args.files_n, args.pages_n, args.repeat
    if args.quick:
        spec = CorpusSpec(projects=min(args.projects, 8))
        files_n, pages_n = min(files_n, 300), min(pages_n, 300)
        repeat = 1
    return Options(
        peers=peers,
        spec=spec,
        files_n=files_n,
        pages_n=pages_n,
        single_flight=args.single_flight,
        cold_concurrency=8,
        warm_concurrency=32,
        phase_deadline_s=args.phase_deadline,
        total_deadline_s=args.total_deadline,
        proxpi_threads=args.proxpi_threads,
        repeat=repeat,
        out=args.out,
        keep=args.keep,
        loader=loader,
    )


def main(argv: list[str] | None = None) -> int:
    work = Path(tempfile.mkdtemp(prefix="pypi-mirror-bench-"))
    opts = dataclasses.replace(parse_args(argv), work=work)
    started = time.time()
    load_before = [round(x, 2) for x in os.getloadavg()]
    if load_before[0] > 0.5 * (os.cpu_count() or 1):
        print(
            f"[bench] note: the machine is busy (load average {load_before[0]}); "
            "numbers will be noisy",
            file=sys.stderr,
        )
    try:
        results = asyncio.run(_bounded(opts, work))
    except (ServerError, TimeoutError) as exc:
        print(f"[bench] failed: {exc!r}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("[bench] interrupted", file=sys.stderr)
        return 130
    finally:
        if opts.keep:
            print(f"[bench] kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    checked = report.check_targets(results)
    seconds = round(time.time() - started, 1)
    document: dict[str, Any] = {
        "meta": {
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
            "seconds": seconds,
            "loadavg_before": load_before,
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "machine": platform.machine(),
            "versions": peer_versions(),
            "corpus": asdict(opts.spec),
            "options": {
                k: (str(v) if isinstance(v, Path) else v)
                for k, v in asdict(opts).items()
                if k not in ("spec", "work")
            },
        },
        "results": results,
        "ratios_ours_over_peer": report.ratios(results),
        "targets": checked,
    }
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    opts.out.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n")
    print()
    print(report.render(results))
    errors = report.render_errors(results)
    if errors:
        print("\nanswers worth a look (errors, bad digests, redirects, deadlines):\n" + errors)
    print("\ntargets (reported, not asserted):\n" + report.render_targets(checked))
    print(f"\nraw numbers: {opts.out} ({seconds}s)")
    return 0


async def _bounded(opts: Options, work: Path) -> dict[str, Any]:
    """The whole run under the total deadline; SIGTERM cancels it (so servers get stopped)."""
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    async with asyncio.timeout(opts.total_deadline_s):
        return await bench(opts, work)
