"""The benchmark: ours against peers, every figure measured in the same run.

Phases (``--phases``), each against a fake PyPI in its own process on 127.0.0.1:

- ``pull`` (``bench.pullthrough``): ours, nginx, proxpi and devpi as pull-through caches of
  one deterministic corpus — cold, warm (mixed files, 100 KB, 20 MB, pages), single
  flight, memory; ours again with ``[serve] workers = 1`` and ``= 2``;
- ``install`` (``bench.install``): cold ``pip install`` and ``uv pip install`` of 20
  packages, straight from the upstream, through ours and through proxpi;
- ``sync`` (``bench.sync``): ``pypi-mirror sync`` against bandersnatch on one corpus;
- ``scale`` (``bench.scale``): sync and serve over 10,000 and 100,000 generated
  metadata-only projects.

It prints the tables with ratios and the targets of ``bench.report``, writes the raw
numbers to ``bench/results/latest.json`` and, for a full run, ``bench/RESULTS.md``.
Nothing is asserted; all traffic stays on 127.0.0.1; every loop is bounded in count and
every wait in time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import report
from bench.corpus import CorpusSpec
from bench.fake import start_upstream
from bench.install import WAYS as INSTALL_WAYS
from bench.install import InstallOptions, install_phase, pip_version, uv_version
from bench.load import WRK
from bench.markdown import results_markdown
from bench.procs import REPO, BenchError, command_output
from bench.pullthrough import PullOptions, pull_phase
from bench.scale import ScaleOptions, scale_phase
from bench.servers import NGINX, PEERS_BIN
from bench.sync import SyncOptions, bandersnatch_version, sync_phase

ALL_PEERS = ("ours", "nginx", "proxpi", "devpi")
ALL_PHASES = ("pull", "install", "sync", "scale")
RESULTS_MD = REPO / "bench" / "RESULTS.md"


@dataclass(frozen=True)
class Options:
    """Knobs of one run (see ``--help``)."""

    phases: tuple[str, ...]
    peers: tuple[str, ...]
    quick: bool
    spec: CorpusSpec
    worker_variants: tuple[int, ...]
    warm_seconds: float
    warm_concurrency: int
    wrk_threads: int
    warm_max_requests: int
    repeat: int
    single_flight: int
    phase_deadline_s: float
    total_deadline_s: float
    proxpi_threads: int
    nginx_workers: int
    install_ways: tuple[str, ...]
    install_repeat: int
    sync_spec: CorpusSpec
    sync_workers: int
    scale_projects: tuple[int, ...]
    scale_files: int
    scale_changed: int
    scale_pages: int
    out: Path
    results_md: Path | None
    keep: bool
    loader: str
    from_json: Path | None = None


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x.replace("_", "")) for x in text.split(",") if x.strip())


def _names(text: str, allowed: tuple[str, ...], parser: argparse.ArgumentParser) -> tuple[str, ...]:
    names = tuple(p.strip() for p in text.split(",") if p.strip())
    unknown = set(names) - set(allowed)
    if unknown:
        parser.error(f"unknown: {', '.join(sorted(unknown))} (known: {', '.join(allowed)})")
    return names


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="bench/run.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    add("--phases", default=",".join(ALL_PHASES), help="subset of " + ",".join(ALL_PHASES))
    add("--peers", default=",".join(ALL_PEERS), help="pull-through peers: " + ",".join(ALL_PEERS))
    add("--quick", action="store_true", help="small corpora, short phases (a smoke run)")
    add("--projects", type=int, default=CorpusSpec.projects, help="pull-through corpus")
    add("--worker-variants", default="1,2", help="[serve] workers of ours' extra runs")
    add("--warm-seconds", type=float, default=4.0, help="length of one warm run")
    add("--warm-concurrency", type=int, default=64, help="connections of every warm run")
    add("--wrk-threads", type=int, default=2)
    add("--warm-max-requests", type=int, default=1_000_000, help="cap of one warm run")
    add("--repeat", type=int, default=3, help="runs of each warm phase (the best is reported)")
    add("--single-flight", type=int, default=50, help="concurrent clients on one uncached file")
    add("--phase-deadline", type=float, default=120.0, help="cap of a cold phase, s")
    add("--total-deadline", type=float, default=4 * 3600.0, help="cap of the whole run, s")
    add("--proxpi-threads", type=int, default=8, help="gunicorn threads (its image uses 2)")
    add("--nginx-workers", type=int, default=1, help="nginx worker_processes")
    add("--install-ways", default=",".join(INSTALL_WAYS))
    add("--install-repeat", type=int, default=3, help="installs per way and tool (best kept)")
    add("--sync-projects", type=int, default=300)
    add("--sync-wheels", type=int, default=1, help="wheels per project of the sync corpus")
    add("--sync-workers", type=int, default=10, help="[sync] workers, bandersnatch workers")
    add("--scale-projects", default="10000,100000", help="project counts of the scale phase")
    add("--scale-files", type=int, default=2, help="files listed per release")
    add("--scale-changed", type=int, default=10, help="projects changed before the incremental")
    add("--scale-pages", type=int, default=2000, help="random pages asked of serve")
    add("--out", type=Path, default=REPO / "bench" / "results" / "latest.json")
    add(
        "--results-md",
        type=Path,
        default=None,
        help="default: bench/RESULTS.md after a full run, bench/results/RESULTS.partial.md "
        "after a quick or partial one",
    )
    add(
        "--from-json",
        type=Path,
        default=None,
        help="measure nothing: print the tables of a saved run (latest.json) and write its "
        "Markdown (--results-md, default bench/results/RESULTS.partial.md)",
    )
    add("--keep", action="store_true", help="keep the temporary work dir")
    add("--loader", choices=("auto", "wrk", "aiohttp"), default="auto")
    args = parser.parse_args(argv)

    loader = ("wrk" if WRK else "aiohttp") if args.loader == "auto" else args.loader
    if loader == "wrk" and WRK is None:
        parser.error("wrk is not installed (make bench installs it with apt-get as root)")
    phases = _names(args.phases, ALL_PHASES, parser)
    peers = _names(args.peers, ALL_PEERS, parser)
    if "nginx" in peers and "ours" not in peers:
        parser.error("nginx serves ours' web root: it needs ours in --peers")
    install_ways = _names(args.install_ways, INSTALL_WAYS, parser)
    spec = CorpusSpec(projects=args.projects)
    sync_spec = CorpusSpec(
        projects=args.sync_projects,
        wheels_per_project=args.sync_wheels,
        min_size=2_000,
        max_size=40_000,
        big_size=2_000_000,
        small_files=0,
        large_size=0,
        install_projects=0,
    )
    scale = _ints(args.scale_projects)
    warm_seconds, repeat, install_repeat = args.warm_seconds, args.repeat, args.install_repeat
    if args.quick:
        spec = CorpusSpec(projects=min(args.projects, 8), small_files=4, large_size=5_000_000)
        sync_spec = CorpusSpec(**{**asdict(sync_spec), "projects": min(args.sync_projects, 30)})
        warm_seconds, repeat, install_repeat = min(warm_seconds, 1.0), 1, 1
        scale = (500, 2_000) if scale else ()
    results_md = args.results_md
    if results_md is None:
        full = set(phases) == set(ALL_PHASES) and set(peers) == set(ALL_PEERS)
        results_md = (
            RESULTS_MD
            if full and not args.quick and args.from_json is None
            else REPO / "bench" / "results" / "RESULTS.partial.md"
        )
    return Options(
        phases=phases,
        peers=peers,
        quick=args.quick,
        spec=spec,
        worker_variants=_ints(args.worker_variants) if "ours" in peers else (),
        warm_seconds=warm_seconds,
        warm_concurrency=args.warm_concurrency,
        wrk_threads=args.wrk_threads,
        warm_max_requests=args.warm_max_requests,
        repeat=repeat,
        single_flight=args.single_flight,
        phase_deadline_s=args.phase_deadline,
        total_deadline_s=args.total_deadline,
        proxpi_threads=args.proxpi_threads,
        nginx_workers=args.nginx_workers,
        install_ways=install_ways,
        install_repeat=install_repeat,
        sync_spec=sync_spec,
        sync_workers=args.sync_workers,
        scale_projects=scale,
        scale_files=args.scale_files,
        scale_changed=args.scale_changed,
        scale_pages=args.scale_pages,
        out=args.out,
        results_md=results_md,
        keep=args.keep,
        loader=loader,
        from_json=args.from_json,
    )


# -- the run ------------------------------------------------------------------------------


async def bench(opts: Options, work: Path) -> dict[str, Any]:
    """Every selected phase; the raw results by phase."""
    results: dict[str, Any] = {"errors": {}}
    if {"pull", "install"} & set(opts.phases):
        spec = opts.spec
        print(
            f"[bench] building and publishing the corpus ({spec.projects} projects x "
            f"{spec.wheels_per_project} wheels, {spec.small_files} x 100 KB, 20 MB, 5 MB, "
            f"{spec.install_projects} installable projects)",
            flush=True,
        )
        try:
            upstream = await start_upstream(work, spec)
        except BenchError as exc:
            results["errors"]["pull"] = results["errors"]["install"] = str(exc)[:500]
        else:
            try:
                if "pull" in opts.phases:
                    results["pull"] = await pull_phase(upstream, _pull_options(opts, work))
                if "install" in opts.phases:
                    results["install"] = await install_phase(
                        upstream,
                        InstallOptions(
                            ways=opts.install_ways,
                            repeat=opts.install_repeat,
                            proxpi_threads=opts.proxpi_threads,
                            timeout_s=600,
                            work=work,
                        ),
                    )
            finally:
                await upstream.stop()
    if "sync" in opts.phases:
        try:
            results["sync"] = await sync_phase(
                SyncOptions(
                    spec=opts.sync_spec,
                    workers=opts.sync_workers,
                    timeout_s=1800,
                    tools=("ours", "bandersnatch"),
                    work=work,
                )
            )
        except BenchError as exc:
            results["errors"]["sync"] = str(exc)[:500]
    if "scale" in opts.phases and opts.scale_projects:
        results["scale"] = await scale_phase(
            ScaleOptions(
                counts=opts.scale_projects,
                files_per_release=opts.scale_files,
                workers=opts.sync_workers,
                changed=opts.scale_changed,
                pages=opts.scale_pages,
                work=work,
            )
        )
    if not results["errors"]:
        del results["errors"]
    return results


def _pull_options(opts: Options, work: Path) -> PullOptions:
    return PullOptions(
        peers=opts.peers,
        worker_variants=opts.worker_variants,
        cold_concurrency=8,
        warm_concurrency=opts.warm_concurrency,
        wrk_threads=opts.wrk_threads,
        warm_seconds=opts.warm_seconds,
        warm_max_requests=opts.warm_max_requests,
        repeat=opts.repeat,
        single_flight=opts.single_flight,
        phase_deadline_s=opts.phase_deadline_s,
        proxpi_threads=opts.proxpi_threads,
        nginx_workers=opts.nginx_workers,
        loader=opts.loader,
        work=work,
    )


async def _bounded(opts: Options, work: Path) -> dict[str, Any]:
    """The whole run under the total deadline; SIGTERM cancels it (so servers get stopped)."""
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    async with asyncio.timeout(opts.total_deadline_s):
        return await bench(opts, work)


# -- what the run ran on ------------------------------------------------------------------


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "arch": platform.machine(),
        "system": f"{platform.system()} {platform.release()}",
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["memory_gib"] = round(int(line.split()[1]) / 1024**2, 1)
                break
    except OSError:
        pass
    return info


def versions() -> dict[str, str]:
    """Versions of everything measured or measuring (best effort: "" when unknown)."""
    out: dict[str, str] = {"python": platform.python_version()}
    for dist in ("aiohttp", "pypi-mirror"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[dist] = importlib.metadata.version(dist)
    python = PEERS_BIN / "python"
    if python.exists():
        code = (
            "import importlib.metadata as m\n"
            "for d in ('proxpi', 'gunicorn', 'devpi-server', 'bandersnatch'):\n"
            "    try: print(d, m.version(d))\n"
            "    except m.PackageNotFoundError: pass\n"
        )
        for line in command_output([str(python), "-c", code]).splitlines():
            dist, _, version = line.partition(" ")
            out[dist] = version
    if NGINX is not None:
        out["nginx"] = command_output([NGINX, "-v"]).rsplit("/", 1)[-1]
    if WRK is not None:
        first = command_output([WRK, "-v"]).splitlines()
        words = first[0].split() if first else []
        out["wrk"] = words[1].rsplit("/", 1)[-1] if len(words) > 1 else ""
    out["bandersnatch"] = out.get("bandersnatch") or bandersnatch_version()
    out["pip"] = pip_version()
    out["uv"] = uv_version().split(" ")[0]
    return {k: v for k, v in out.items() if v}


def code_state() -> dict[str, Any]:
    commit = command_output(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    dirty = command_output(["git", "-C", str(REPO), "status", "--porcelain", "--", "mirror"])
    return {"commit": commit, "mirror_dirty": bool(dirty.strip())}


# -- main ---------------------------------------------------------------------------------


def print_document(document: dict[str, Any], results_md: Path | None) -> None:
    """The tables, what is worth a look, the targets; and the Markdown file."""
    results = document["results"]
    print()
    print(report.render(results))
    problems = report.problems(results) + [
        f"{phase}: {error}" for phase, error in (results.get("errors") or {}).items()
    ]
    if problems:
        print("\nworth a look:\n" + "\n".join(f"  {line}" for line in problems))
    print("\ntargets (reported, not asserted):\n" + report.render_targets(document["targets"]))
    if results_md is not None:
        results_md.parent.mkdir(parents=True, exist_ok=True)
        results_md.write_text(results_markdown(document))
        print(f"\nwrote {results_md}")


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    if opts.from_json is not None:
        document = json.loads(opts.from_json.read_text())
        document["targets"] = report.check_targets(document["results"])
        document["ratios"] = report.ratios(document["results"])
        print_document(document, opts.results_md)
        return 0
    work = Path(tempfile.mkdtemp(prefix="pypi-mirror-bench-"))
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
    except (BenchError, TimeoutError) as exc:
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
    options = {
        k: (str(v) if isinstance(v, Path) else v)
        for k, v in asdict(opts).items()
        if k not in ("spec", "sync_spec")
    }
    document: dict[str, Any] = {
        "meta": {
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started)),
            "seconds": seconds,
            "argv": list(sys.argv[1:] if argv is None else argv),
            "loadavg_before": load_before,
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            "machine": machine(),
            "versions": versions(),
            "code": code_state(),
            "corpus": asdict(opts.spec) if {"pull", "install"} & set(opts.phases) else {},
            "sync_corpus": asdict(opts.sync_spec) if "sync" in opts.phases else {},
            "options": options,
        },
        "results": results,
        "ratios": report.ratios(results),
        "targets": checked,
    }
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    opts.out.write_text(json.dumps(document, indent=2) + "\n")
    print_document(document, opts.results_md)
    print(f"raw numbers: {opts.out} ({seconds}s)")
    return 0
