"""What ``verify`` found and what ``--repair`` did: counts, and the first paths of each kind."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

#: Paths kept per kind (and per repair outcome) for the report.
FIRST = 20


class Kind(Enum):
    MISSING = "missing"  # listed by a page (a file or its advertised .metadata), absent
    CORRUPT = "corrupt"  # bytes that do not match the path's digest or the page's
    BROKEN_PAGE = "broken_page"  # a page form that does not parse or disagrees with the others
    METADATA = "metadata_mismatch"  # a .metadata not matching the sha256 its page advertises
    UNREFERENCED = "unreferenced"  # under packages/, listed by no page
    TEMP = "temp_leftover"  # a temp file or claim of a process that is gone
    JSON_API = "json_api"  # a JSON API answer listing what its page does not, or unreadable

    @property
    def label(self) -> str:
        return _LABELS[self]


_LABELS = {
    Kind.MISSING: "files missing (listed by a page, absent)",
    Kind.CORRUPT: "files not matching their digest",
    Kind.BROKEN_PAGE: "pages that do not parse or disagree",
    Kind.METADATA: ".metadata not matching its page",
    Kind.UNREFERENCED: "files no page references",
    Kind.TEMP: "temp leftovers of dead processes",
    Kind.JSON_API: "JSON API answers not matching their page",
}


class Outcome(Enum):
    REPAIRED = "repaired"
    FAILED = "not_repaired"


@dataclass(frozen=True)
class Finding:
    kind: Kind
    path: str  # relative to the storage root
    detail: str
    project: str | None = None

    def as_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"path": self.path, "detail": self.detail}
        if self.project is not None:
            doc["project"] = self.project
        return doc


@dataclass
class Tally:
    """A count and the first ``FIRST`` entries."""

    count: int = 0
    first: list[dict[str, Any]] = field(default_factory=list)

    def add(self, entry: dict[str, Any]) -> None:
        self.count += 1
        if len(self.first) < FIRST:
            self.first.append(entry)


@dataclass
class Report:
    store: str
    complete: bool  # a mirror (every listed file should be held), not a pull-through cache
    repair: bool = False
    offline: bool = False
    pages: int = 0
    json_answers: int = 0
    files: int = 0  # files under packages/ looked at
    hashed: int = 0
    hashed_bytes: int = 0
    not_held: int = 0  # listed, absent, in a pull-through cache (not damage)
    found: dict[Kind, Tally] = field(default_factory=lambda: {k: Tally() for k in Kind})
    repairs: dict[Outcome, Tally] = field(default_factory=lambda: {o: Tally() for o in Outcome})
    started: float = field(default_factory=time.monotonic)
    seconds: float = 0.0

    def add(self, finding: Finding) -> None:
        self.found[finding.kind].add(finding.as_json())

    def repaired(self, finding: Finding, outcome: Outcome, how: str) -> None:
        self.repairs[outcome].add({"kind": finding.kind.value, "path": finding.path, "how": how})

    @property
    def problems(self) -> int:
        return sum(t.count for t in self.found.values())

    @property
    def ok(self) -> bool:
        """Clean, or (with ``--repair``) every finding repaired."""
        if not self.repair:
            return self.problems == 0
        return (
            self.repairs[Outcome.FAILED].count == 0
            and self.repairs[Outcome.REPAIRED].count >= self.problems
        )

    def finish(self) -> None:
        self.seconds = time.monotonic() - self.started

    def progress_line(self) -> str:
        rate = self.files / max(time.monotonic() - self.started, 1e-6)
        return (
            f"verify: pages {self.pages}  files {self.files}  hashed {self.hashed} "
            f"({rate:.0f} files/s)  problems {self.problems}"
        )

    def as_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "ok": self.ok,
            "store": self.store,
            "kind": "mirror" if self.complete else "cache",
            "pages": self.pages,
            "json_answers": self.json_answers,
            "files": self.files,
            "hashed": self.hashed,
            "hashed_bytes": self.hashed_bytes,
            "not_held": self.not_held,
            "seconds": round(self.seconds, 3),
            "problems": {
                kind.value: {"count": tally.count, "first": tally.first}
                for kind, tally in self.found.items()
            },
        }
        if self.repair:
            doc["offline"] = self.offline
            doc["repair"] = {
                outcome.value: {"count": tally.count, "first": tally.first}
                for outcome, tally in self.repairs.items()
            }
        return doc

    def render(self) -> str:
        what = "mirror" if self.complete else "pull-through cache"
        lines = [
            f"verified {what} {self.store} in {self.seconds:.1f} s: {self.pages} pages, "
            f"{self.json_answers} JSON API answers, {self.files} files "
            f"({self.hashed} hashed, {self.hashed_bytes} bytes)"
        ]
        if self.not_held:
            lines.append(f"  {self.not_held} listed files not held (fetched on demand)")
        for kind, tally in self.found.items():
            if not tally.count:
                continue
            lines.append(f"{tally.count} {kind.label}:")
            lines += [f"  {entry['path']}: {entry['detail']}" for entry in tally.first]
            if tally.count > len(tally.first):
                lines.append(f"  ... and {tally.count - len(tally.first)} more")
        if self.repair:
            done, failed = self.repairs[Outcome.REPAIRED], self.repairs[Outcome.FAILED]
            lines.append(f"repaired {done.count}, could not repair {failed.count}")
            lines += [f"  could not: {e['path']}: {e['how']}" for e in failed.first]
            if failed.count > len(failed.first):
                lines.append(f"  ... and {failed.count - len(failed.first)} more")
        if self.problems == 0:
            lines.append("no problems found")
        return "\n".join(lines)
