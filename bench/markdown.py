"""``bench/RESULTS.md``: one run's document (``bench/results/latest.json``) as Markdown —
machine, versions, the targets (met / MISSED) and every table."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bench import report


def _versions(versions: Mapping[str, str]) -> str:
    order = [
        "python",
        "aiohttp",
        "pypi-mirror",
        "nginx",
        "wrk",
        "proxpi",
        "gunicorn",
        "devpi-server",
        "bandersnatch",
        "pip",
        "uv",
    ]
    names = [n for n in order if versions.get(n)] + sorted(
        n for n in versions if n not in order and versions[n]
    )
    return ", ".join(f"{n} {versions[n]}" for n in names)


def _machine(meta: Mapping[str, Any]) -> list[str]:
    machine = meta.get("machine", {})
    load = meta.get("loadavg_before") or []
    after = meta.get("loadavg_after") or []
    lines = [
        f"- Machine: {machine.get('cpus')} cores ({machine.get('cpu_model', '?')}), "
        f"{machine.get('memory_gib', '?')} GiB, {machine.get('system', '?')}; load average "
        f"(1, 5, 15 min) {', '.join(map(str, load))} at the start, "
        f"{', '.join(map(str, after))} at the end. The load generators (wrk, pip, uv, the "
        "fake upstream) share the cores with the server measured."
        + (
            " The machine was busy with other work when the run started (load average above "
            "half the cores): figures are noisy, ratios less so (peers ran in the same "
            "conditions, one after the other)."
            if load and machine.get("cpus") and load[0] > 0.5 * machine["cpus"]
            else ""
        ),
        f"- Versions: {_versions(meta.get('versions', {}))}.",
    ]
    code = meta.get("code", {})
    if code:
        dirty = " — with uncommitted changes in mirror/" if code.get("mirror_dirty") else ""
        lines.append(f"- Code: commit {code.get('commit', '?')}{dirty}.")
    return lines


def _options(meta: Mapping[str, Any]) -> list[str]:
    o = meta.get("options", {})
    corpus = meta.get("corpus", {})
    sync = meta.get("sync_corpus", {})
    lines = []
    if corpus:
        lines.append(
            f"- Pull-through corpus: {corpus['projects']} projects x "
            f"{corpus['wheels_per_project']} wheels of {corpus['min_size'] / 1e3:.0f} KB-"
            f"{corpus['max_size'] / 1e6:.0f} MB, {corpus['small_files']} wheels of "
            f"{corpus['small_size'] / 1e3:.0f} KB, one of {corpus['large_size'] / 1e6:.0f} MB, "
            f"one of {corpus['big_size'] / 1e6:.0f} MB (single flight); "
            f"{corpus['install_projects']} installable projects x "
            f"{corpus['install_versions']} versions that depend on one another."
        )
    if o.get("warm_seconds") is not None:
        lines.append(
            f"- Warm phases: `wrk -t{o['wrk_threads']} -c{o['warm_concurrency']}` for "
            f"{o['warm_seconds']:g} s, best of {o['repeat']}, the same for every server; pages "
            "with pip's `Accept` (PEP 691 JSON first) and `Accept-Encoding: gzip`. nginx: "
            f"`deploy/nginx.conf`, {o['nginx_workers']} worker process(es), over ours' web root "
            f"with the daemon stopped. proxpi: gunicorn, 1 worker, {o['proxpi_threads']} threads. "
            "devpi: devpi-server defaults."
        )
    if o.get("install_repeat") is not None:
        lines.append(
            f"- Installs: best of {o['install_repeat']} per way and tool, a new proxy (empty "
            "cache) and a new venv each time."
        )
    if sync:
        lines.append(
            f"- Sync corpus: {sync['projects']} projects x {sync['wheels_per_project']} "
            f"wheel(s) of {sync['min_size'] / 1e3:.0f}-{sync['max_size'] / 1e3:.0f} KB plus "
            f"one of {sync['big_size'] / 1e6:.0f} MB; {o.get('sync_workers')} workers for both."
        )
    if o.get("scale_projects"):
        lines.append(
            f"- Scale: {', '.join(f'{n:,}' for n in o['scale_projects'])} generated projects, "
            f"{o.get('scale_files')} files listed per release and none kept "
            f"(`max-file-size = 1`); {o.get('scale_changed')} projects changed before the "
            "incremental sync."
        )
    return lines


def results_markdown(document: Mapping[str, Any]) -> str:
    meta = document["meta"]
    results = document["results"]
    minutes = float(meta.get("seconds", 0)) / 60
    out = [
        "# Benchmark results",
        "",
        f"Written by `make bench` (`{' '.join(['bench/run.py', *meta.get('argv', [])])}`)"
        f" on {meta.get('started')}; the whole run took {minutes:.1f} minutes. Every figure"
        " below comes from this one run, peers measured on the same machine in the same run; "
        "how each is measured: `bench/README.md`. Raw numbers: `bench/results/latest.json`.",
        "",
        *_machine(meta),
        *_options(meta),
        "",
        "## Targets",
        "",
        "Ratios of ours against a peer in this run (`bench/report.py`, `TARGETS`). Reported, "
        "never asserted.",
        "",
        report.render_markdown(report.target_rows(document.get("targets", [])), left=2),
    ]
    sections = [
        (
            "pull",
            "Pull-through",
            "Ours with `[serve] workers` unset (the default: one process per core, here 2, "
            "behind a supervisor), then with `workers = 1` and `= 2` over the storage the "
            "first run filled; the targets use the first. nginx serves ours' web root "
            "statically; proxpi and devpi fill their own caches. RSS of a process tree is the "
            "sum over its processes (pages shared after a fork count in each).",
        ),
        (
            "install",
            "Cold installs",
            "Seconds to install the 20 `bench-inst-NN` projects into a fresh venv with empty "
            "caches: straight from the fake upstream, through ours, through proxpi.",
        ),
        (
            "sync",
            "Sync: ours against bandersnatch",
            "Each in a fresh process into an empty directory, then again with nothing new "
            "upstream. Upstream requests counted by the fake.",
        ),
    ]
    for group, title, text in sections:
        rows = report.group_rows(results, group)
        if len(rows) > 1:
            out += ["", f"## {title}", "", text, "", report.render_markdown(rows)]
    rows = report.scale_rows(results)
    if rows:
        out += [
            "",
            "## Scale: metadata-only projects",
            "",
            "A generated upstream; pages list files, the sync keeps none. The last column is "
            "the largest count over the smallest: RSS should stay near 1.",
            "",
            report.render_markdown(rows),
        ]
    problems = report.problems(results) + [
        f"{phase}: {error}" for phase, error in (results.get("errors") or {}).items()
    ]
    out += ["", "## Anomalies", ""]
    out += [f"- {line}" for line in problems] if problems else ["None."]
    out += ["", report.LEGEND.replace("^", "↑").replace(" v ", " ↓ ") + ".", ""]
    return "\n".join(out)
