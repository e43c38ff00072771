"""The sync phase: ``pypi-mirror sync`` against bandersnatch on the same corpus, from the
same fake upstream, at the same worker count.

The corpus (``bench.corpus``: N small projects of W wheels plus one larger file) is
published by ``bench.upstream`` in its own process. Then, each in a fresh process as an
operator would run them, one after the other into empty directories:

- ours: ``python -m mirror sync -c CONFIG`` with ``[sync] workers = N`` (``file-workers``
  left at its default), then ``status --json``;
- bandersnatch: ``bandersnatch -c CONF mirror`` with ``workers = N`` (its maximum is 10),
  ``master = http://127.0.0.1:PORT`` with ``allow-non-https = true`` (bandersnatch refuses
  a plain-http master otherwise), ``api-method = xmlrpc`` (``list_packages_with_serial``,
  then ``/pypi/<p>/json`` per project and the files it lists — what the fake serves),
  ``json = true`` (it keeps the JSON API answers, as ours does), ``simple-format = ALL``,
  ``release-files = true``, ``stop-on-error = false``; no proxy variables in its
  environment, so nothing but 127.0.0.1 is contacted.

For each: wall time, files and bytes written under ``web/packages``, files/s, the upstream
requests the run made (by kind: the fake counts every request), peak RSS (``ru_maxrss``
from ``wait4``), exit code; then a second run with nothing new upstream (the cron steady
state), timed the same way.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.corpus import CorpusSpec
from bench.fake import Upstream, diff, start_upstream
from bench.procs import clean_env, command_output, run_measured
from bench.servers import PEERS_BIN, ours_config

BANDERSNATCH = PEERS_BIN / "bandersnatch"


@dataclass(frozen=True)
class SyncOptions:
    spec: CorpusSpec
    workers: int
    timeout_s: float
    tools: tuple[str, ...]
    work: Path


def bandersnatch_version() -> str:
    out = command_output([str(BANDERSNATCH), "--version"]) if BANDERSNATCH.exists() else ""
    return out.rsplit(" ", 1)[-1] if out else ""


def packages_held(web: Path) -> tuple[int, int]:
    """(files, bytes) under ``web/packages`` — distributions only, not ``.metadata``."""
    files = size = 0
    for dirpath, _dirs, names in os.walk(web / "packages"):
        for name in names:
            if name.endswith(".metadata"):
                continue
            files += 1
            size += (Path(dirpath) / name).stat().st_size
    return files, size


def bandersnatch_conf(path: Path, directory: Path, upstream_url: str, workers: int) -> Path:
    path.write_text(
        "\n".join(
            [
                "[mirror]",
                f"directory = {directory}",
                f"master = {upstream_url.rstrip('/')}",
                "allow-non-https = true",
                "api-method = xmlrpc",
                "json = true",
                "release-files = true",
                "simple-format = ALL",
                "hash-index = false",
                "storage-backend = filesystem",
                "compare-method = hash",
                "stop-on-error = false",
                f"workers = {min(workers, 10)}",
                "timeout = 30",
                "global-timeout = 3600",
                "",
            ]
        )
    )
    return path


async def _timed_run(
    argv: list[str], upstream: Upstream, log: Path, opts: SyncOptions
) -> dict[str, Any]:
    before = await upstream.stats()
    done = await run_measured(argv, log, env=clean_env(), timeout_s=opts.timeout_s)
    requests = diff(await upstream.stats(), before)
    out: dict[str, Any] = {
        "exit": done.code,
        "timed_out": done.timed_out,
        "seconds": round(done.seconds, 3),
        "peak_rss": done.peak_rss,
        "upstream_requests": requests.get("total", 0),
        "requests_by_kind": requests,
    }
    if done.code != 0:
        out["tail"] = done.tail(8)
    return out


async def sync_tool(tool: str, upstream: Upstream, opts: SyncOptions) -> dict[str, Any]:
    """A full sync and a no-op re-sync with ``tool`` ("ours" or "bandersnatch")."""
    root = opts.work / f"sync-{tool}"
    logs = opts.work / "logs"
    if tool == "ours":
        config = ours_config(
            opts.work / "sync-ours.toml",
            root,
            upstream.url,
            sync={"workers": opts.workers},
        )
        argv = [sys.executable, "-m", "mirror", "sync", "-c", str(config)]
        workers = opts.workers
    else:
        if not BANDERSNATCH.exists():
            return {"error": f"{BANDERSNATCH} missing: `make bench` installs the peers"}
        conf = bandersnatch_conf(opts.work / "bandersnatch.conf", root, upstream.url, opts.workers)
        argv = [str(BANDERSNATCH), "-c", str(conf), "mirror"]
        workers = min(opts.workers, 10)
    root.mkdir(parents=True, exist_ok=True)
    full = await _timed_run(argv, upstream, logs / f"sync-{tool}-full.log", opts)
    files, size = packages_held(root / "web")
    seconds = full["seconds"] or 1e-9
    full.update(
        files=files,
        bytes=size,
        files_expected=upstream.file_count,
        files_per_s=round(files / seconds, 2),
        mb_per_s=round(size / 1e6 / seconds, 2),
        workers=workers,
    )
    noop = await _timed_run(argv, upstream, logs / f"sync-{tool}-noop.log", opts)
    return {"full": full, "noop": noop}


async def sync_phase(opts: SyncOptions) -> dict[str, Any]:
    """Both tools against one upstream; {tool: {"full": ..., "noop": ...}}."""
    spec = opts.spec
    print(
        f"[bench] sync: publishing {spec.projects} projects x {spec.wheels_per_project} "
        f"wheels + one {spec.big_size / 1e6:.0f} MB file",
        flush=True,
    )
    upstream = await start_upstream(opts.work, spec, name="sync-upstream")
    results: dict[str, Any] = {}
    try:
        for tool in opts.tools:
            print(f"[bench] sync: {tool}, {opts.workers} workers", flush=True)
            try:
                results[tool] = await sync_tool(tool, upstream, opts)
            except Exception as exc:  # one tool failing must not lose the other's numbers
                results[tool] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
            full = results[tool].get("full", {})
            if full:
                print(
                    f"[bench] sync: {tool}: exit {full['exit']}, {full['files']} files in "
                    f"{full['seconds']:.2f}s, {full['upstream_requests']} upstream requests, "
                    f"peak RSS {full['peak_rss'] / 1e6:.1f} MB",
                    flush=True,
                )
    finally:
        await upstream.stop()
    return results
