"""Turn the raw numbers into tables, ratios and target checks.

The raw results are grouped by phase: ``pull`` (peer → phase → numbers), ``install``
(way → tool → numbers), ``sync`` (tool → run → numbers) and ``scale`` (project count →
numbers). Speed and memory targets live here (``TARGETS``), as ratios of ours against a
peer measured in the same run. They are reported, never asserted: the bench always exits
0 when it ran, whatever the numbers.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Results = Mapping[str, Any]

MB = 1e-6


@dataclass(frozen=True)
class Metric:
    """One number per peer of a group, read out of that peer's raw results by ``path``."""

    key: str
    label: str
    higher_is_better: bool
    group: str
    path: tuple[str, ...]
    scale: float = 1.0
    #: Whether ours/peer of this metric means anything (not for exit codes, say).
    ratio: bool = True

    def value(self, results: Results, peer: str) -> float | None:
        node: Any = results.get(self.group, {})
        node = node.get(peer) if isinstance(node, Mapping) else None
        for key in self.path:
            if not isinstance(node, Mapping):
                return None
            node = node.get(key)
        if isinstance(node, bool) or not isinstance(node, int | float):
            return None
        return float(node) * self.scale


def _pull(key: str, label: str, better: bool, *path: str, scale: float = 1.0) -> Metric:
    return Metric(key, label, better, "pull", path, scale)


METRICS: list[Metric] = [
    _pull("cold_pages_s", "cold: 1st page fetches, s", False, "cold_pages", "seconds"),
    _pull("cold_files_s", "cold: 1st file fetches, s", False, "cold_files", "seconds"),
    _pull("cold_files_mb_s", "cold: files MB/s", True, "cold_files", "mb_per_s"),
    _pull("warm_files_rps", "warm files 0.2-2 MB: req/s", True, "warm_files", "req_per_s"),
    _pull("warm_files_mb_s", "warm files 0.2-2 MB: MB/s", True, "warm_files", "mb_per_s"),
    _pull("warm_files_p99", "warm files 0.2-2 MB: p99 ms", False, "warm_files", "p99_ms"),
    _pull("warm_100k_rps", "warm 100 KB file: req/s", True, "warm_100k", "req_per_s"),
    _pull("warm_100k_p99", "warm 100 KB file: p99 ms", False, "warm_100k", "p99_ms"),
    _pull("warm_20m_mb_s", "warm 20 MB file: MB/s", True, "warm_20m", "mb_per_s"),
    _pull("warm_20m_p99", "warm 20 MB file: p99 ms", False, "warm_20m", "p99_ms"),
    _pull("warm_pages_rps", "warm pages: req/s", True, "warm_pages", "req_per_s"),
    _pull("warm_pages_p50", "warm pages: p50 ms", False, "warm_pages", "p50_ms"),
    _pull("warm_pages_p99", "warm pages: p99 ms", False, "warm_pages", "p99_ms"),
    _pull("sf_upstream", "single flight: upstream GETs", False, "single_flight", "upstream_gets"),
    _pull("sf_seconds", "single flight: wall s", False, "single_flight", "seconds"),
    _pull("rss_after_100k", "RSS after warm 100 KB, MB", False, "rss_after", "warm_100k", scale=MB),
    _pull("rss_after_20m", "RSS after warm 20 MB, MB", False, "rss_after", "warm_20m", scale=MB),
    _pull("peak_rss_mb", "peak RSS, process tree, MB", False, "memory", "total", scale=MB),
    _pull("peak_rss_max_mb", "peak RSS, largest process, MB", False, "memory", "largest", scale=MB),
    Metric("install_pip_s", "cold `pip install`, s", False, "install", ("pip", "seconds")),
    Metric("install_uv_s", "cold `uv pip install`, s", False, "install", ("uv", "seconds")),
    Metric("sync_seconds", "full sync: wall s", False, "sync", ("full", "seconds")),
    Metric("sync_files", "full sync: files", True, "sync", ("full", "files"), ratio=False),
    Metric("sync_files_per_s", "full sync: files/s", True, "sync", ("full", "files_per_s")),
    Metric("sync_mb_per_s", "full sync: MB/s", True, "sync", ("full", "mb_per_s")),
    Metric(
        "sync_requests",
        "full sync: upstream requests",
        False,
        "sync",
        ("full", "upstream_requests"),
    ),
    Metric("sync_peak_rss", "full sync: peak RSS, MB", False, "sync", ("full", "peak_rss"), MB),
    Metric("sync_exit", "full sync: exit code", False, "sync", ("full", "exit"), ratio=False),
    Metric("sync_noop_s", "no-op re-sync: wall s", False, "sync", ("noop", "seconds")),
    Metric(
        "sync_noop_requests",
        "no-op re-sync: upstream requests",
        False,
        "sync",
        ("noop", "upstream_requests"),
    ),
    Metric("sync_noop_rss", "no-op re-sync: peak RSS, MB", False, "sync", ("noop", "peak_rss"), MB),
]
_BY_KEY = {m.key: m for m in METRICS}

#: Per group: the columns (peers) in order, and the ratios shown as (numerator, denominator).
GROUPS: dict[str, tuple[tuple[str, ...], tuple[tuple[str, str], ...]]] = {
    "pull": (
        ("ours", "ours-w1", "ours-w2", "nginx", "proxpi", "devpi"),
        (("ours", "nginx"), ("ours", "proxpi"), ("ours", "devpi")),
    ),
    "install": (("upstream", "ours", "proxpi"), (("ours", "upstream"), ("proxpi", "upstream"))),
    "sync": (("ours", "bandersnatch"), (("ours", "bandersnatch"),)),
}
PEER_TITLES = {
    "ours": "ours",
    "ours-w1": "ours workers=1",
    "ours-w2": "ours workers=2",
    "upstream": "straight from upstream",
}


@dataclass(frozen=True)
class Target:
    """``subject.metric / peer.metric  OP  bound``."""

    metric: str
    peer: str
    op: str
    bound: float
    why: str
    subject: str = "ours"

    def check(self, results: Results) -> tuple[float | None, bool | None]:
        """(the ratio, met?) — (None, None) when a side was not measured."""
        metric = _BY_KEY[self.metric]
        ours = metric.value(results, self.subject)
        theirs = metric.value(results, self.peer)
        if ours is None or not theirs:
            return None, None
        value = ours / theirs
        compare: Callable[[float, float], bool] = {
            ">=": operator.ge,
            "<=": operator.le,
        }[self.op]
        return value, compare(value, self.bound)


TARGETS: list[Target] = [
    Target("warm_pages_rps", "nginx", ">=", 0.5, "warm project page req/s: half of nginx"),
    Target("warm_pages_rps", "proxpi", ">=", 20, "warm project page req/s: 20x proxpi"),
    Target("warm_pages_rps", "devpi", ">=", 20, "warm project page req/s: 20x devpi"),
    Target("warm_100k_rps", "nginx", ">=", 0.3, "warm 100 KB file req/s: 0.3x nginx"),
    Target("warm_20m_mb_s", "nginx", ">=", 0.9, "warm 20 MB file MB/s: 0.9x nginx"),
    Target("install_uv_s", "upstream", "<=", 1.5, "cold uv pip install: <= 1.5x straight"),
    Target("install_pip_s", "upstream", "<=", 1.1, "cold pip install: <= 1.1x straight"),
    Target("sync_files_per_s", "bandersnatch", ">=", 2, "full sync files/s: 2x bandersnatch"),
    Target("sync_peak_rss", "bandersnatch", "<=", 1, "full sync peak RSS: <= bandersnatch's"),
]


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value == int(value) and abs(value) < 1000:
        return str(int(value))
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def ratios(results: Results) -> dict[str, dict[str, float]]:
    """Every ratio of the tables: {"numerator/denominator": {metric key: ratio}}."""
    out: dict[str, dict[str, float]] = {}
    for group, (_peers, pairs) in GROUPS.items():
        for num, den in pairs:
            for metric in METRICS:
                if metric.group != group or not metric.ratio:
                    continue
                a, b = metric.value(results, num), metric.value(results, den)
                if a is not None and b:
                    out.setdefault(f"{num}/{den}", {})[metric.key] = round(a / b, 4)
    return out


def _mark(metric: Metric, ratio: float) -> str:
    better = ratio > 1 if metric.higher_is_better else ratio < 1
    return "=" if abs(ratio - 1) < 0.05 else ("+" if better else "-")


def group_rows(results: Results, group: str) -> list[list[str]]:
    """A header row, then one row per metric: a column per peer, then one per ratio."""
    peers_all, pairs = GROUPS[group]
    present = results.get(group, {})
    peers = [p for p in peers_all if p in present]
    pairs_shown = [(a, b) for a, b in pairs if a in present and b in present]
    head = [
        "metric",
        *(PEER_TITLES.get(p, p) for p in peers),
        *(f"{PEER_TITLES.get(a, a) if a != 'ours' else 'ours'}/{b}" for a, b in pairs_shown),
    ]
    rows = [head]
    for metric in METRICS:
        if metric.group != group:
            continue
        values = [metric.value(results, p) for p in peers]
        if all(v is None for v in values):
            continue
        row = [metric.label + (" ^" if metric.higher_is_better else " v")]
        row += [fmt(v) for v in values]
        for num, den in pairs_shown:
            a, b = metric.value(results, num), metric.value(results, den)
            if a is None or not b or not metric.ratio:
                row.append("-")
            else:
                ratio = a / b
                row.append(f"{ratio:.2f} {_mark(metric, ratio)}")
        rows.append(row)
    return rows


def scale_rows(results: Results) -> list[list[str]]:
    """The scale phase: a column per project count, then largest/smallest."""
    scale = results.get("scale", {})
    counts = sorted(
        (v for v in scale.values() if isinstance(v, Mapping) and "projects" in v),
        key=lambda v: int(v["projects"]),
    )
    if not counts:
        return []
    growth = scale.get("growth", {}) or {}
    changed = next(
        (c["incremental_sync"].get("changed") for c in counts if "incremental_sync" in c), "?"
    )
    pages = next((c["serve"]["pages"].get("done") for c in counts if "serve" in c), "?")

    def get(node: Any, *path: str) -> float | None:
        for key in path:
            if not isinstance(node, Mapping):
                return None
            node = node.get(key)
        return None if isinstance(node, bool) or not isinstance(node, int | float) else node

    spec: list[tuple[str, tuple[str, ...], float, str | None]] = [
        ("full sync: wall s", ("full_sync", "seconds"), 1, "full_sync_seconds"),
        ("full sync: projects/s", ("full_sync", "projects_per_s"), 1, None),
        ("full sync: peak RSS, MB", ("full_sync", "peak_rss"), MB, "full_sync_peak_rss"),
        ("full sync: upstream requests", ("full_sync", "upstream_requests"), 1, None),
        ("full sync: exit code", ("full_sync", "exit"), 1, None),
        (f"incremental sync ({changed} changed): wall s", ("incremental_sync", "seconds"), 1, None),
        (
            "incremental sync: peak RSS, MB",
            ("incremental_sync", "peak_rss"),
            MB,
            "incremental_sync_peak_rss",
        ),
        ("incremental sync: upstream requests", ("incremental_sync", "upstream_requests"), 1, None),
        ("incremental sync: exit code", ("incremental_sync", "exit"), 1, None),
        ("serve: start-up to first /health, s", ("serve", "startup_s"), 1, None),
        ("serve: RSS when ready, tree, MB", ("serve", "rss_ready"), MB, "serve_rss_ready"),
        ("serve: processes", ("serve", "processes"), 1, None),
        (
            f"serve: RSS after {pages} random pages, MB",
            ("serve", "rss_after_pages"),
            MB,
            "serve_rss_after_pages",
        ),
        ("serve: random pages req/s", ("serve", "pages", "req_per_s"), 1, None),
        ("page data per project (web/simple/<p>/), B", ("bytes", "simple", "per_project"), 1, None),
        (
            "page data per project, in disk blocks, B",
            ("bytes", "simple", "disk_per_project"),
            1,
            None,
        ),
        ("JSON API per project (web/pypi/<p>/), B", ("bytes", "json_api", "per_project"), 1, None),
        (
            "JSON API per project, in disk blocks, B",
            ("bytes", "json_api", "disk_per_project"),
            1,
            None,
        ),
        ("state per project (state/ / N), B", ("bytes", "state", "per_project"), 1, None),
        ("state per project, in disk blocks, B", ("bytes", "state", "disk_per_project"), 1, None),
    ]
    head = ["metric", *(f"{int(c['projects']):,} projects" for c in counts)]
    if growth:
        head.append(f"{growth['to']:,} / {growth['from']:,}")
    rows = [head]
    for label, path, scale_by, growth_key in spec:
        values = [get(c, *path) for c in counts]
        if all(v is None for v in values):
            continue
        row = [label, *(fmt(v * scale_by) if v is not None else "-" for v in values)]
        if growth:
            g = growth.get(growth_key) if growth_key else None
            row.append(f"{g:.2f}" if isinstance(g, int | float) else "")
        rows.append(row)
    return rows


def render_text(rows: Sequence[Sequence[str]]) -> str:
    """Rows as an aligned text table (first column left, others right)."""
    if not rows:
        return ""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render_markdown(rows: Sequence[Sequence[str]], left: int = 1) -> str:
    """Rows as a Markdown table: the first ``left`` columns left-aligned, the others
    (numbers) right-aligned."""
    if not rows:
        return ""

    def cell(text: str) -> str:
        text = text.replace("|", "\\|")
        if text.endswith((" ^", " v")):
            text = text[:-1] + ("↑" if text.endswith("^") else "↓")
        return text

    head, *body = rows
    lines = ["| " + " | ".join(cell(c) for c in head) + " |"]
    lines.append("|" + "|".join("---" if i < left else "---:" for i in range(len(head))) + "|")
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in body]
    return "\n".join(lines)


LEGEND = (
    "^ higher is better, v lower is better; in ratios + means the numerator is better, "
    "- worse, = within 5%"
)


def render(results: Results) -> str:
    """Every table, as text, for the terminal."""
    parts = []
    titles = {
        "pull": "pull-through (ours with [serve] workers unset, =1, =2; nginx over ours' web root)",
        "install": "cold installs of 20 packages (fresh venv, empty caches)",
        "sync": "full sync of the same corpus, same worker count",
    }
    for group, title in titles.items():
        rows = group_rows(results, group)
        if len(rows) > 1:
            parts.append(f"{title}\n{render_text(rows)}")
    rows = scale_rows(results)
    if rows:
        parts.append(f"scale (metadata-only projects)\n{render_text(rows)}")
    parts.append(LEGEND)
    return "\n\n".join(parts)


def problems(results: Results) -> list[str]:
    """Not measured peers and phases, non-OK answers, digest mismatches, failed runs."""
    lines = []
    for peer, numbers in (results.get("pull") or {}).items():
        if "error" in numbers:
            lines.append(f"pull-through {peer}: not measured: {numbers['error']}")
        for phase, section in numbers.items():
            if not isinstance(section, Mapping) or "done" not in section:
                continue
            errors, bad = section.get("errors", 0), section.get("bad_digest", 0)
            redirects = section.get("redirects", 0)
            deadline = section.get("timed_out") and not phase.startswith("warm_")
            if errors or bad or redirects or deadline:
                lines.append(
                    f"pull-through {peer} {phase}: {section.get('done')} done, {errors} not OK "
                    f"({section.get('statuses')}), {bad} bad digests, {redirects} redirects"
                    + (", hit the phase deadline" if deadline else "")
                )
    for way, tools in (results.get("install") or {}).items():
        if "error" in tools:
            lines.append(f"install {way}: not measured: {tools['error']}")
            continue
        for tool, entry in tools.items():
            if entry.get("failures"):
                lines.append(
                    f"install {way} {tool}: {entry['failures']} of {entry['runs']} runs failed: "
                    f"{str(entry.get('first_failure'))[:300]}"
                )
    for tool, runs in (results.get("sync") or {}).items():
        if "error" in runs:
            lines.append(f"sync {tool}: not measured: {runs['error']}")
            continue
        for run, entry in runs.items():
            if entry.get("exit"):
                lines.append(
                    f"sync {tool} {run}: exit {entry['exit']}: {str(entry.get('tail'))[-300:]}"
                )
        full = runs.get("full", {})
        if full and full.get("files") != full.get("files_expected"):
            lines.append(
                f"sync {tool}: holds {full.get('files')} files, upstream published "
                f"{full.get('files_expected')}"
            )
    for count, entry in (results.get("scale") or {}).items():
        if not isinstance(entry, Mapping):
            continue
        if "error" in entry:
            lines.append(f"scale {count}: not measured: {entry['error']}")
        for run in ("full_sync", "incremental_sync"):
            if (entry.get(run) or {}).get("exit"):
                lines.append(f"scale {count} {run}: exit {entry[run]['exit']}")
        pages = (entry.get("serve") or {}).get("pages") or {}
        if pages.get("errors"):
            lines.append(f"scale {count} serve: {pages['errors']} pages not OK")
    return lines


def check_targets(results: Results) -> list[dict[str, Any]]:
    """Every target with its measured ratio and whether it was met."""
    out = []
    for target in TARGETS:
        value, met = target.check(results)
        out.append(
            {
                "metric": target.metric,
                "subject": target.subject,
                "peer": target.peer,
                "op": target.op,
                "bound": target.bound,
                "value": None if value is None else round(value, 4),
                "met": met,
                "why": target.why,
            }
        )
    return out


def target_rows(checked: list[dict[str, Any]]) -> list[list[str]]:
    rows = [["target", "ratio", "measured", "bound", "result"]]
    for t in checked:
        state = {True: "met", False: "MISSED", None: "not measured"}[t["met"]]
        rows.append(
            [
                t["why"],
                f"{t['metric']} {t['subject']}/{t['peer']}",
                "-" if t["value"] is None else f"{t['value']:.2f}",
                f"{t['op']} {t['bound']:g}",
                state,
            ]
        )
    return rows


def render_targets(checked: list[dict[str, Any]]) -> str:
    return render_text(target_rows(checked))
