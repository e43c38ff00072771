"""Is an upstream answer for a project page one the mirror should apply? (pure)

Every writer of a project (pull-through, changelog follower, sync) asks the same question
with the same inputs: what upstream answered (a page with its serial, "not modified", or
"no such project"), the serial of the copy the mirror holds, and — for the follower and the
sync — the serial the changelog promised and whether its last row removed the project.

- ``CURRENT``: apply it.
- ``UNCHANGED``: a 304 for a copy that is new enough; only its freshness moves.
- ``STALE``: older than promised or than what the mirror holds (a lagging CDN), or a 404
  for a project the changelog says exists: keep the held copy; a sync retries, then defers.
- ``GONE``: the project does not exist upstream (as expected, or nothing was promised).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Answer(Enum):
    """What upstream answered for a project page."""

    PAGE = "page"
    NOT_MODIFIED = "not-modified"
    NOT_FOUND = "not-found"


class PageVerdict(Enum):
    CURRENT = "current"
    UNCHANGED = "unchanged"
    STALE = "stale"
    GONE = "gone"


@dataclass(frozen=True)
class Promise:
    """What the changelog says about a project: its state at ``serial`` (at least), and
    whether its last row removed it. Pull-through has no promise (``serial`` None)."""

    serial: int | None = None
    expect_gone: bool = False


#: Pull-through: nothing promised.
NO_PROMISE = Promise()


@dataclass(frozen=True)
class Judgement:
    verdict: PageVerdict
    reason: str = ""


def judge(
    answer: Answer,
    *,
    page_serial: int | None,
    held_serial: int | None,
    promise: Promise,
) -> Judgement:
    """The verdict on one answer. ``page_serial``: the answer's serial (None if the upstream
    gives none: then serials cannot make it stale); ``held_serial``: the held copy's."""
    promised = promise.serial
    if answer is Answer.NOT_FOUND:
        if promised is None or promise.expect_gone:
            return Judgement(PageVerdict.GONE)
        return Judgement(
            PageVerdict.STALE,
            f"upstream has no page yet, the changelog promised serial {promised}",
        )
    if answer is Answer.NOT_MODIFIED:
        if promised is not None and held_serial is not None and held_serial < promised:
            return Judgement(
                PageVerdict.STALE,
                f"page not modified at serial {held_serial}, the changelog promised {promised}",
            )
        return Judgement(PageVerdict.UNCHANGED)
    if page_serial is not None:
        if promised is not None and page_serial < promised:
            return Judgement(
                PageVerdict.STALE, f"page serial {page_serial} is below the promised {promised}"
            )
        if held_serial is not None and page_serial < held_serial:
            return Judgement(
                PageVerdict.STALE,
                f"page serial {page_serial} is below the held copy's {held_serial}",
            )
    return Judgement(PageVerdict.CURRENT)
