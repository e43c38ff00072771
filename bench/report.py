"""Turn the raw per-peer numbers into a table, ours/peer ratios and target checks.

Speed and memory targets live here, as ratios against peers measured in the same run (or,
for single flight, as a count). They are reported, never asserted: the bench always exits
0 when it ran, whatever the numbers.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

Results = Mapping[str, Mapping[str, Any]]


@dataclass(frozen=True)
class Metric:
    """One number per peer, read out of that peer's raw results."""

    key: str
    label: str
    higher_is_better: bool
    path: tuple[str, str]
    scale: float = 1.0

    def value(self, peer: Mapping[str, Any]) -> float | None:
        section = peer.get(self.path[0])
        if not isinstance(section, Mapping) or section.get(self.path[1]) is None:
            return None
        return float(section[self.path[1]]) * self.scale


METRICS: list[Metric] = [
    Metric("cold_pages_s", "cold: 1st page fetches, s", False, ("cold_pages", "seconds")),
    Metric("cold_files_s", "cold: 1st file fetches, s", False, ("cold_files", "seconds")),
    Metric("cold_files_mb_s", "cold: files MB/s", True, ("cold_files", "mb_per_s")),
    Metric("warm_files_rps", "warm files: req/s", True, ("warm_files", "req_per_s")),
    Metric("warm_files_mb_s", "warm files: MB/s", True, ("warm_files", "mb_per_s")),
    Metric("warm_files_p99", "warm files: p99 ms", False, ("warm_files", "p99_ms")),
    Metric("warm_pages_rps", "warm pages: req/s", True, ("warm_pages", "req_per_s")),
    Metric("warm_pages_p50", "warm pages: p50 ms", False, ("warm_pages", "p50_ms")),
    Metric("warm_pages_p99", "warm pages: p99 ms", False, ("warm_pages", "p99_ms")),
    Metric(
        "sf_upstream", "single flight: upstream GETs", False, ("single_flight", "upstream_gets")
    ),
    Metric("sf_seconds", "single flight: wall s", False, ("single_flight", "seconds")),
    Metric("peak_rss_mb", "peak RSS, process tree, MB", False, ("memory", "total"), 1e-6),
    Metric("peak_rss_max_mb", "peak RSS, largest process, MB", False, ("memory", "largest"), 1e-6),
]
_BY_KEY = {m.key: m for m in METRICS}


@dataclass(frozen=True)
class Target:
    """``ours.metric / peer.metric  OP  bound`` (or ``ours.metric OP bound`` without peer)."""

    metric: str
    peer: str | None
    op: str
    bound: float
    why: str

    def check(self, results: Results) -> tuple[float | None, bool | None]:
        """(the ratio or value, met?) — (None, None) when a side was not measured."""
        metric = _BY_KEY[self.metric]
        ours = metric.value(results.get("ours", {}))
        if ours is None:
            return None, None
        if self.peer is None:
            value = ours
        else:
            theirs = metric.value(results.get(self.peer, {}))
            if not theirs:
                return None, None
            value = ours / theirs
        compare: Callable[[float, float], bool] = {
            ">=": operator.ge,
            "<=": operator.le,
            "==": operator.eq,
        }[self.op]
        return value, compare(value, self.bound)


TARGETS: list[Target] = [
    Target("sf_upstream", None, "==", 1, "50 clients on one miss cause one upstream download"),
    Target("cold_files_mb_s", "proxpi", ">=", 1.0, "a miss streams no slower than proxpi"),
    Target("cold_files_mb_s", "devpi", ">=", 1.0, "a miss streams no slower than devpi"),
    Target("warm_files_mb_s", "nginx", ">=", 0.5, "hits: half of nginx sendfile or better"),
    Target("warm_files_rps", "proxpi", ">=", 1.5, "hits: well ahead of proxpi"),
    Target("warm_files_rps", "devpi", ">=", 1.5, "hits: well ahead of devpi"),
    Target("warm_pages_rps", "nginx", ">=", 0.1, "pages: a tenth of static nginx"),
    Target("warm_pages_rps", "proxpi", ">=", 1.0, "pages: at least proxpi's rate"),
    Target("warm_pages_rps", "devpi", ">=", 1.0, "pages: at least devpi's rate"),
    Target("warm_pages_p99", "proxpi", "<=", 1.0, "pages: tail latency no worse than proxpi"),
    Target("peak_rss_mb", "proxpi", "<=", 1.5, "memory: within 1.5x of proxpi"),
    Target("peak_rss_mb", "devpi", "<=", 1.0, "memory: no more than devpi"),
]


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def ratios(results: Results) -> dict[str, dict[str, float]]:
    """ours/peer for every metric both sides measured: {peer: {metric key: ratio}}."""
    out: dict[str, dict[str, float]] = {}
    ours = results.get("ours", {})
    for peer, numbers in results.items():
        if peer == "ours":
            continue
        for metric in METRICS:
            a, b = metric.value(ours), metric.value(numbers)
            if a is not None and b:
                out.setdefault(peer, {})[metric.key] = round(a / b, 4)
    return out


def render(results: Results) -> str:
    """The table: one row per metric, a column per peer, then one ours/peer column each."""
    peers = list(results)
    others = [p for p in peers if p != "ours"]
    ratio_table = ratios(results)
    head = ["metric", *peers, *(f"ours/{p}" for p in others)]
    rows = [head]
    for metric in METRICS:
        row = [metric.label + (" ^" if metric.higher_is_better else " v")]
        row += [_fmt(metric.value(results[p])) for p in peers]
        for peer in others:
            ratio = ratio_table.get(peer, {}).get(metric.key)
            if ratio is None:
                row.append("-")
                continue
            better = ratio > 1 if metric.higher_is_better else ratio < 1
            mark = "=" if abs(ratio - 1) < 0.05 else ("+" if better else "-")
            row.append(f"{ratio:.2f} {mark}")
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = []
    for n, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append(
        "^ higher is better, v lower is better; in ratios + means ours is better, "
        "- worse, = within 5%"
    )
    return "\n".join(lines)


def render_errors(results: Results) -> str:
    """Non-200 answers and digest mismatches per peer and phase (empty when none)."""
    lines = []
    for peer, numbers in results.items():
        if "error" in numbers:
            lines.append(f"{peer}: not measured: {numbers['error']}")
        for phase, section in numbers.items():
            if not isinstance(section, Mapping):
                continue
            errors, bad = section.get("errors", 0), section.get("bad_digest", 0)
            redirects = section.get("redirects", 0)
            if errors or bad or redirects or section.get("timed_out"):
                lines.append(
                    f"{peer} {phase}: {section.get('done')} done, {errors} not OK "
                    f"({section.get('statuses')}), {bad} bad digests, {redirects} redirects"
                    + (", hit the phase deadline" if section.get("timed_out") else "")
                )
    return "\n".join(lines)


def check_targets(results: Results) -> list[dict[str, Any]]:
    """Every target with its measured ratio (or value) and whether it was met."""
    out = []
    for target in TARGETS:
        value, met = target.check(results)
        out.append(
            {
                "metric": target.metric,
                "peer": target.peer,
                "op": target.op,
                "bound": target.bound,
                "value": None if value is None else round(value, 4),
                "met": met,
                "why": target.why,
            }
        )
    return out


def render_targets(checked: list[dict[str, Any]]) -> str:
    lines = []
    for t in checked:
        subject = f"ours/{t['peer']}" if t["peer"] else "ours"
        state = {True: "met   ", False: "MISSED", None: "n/a   "}[t["met"]]
        value = "-" if t["value"] is None else f"{t['value']:.2f}"
        lines.append(
            f"  {state} {t['metric']:<16} {subject:<12} {value:>7} "
            f"{t['op']} {t['bound']:<5}  {t['why']}"
        )
    return "\n".join(lines)
