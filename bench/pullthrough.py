"""The pull-through phases: ours, nginx, proxpi and devpi on one corpus, one at a time.

Each proxy starts with an empty cache and goes through the same phases:

1. cold: every project page once, then every file once (sha256 checked), concurrency 8;
2. warm: cached files of mixed sizes (200 KB-2 MB), the 100 KB files, the 20 MB file, and
   project pages with pip's Accept (PEP 691 JSON) — each with wrk at one concurrency for
   everybody, for a fixed time, ``repeat`` times (the best run is reported);
3. single flight: C concurrent GETs of one uncached 5 MB file, counting the upstream's
   GETs for it;
4. memory: peak RSS (VmHWM) of the process tree, and its RSS after every phase.

Then ours again over the same storage root with ``[serve] workers = N`` for each N asked
(warm pages and warm 100 KB only), and nginx on ``deploy/nginx.conf`` over ours' web root
with the daemon stopped (the static upper bound of the warm phases).
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yarl import URL

from bench.corpus import BIG_PROJECT, LARGE_PROJECT, SMALL_PROJECT
from bench.fake import Upstream
from bench.load import FILE_HEADERS, PIP_PAGE_HEADERS, LoadResult, get_json, run_load, run_wrk
from bench.servers import (
    Server,
    ServerError,
    current_rss,
    peak_rss,
    start_devpi,
    start_nginx,
    start_ours,
    start_proxpi,
)

#: warm phase → (which URLs, request headers)
WARM_PHASES: dict[str, tuple[str, dict[str, str]]] = {
    "warm_files": ("files", FILE_HEADERS),
    "warm_100k": ("small", FILE_HEADERS),
    "warm_20m": ("large", FILE_HEADERS),
    "warm_pages": ("pages", PIP_PAGE_HEADERS),
}
#: what the ``[serve] workers = N`` runs of ours measure
VARIANT_PHASES = ("warm_pages", "warm_100k")


@dataclass(frozen=True)
class PullOptions:
    peers: tuple[str, ...]
    worker_variants: tuple[int, ...]
    cold_concurrency: int
    warm_concurrency: int
    wrk_threads: int
    warm_seconds: float
    warm_max_requests: int
    repeat: int
    single_flight: int
    phase_deadline_s: float
    proxpi_threads: int
    nginx_workers: int
    loader: str
    work: Path


#: URL groups on one server: "pages", "files", "small", "large"
Urls = dict[str, list[str]]


async def discover_files(server: Server, upstream: Upstream) -> dict[str, str]:
    """filename → absolute URL on ``server``, read from its own (cached) JSON pages."""
    urls: dict[str, str] = {}
    sem = asyncio.Semaphore(8)

    async def one(project: str) -> None:
        page_url = server.index_url + project + "/"
        async with sem:
            page = await get_json(page_url, PIP_PAGE_HEADERS)
        assert isinstance(page, dict), page_url
        for entry in page.get("files", []):
            urls[entry["filename"]] = str(URL(page_url).join(URL(entry["url"])))

    await asyncio.gather(*(one(p) for p in upstream.pull_projects))
    wanted = {f["filename"] for p in upstream.pull_projects for f in upstream.files_of(p)}
    missing = wanted - set(urls)
    if missing:
        raise ServerError(f"{server.name} pages lack {len(missing)} files, e.g. {min(missing)}")
    return urls


def warm_order(urls: list[str]) -> list[str]:
    """A fixed shuffle, so every peer sees the same request sequence."""
    ordered = sorted(urls)
    random.Random(1).shuffle(ordered)
    return ordered


def rebase(urls: Urls, old: str, new: str) -> Urls:
    return {k: [u.replace(old, new, 1) for u in v] for k, v in urls.items()}


async def measure_proxy(
    server: Server, upstream: Upstream, opts: PullOptions
) -> tuple[dict[str, Any], Urls]:
    """Every phase on one pull-through proxy that starts with an empty cache; also returns
    the URLs it was measured with."""
    out: dict[str, Any] = {"notes": server.notes}
    rss_after: dict[str, int] = {}
    page_urls = [server.index_url + p + "/" for p in upstream.corpus_projects]
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

    def named(*projects: str) -> list[str]:
        return [by_name[f["filename"]] for p in projects for f in upstream.files_of(p)]

    urls: Urls = {
        "pages": page_urls,
        "files": named(*upstream.corpus_projects),
        "small": named(SMALL_PROJECT),
        "large": named(LARGE_PROJECT),
    }
    cold_urls = urls["files"] + urls["small"] + urls["large"]
    expected = {u: sha[URL(u).name] for u in cold_urls}
    cold = await run_load(
        cold_urls,
        total=len(cold_urls),
        concurrency=opts.cold_concurrency,
        headers=FILE_HEADERS,
        deadline_s=deadline,
        expected_sha256=expected,
    )
    out["cold_files"] = cold.summary()
    rss_after["cold"] = current_rss(server.pid)
    out.update(await measure_warm(urls, WARM_PHASES, opts, server.pid, rss_after))

    big = upstream.files_of(BIG_PROJECT)[0]
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
    rss_after["single_flight"] = current_rss(server.pid)
    out["rss_after"] = rss_after
    out["memory"] = peak_rss(server.pid)
    return out, urls


async def measure_warm(
    urls: Urls,
    phases: dict[str, tuple[str, dict[str, str]]] | tuple[str, ...],
    opts: PullOptions,
    pid: int | None = None,
    rss_after: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Warm phases against cached URLs, each ``opts.repeat`` times for ``warm_seconds``;
    the best rate is reported (others only slow a run down on a shared machine), all kept."""
    out: dict[str, Any] = {}
    for phase in phases:
        group, headers = WARM_PHASES[phase]
        ordered = warm_order(urls[group])
        if not ordered:
            continue
        runs: list[LoadResult] = []
        for _ in range(max(1, opts.repeat)):
            if opts.loader == "wrk":
                result = await run_wrk(
                    ordered,
                    total=opts.warm_max_requests,
                    concurrency=opts.warm_concurrency,
                    headers=headers,
                    deadline_s=opts.warm_seconds,
                    script_dir=opts.work,
                    threads=opts.wrk_threads,
                )
            else:
                result = await run_load(
                    ordered,
                    total=opts.warm_max_requests,
                    concurrency=opts.warm_concurrency,
                    headers=headers,
                    deadline_s=opts.warm_seconds,
                )
            runs.append(result)
        best = max(runs, key=lambda r: r.req_per_s)
        out[phase] = {
            **best.summary(),
            "repeats": len(runs),
            "req_per_s_all": [round(r.req_per_s, 2) for r in runs],
            "mb_per_s_all": [round(r.mb_per_s, 2) for r in runs],
        }
        if pid is not None and rss_after is not None:
            rss_after[phase] = current_rss(pid)
    return out


async def measure_nginx(ours: Server, urls: Urls, opts: PullOptions) -> dict[str, Any]:
    """Warm phases through nginx over ours' web root. Ours is already stopped, so a request
    nginx cannot serve statically fails (502) instead of quietly reaching the daemon."""
    web_root = Path(str(ours.notes["web_root"]))
    nginx = await start_nginx(
        opts.work, web_root, int(str(ours.notes["port"])), workers=opts.nginx_workers
    )
    try:
        out: dict[str, Any] = {"notes": nginx.notes}
        rss_after: dict[str, int] = {}
        mine = rebase(urls, ours.base_url, nginx.base_url)
        out.update(await measure_warm(mine, WARM_PHASES, opts, nginx.pid, rss_after))
        out["rss_after"] = rss_after
        out["memory"] = peak_rss(nginx.pid)
        return out
    finally:
        await nginx.stop()


async def measure_variant(
    workers: int, ours: Server, upstream: Upstream, urls: Urls, opts: PullOptions
) -> dict[str, Any]:
    """Ours again over the storage root the first run filled, with ``[serve] workers``:
    one untimed pass over the pages and the 100 KB files, then the warm phases."""
    name = f"ours-w{workers}"
    server = await start_ours(
        opts.work,
        upstream.url,
        name=name,
        data=Path(str(ours.notes["web_root"])).parent,
        serve={"workers": workers},
    )
    try:
        mine = rebase(urls, ours.base_url, server.base_url)
        for group, headers in (("pages", PIP_PAGE_HEADERS), ("small", FILE_HEADERS)):
            await run_load(
                mine[group],
                total=2 * len(mine[group]),
                concurrency=opts.cold_concurrency,
                headers=headers,
                deadline_s=opts.phase_deadline_s,
            )
        out: dict[str, Any] = {"notes": server.notes}
        rss_after: dict[str, int] = {}
        out.update(await measure_warm(mine, VARIANT_PHASES, opts, server.pid, rss_after))
        out["rss_after"] = rss_after
        out["memory"] = peak_rss(server.pid)
        return out
    except BaseException:
        print(f"[bench] {name} failed; log tail:\n{server.log_tail()}", file=sys.stderr)
        raise
    finally:
        await server.stop()


async def run_peer(
    name: str, start: Callable[[], Awaitable[Server]], upstream: Upstream, opts: PullOptions
) -> tuple[dict[str, Any], Urls, Server]:
    """Start one proxy, measure it, stop it."""
    print(f"[bench] pull-through {name}: starting", flush=True)
    server = await start()
    try:
        t0 = time.perf_counter()
        result, urls = await measure_proxy(server, upstream, opts)
        print(f"[bench] pull-through {name}: measured in {time.perf_counter() - t0:.1f}s")
    except BaseException:
        print(f"[bench] {name} failed; log tail:\n{server.log_tail()}", file=sys.stderr)
        raise
    finally:
        await server.stop()
    return result, urls, server


def not_measured(name: str, exc: BaseException) -> dict[str, Any]:
    """Report a peer or phase that failed; its entry in the results says why."""
    lines = [ln for ln in str(exc).splitlines() if ln.strip()]
    detail = lines[0] if lines else ""
    # A daemon that refused its configuration says so on a later line: keep that one.
    for line in lines:
        if "config" in line.lower() or "unknown key" in line.lower():
            detail = line.strip()
            break
    print(f"[bench] {name}: not measured: {type(exc).__name__}: {detail}", file=sys.stderr)
    return {"error": f"{type(exc).__name__}: {detail[:300]}"}


async def pull_phase(upstream: Upstream, opts: PullOptions) -> dict[str, Any]:
    """Every selected peer against one upstream; the raw results by peer."""
    results: dict[str, Any] = {}
    work = opts.work
    if "ours" in opts.peers:
        try:
            results["ours"], urls, ours = await run_peer(
                "ours", lambda: start_ours(work, upstream.url), upstream, opts
            )
        except Exception as exc:  # a peer failing must not lose the others' numbers
            results["ours"] = not_measured("ours", exc)
        else:
            for n in opts.worker_variants:
                name = f"ours-w{n}"
                print(f"[bench] pull-through {name}: [serve] workers = {n}", flush=True)
                try:
                    results[name] = await measure_variant(n, ours, upstream, urls, opts)
                except Exception as exc:  # a peer failing must not lose the others' numbers
                    results[name] = not_measured(name, exc)
            if "nginx" in opts.peers:
                print("[bench] pull-through nginx: static upper bound, daemon stopped")
                try:
                    results["nginx"] = await measure_nginx(ours, urls, opts)
                except Exception as exc:  # a peer failing must not lose the others' numbers
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
    return results
