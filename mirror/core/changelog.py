"""Upstream changelog rows and project lists → the sync plan (pure).

PyPI's journal (``changelog_since_serial``) gives rows ``[name, version, timestamp, action,
serial]``. Whatever the action, its effect on the mirror is the same: bring that project's
pages and files to (at least) the row's serial by fetching its current page. So a batch of
rows collapses to one ``PlanEntry`` per project, with the highest serial it must reach and
whether the project is expected to be gone (its last row removed it). Action strings the
mirror does not know mean "refresh this project" too.

A full run (first sync, XML-RPC unavailable, or changed filters) instead compares the
upstream project list with the local one, both sorted by name: ``reconcile`` decides each
name on its own, so the lists can be streamed and never held whole.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum

from mirror.core.names import is_valid_project_name, normalize


class Action(Enum):
    CREATE = "create"
    NEW_RELEASE = "new release"
    ADD_FILE = "add file"
    REMOVE_FILE = "remove file"
    REMOVE_RELEASE = "remove release"
    REMOVE_PROJECT = "remove project"
    YANK = "yank release"
    UNYANK = "unyank release"
    STATUS = "project status"
    OTHER = "other"


def classify(action: str) -> Action:
    """The kind of a journal action string; unknown strings are ``OTHER`` (= refresh)."""
    text = " ".join(action.lower().split())
    exact = {
        "create": Action.CREATE,
        "new release": Action.NEW_RELEASE,
        "remove release": Action.REMOVE_RELEASE,
        "remove project": Action.REMOVE_PROJECT,
        "yank release": Action.YANK,
        "unyank release": Action.UNYANK,
    }
    if text in exact:
        return exact[text]
    if text.startswith("add ") and " file " in text:
        return Action.ADD_FILE
    if text.startswith("remove file "):
        return Action.REMOVE_FILE
    if "project status" in text or text.startswith("quarantine") or "archive" in text:
        return Action.STATUS
    return Action.OTHER


class ChangelogError(ValueError):
    """A changelog answer that does not have the shape PyPI documents."""


@dataclass(frozen=True)
class ChangelogEvent:
    project: str  # normalised
    version: str | None
    action: Action
    serial: int


def parse_rows(rows: object) -> tuple[list[ChangelogEvent], int]:
    """Rows as XML-RPC decoded them → events, and the number of rows skipped.

    Rows with an invalid project name are skipped (counted), a row of the wrong shape is
    a ``ChangelogError``: a damaged answer must not be half-applied.
    """
    if not isinstance(rows, list | tuple):
        raise ChangelogError(f"changelog: expected a list of rows, got {type(rows).__name__}")
    events: list[ChangelogEvent] = []
    skipped = 0
    for index, row in enumerate(rows):
        if not isinstance(row, list | tuple) or len(row) < 5:
            raise ChangelogError(f"changelog row {index}: expected 5 fields, got {row!r:.120}")
        name, version, _timestamp, action, serial = row[:5]
        if isinstance(serial, bool) or not isinstance(serial, int) or serial < 0:
            raise ChangelogError(f"changelog row {index}: serial {serial!r:.40} is not a serial")
        if not isinstance(action, str):
            raise ChangelogError(f"changelog row {index}: action {action!r:.40} is not a string")
        if not isinstance(name, str) or not is_valid_project_name(name):
            skipped += 1
            continue
        events.append(
            ChangelogEvent(
                project=normalize(name),
                version=version if isinstance(version, str) else None,
                action=classify(action),
                serial=serial,
            )
        )
    return events, skipped


class EntryKind(Enum):
    """What the sync does with one project."""

    # Fetch the page; it must show at least ``serial`` (else it is stale: retry, defer).
    SYNC = "sync"
    # Filters exclude the project: remove whatever the mirror holds of it, fetch nothing.
    DROP = "drop"


@dataclass(frozen=True)
class PlanEntry:
    project: str
    serial: int
    kind: EntryKind = EntryKind.SYNC
    # The last thing upstream did was remove the project: a 404 is the expected answer.
    expect_gone: bool = False

    def dump(self) -> str:
        """One line of the on-disk todo list (names never contain spaces)."""
        return f"{self.project} {self.serial} {self.kind.value} {int(self.expect_gone)}"

    @classmethod
    def load(cls, line: str) -> PlanEntry:
        parts = line.split()
        if len(parts) != 4 or not parts[1].isdigit() or parts[3] not in ("0", "1"):
            raise ValueError(f"not a plan entry: {line!r:.120}")
        try:
            kind = EntryKind(parts[2])
        except ValueError as exc:
            raise ValueError(f"not a plan entry: {line!r:.120}") from exc
        if not is_valid_project_name(parts[0]) or normalize(parts[0]) != parts[0]:
            raise ValueError(f"not a plan entry: {line!r:.120}")
        return cls(parts[0], int(parts[1]), kind, parts[3] == "1")


def collapse(events: Iterable[ChangelogEvent], allowed: Callable[[str], bool]) -> list[PlanEntry]:
    """One entry per project, in the order projects first appear.

    The serial is the highest row's; the project is expected to be gone when its last row
    (by serial) is ``remove project``. Projects the filters exclude become ``DROP``.
    """
    latest: dict[str, ChangelogEvent] = {}
    for event in events:
        seen = latest.get(event.project)
        if seen is None or event.serial >= seen.serial:
            latest[event.project] = event
    entries = []
    for project, event in latest.items():
        if not allowed(project):
            entries.append(PlanEntry(project, event.serial, EntryKind.DROP))
        else:
            gone = event.action is Action.REMOVE_PROJECT
            entries.append(PlanEntry(project, event.serial, EntryKind.SYNC, gone))
    return entries


def supersede(carried: PlanEntry, new: PlanEntry) -> PlanEntry:
    """An entry carried from an earlier run and a new one for the same project: the one
    that reaches further decides (a later ``remove project`` row turns a carried "page not
    there yet" into "gone"; a later release turns a carried removal into a sync)."""
    return new if new.serial >= carried.serial else carried


def reconcile(
    project: str,
    *,
    listed: bool,
    upstream_serial: int | None,
    held: bool,
    local_serial: int | None,
    allowed: bool,
    force: bool,
) -> PlanEntry | None:
    """What a full run does with one name.

    ``listed``: upstream lists the project (``upstream_serial`` None when the list gives
    no serial); ``held``: the mirror has pages for it (``local_serial`` is what they show,
    None if unknown). ``force`` re-processes every listed project (the filters changed).
    """
    if not allowed:
        return PlanEntry(project, upstream_serial or 0, EntryKind.DROP) if held else None
    if not listed:
        # Upstream's list no longer has it: confirm with a fetch (404 → removed).
        return PlanEntry(project, 0, EntryKind.SYNC, expect_gone=True) if held else None
    if upstream_serial is None:
        return PlanEntry(project, 0, EntryKind.SYNC)  # nothing to compare: always fetch
    if force or not held or local_serial is None or local_serial < upstream_serial:
        return PlanEntry(project, upstream_serial, EntryKind.SYNC)
    return None
