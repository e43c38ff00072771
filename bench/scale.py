"""The scale phase: ours over a generated upstream of N metadata-only projects, at several N
(10,000 and 100,000 by default), to show what grows with the project count and what must
not (RSS).

For each N, ``bench.scale_upstream`` (its own process) generates N projects whose pages
list files (a pure wheel and an sdist per release); the sync keeps none of them
(``[sync] max-file-size = 1``: every listed file is larger), so what is measured is the
per-project cost — two upstream requests (page, JSON API), the pages, the JSON API answer
and the state record written — not downloads. Measured, each in a fresh process:

1. full sync into an empty storage root (``[sync] workers`` as in the sync phase):
   wall time, projects/s, peak RSS (``wait4``), upstream requests;
2. bytes per project: ``web/simple/<p>/`` (each inode once: ``index.v1_html`` is a hard
   link), ``web/pypi/<p>/`` (the JSON API), and ``state/`` divided by N — apparent size and
   blocks on disk;
3. incremental sync after ``changed`` projects got a new release upstream: wall time, peak
   RSS, upstream requests;
4. ``serve`` over the synced tree (same config, ``[sync] mode = "mirror"`` as documented
   for a tree that ``sync`` keeps): seconds from spawn to the first 200 on ``/health``, RSS
   of the process tree then, and after ``pages`` requests for random project pages.

The storage root is deleted after each N (100,000 projects take a few GB).
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.fake import diff
from bench.load import PIP_PAGE_HEADERS, post_json, run_load
from bench.procs import clean_env, python_module, run_measured, start_with_manifest, stop_process
from bench.servers import current_rss, ours_config, peak_rss, start_ours


@dataclass(frozen=True)
class ScaleOptions:
    counts: tuple[int, ...]
    files_per_release: int
    workers: int
    changed: int
    pages: int
    work: Path


def _sync_keys(opts: ScaleOptions) -> dict[str, object]:
    return {"workers": opts.workers, "max-file-size": 1, "mode": "mirror"}


def _walk_sizes(top: Path) -> tuple[int, int, int]:
    """(apparent bytes, bytes in blocks, files) under ``top``; each inode once."""
    seen: set[tuple[int, int]] = set()
    size = blocks = files = 0
    for dirpath, _dirs, names in os.walk(top):
        for name in names:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1:
                if key in seen:
                    continue
                seen.add(key)
            size += st.st_size
            blocks += st.st_blocks * 512
            files += 1
    return size, blocks, files


def _project_dirs_sizes(top: Path) -> tuple[int, int, int, int]:
    """Over every project directory below ``top`` (files directly in ``top`` — the root
    pages — left out): (projects, apparent bytes, bytes in blocks, files)."""
    projects = size = blocks = files = 0
    with os.scandir(top) as entries:
        for entry in entries:
            if not entry.is_dir(follow_symlinks=False):
                continue
            projects += 1
            s, b, f = _walk_sizes(Path(entry.path))
            size, blocks, files = size + s, blocks + b, files + f
    return projects, size, blocks, files


def measure_bytes(root: Path, n: int) -> dict[str, Any]:
    """Page, JSON API and state bytes per project of a synced storage root."""
    out: dict[str, Any] = {}
    for key, top in (("simple", root / "web" / "simple"), ("json_api", root / "web" / "pypi")):
        if not top.is_dir():
            continue
        projects, size, blocks, files = _project_dirs_sizes(top)
        out[key] = {
            "projects": projects,
            "bytes": size,
            "disk_bytes": blocks,
            "files": files,
            "per_project": round(size / max(projects, 1), 1),
            "disk_per_project": round(blocks / max(projects, 1), 1),
        }
    state = root / "state"
    size, blocks, files = _walk_sizes(state)
    parts = {}
    if state.is_dir():
        for child in sorted(state.iterdir()):
            if child.is_dir():
                parts[child.name] = _walk_sizes(child)[0]
    out["state"] = {
        "bytes": size,
        "disk_bytes": blocks,
        "files": files,
        "per_project": round(size / max(n, 1), 1),
        "disk_per_project": round(blocks / max(n, 1), 1),
        "by_dir": parts,
    }
    return out


async def _stats(url: str) -> dict[str, int]:
    answer = await post_json(url + "_bench/stats", {})
    assert isinstance(answer, dict)
    return {str(k): int(v) for k, v in answer.items()}


async def _sync(
    config: Path, url: str, log: Path, timeout_s: float, projects: int
) -> dict[str, Any]:
    before = await _stats(url)
    done = await run_measured(
        [sys.executable, "-m", "mirror", "sync", "-c", str(config)],
        log,
        env=clean_env(),
        timeout_s=timeout_s,
    )
    requests = diff(await _stats(url), before)
    out: dict[str, Any] = {
        "exit": done.code,
        "timed_out": done.timed_out,
        "seconds": round(done.seconds, 3),
        "peak_rss": done.peak_rss,
        "projects": projects,
        "projects_per_s": round(projects / max(done.seconds, 1e-9), 1),
        "upstream_requests": requests.get("total", 0),
        "requests_by_kind": requests,
    }
    if done.code != 0:
        out["tail"] = done.tail(8)
    return out


async def _serve(n: int, url: str, root: Path, opts: ScaleOptions) -> dict[str, Any]:
    name = f"scale-serve-{n}"
    started = time.perf_counter()
    server = await start_ours(
        opts.work, url, name=name, data=root, sync=_sync_keys(opts), timeout_s=300
    )
    ready = time.perf_counter() - started
    try:
        rss_ready = current_rss(server.pid)
        hwm_ready = peak_rss(server.pid)
        names = [f"scale-{i:0{max(6, len(str(n - 1)))}d}" for i in range(n)]
        picked = random.Random(n).sample(names, min(opts.pages, n))
        load = await run_load(
            [server.index_url + p + "/" for p in picked],
            total=len(picked),
            concurrency=16,
            headers=PIP_PAGE_HEADERS,
            deadline_s=120,
        )
        return {
            "startup_s": round(ready, 3),
            "rss_ready": rss_ready,
            "largest_ready": hwm_ready["largest"],
            "processes": len(procs) if isinstance(procs := hwm_ready["processes"], dict) else 0,
            "pages": load.summary(),
            "rss_after_pages": current_rss(server.pid),
            "peak_rss": peak_rss(server.pid)["total"],
        }
    finally:
        await server.stop()


async def scale_one(n: int, opts: ScaleOptions) -> dict[str, Any]:
    """Everything above at one project count."""
    work = opts.work
    manifest = work / f"scale-{n}.json"
    proc, info = await start_with_manifest(
        python_module(
            "bench.scale_upstream",
            "--projects",
            str(n),
            "--files",
            str(opts.files_per_release),
            "--manifest",
            str(manifest),
        ),
        manifest,
        work / "logs" / f"scale-upstream-{n}.log",
        timeout_s=60,
    )
    url = str(info["url"])
    root = work / f"scale-{n}-data"
    config = ours_config(work / f"scale-{n}.toml", root, url, sync=_sync_keys(opts))
    timeout_s = 300 + n / 25
    out: dict[str, Any] = {"projects": n}
    try:
        print(f"[bench] scale {n:,}: full sync", flush=True)
        out["full_sync"] = await _sync(
            config, url, work / "logs" / f"scale-{n}-full.log", timeout_s, n
        )
        print(
            f"[bench] scale {n:,}: full sync exit {out['full_sync']['exit']} in "
            f"{out['full_sync']['seconds']:.1f}s, peak RSS "
            f"{out['full_sync']['peak_rss'] / 1e6:.1f} MB",
            flush=True,
        )
        out["bytes"] = await asyncio.to_thread(measure_bytes, root, n)
        bumped = await post_json(url + "_bench/bump", {"count": opts.changed})
        assert isinstance(bumped, dict)
        out["incremental_sync"] = await _sync(
            config, url, work / "logs" / f"scale-{n}-incremental.log", 300, len(bumped["bumped"])
        )
        out["incremental_sync"]["changed"] = len(bumped["bumped"])
        print(f"[bench] scale {n:,}: serve over the synced tree", flush=True)
        out["serve"] = await _serve(n, url, root, opts)
    finally:
        await stop_process(proc)
        await asyncio.to_thread(shutil.rmtree, root, True)
    return out


def growth(per_count: dict[str, Any]) -> dict[str, Any]:
    """RSS at the largest N over RSS at the smallest: 1.0 means it did not grow."""
    measured = sorted(
        (v for v in per_count.values() if isinstance(v, dict) and "projects" in v),
        key=lambda v: v["projects"],
    )
    if len(measured) < 2:
        return {}
    lo, hi = measured[0], measured[-1]

    def ratio(*path: str) -> float | None:
        a: Any = hi
        b: Any = lo
        for key in path:
            a = a.get(key) if isinstance(a, dict) else None
            b = b.get(key) if isinstance(b, dict) else None
        if not isinstance(a, int | float) or not isinstance(b, int | float) or not b:
            return None
        return round(a / b, 3)

    return {
        "from": lo["projects"],
        "to": hi["projects"],
        "full_sync_peak_rss": ratio("full_sync", "peak_rss"),
        "incremental_sync_peak_rss": ratio("incremental_sync", "peak_rss"),
        "serve_rss_ready": ratio("serve", "rss_ready"),
        "serve_rss_after_pages": ratio("serve", "rss_after_pages"),
        "full_sync_seconds": ratio("full_sync", "seconds"),
    }


async def scale_phase(opts: ScaleOptions) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for n in sorted(set(opts.counts)):
        try:
            results[str(n)] = await scale_one(n, opts)
        except Exception as exc:  # one count failing must not lose the others
            print(f"[bench] scale {n:,}: not measured: {exc!r}", file=sys.stderr)
            results[str(n)] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
    results["growth"] = growth(results)
    return results
