"""When a cached page may be served as is, must be revalidated, or must be fetched."""

from __future__ import annotations

from enum import Enum


class Freshness(Enum):
    SERVE = "serve"
    REVALIDATE = "revalidate"
    FETCH = "fetch"
    # Offline and nothing cached: the answer is "not here", without asking anyone.
    ABSENT = "absent"


def decide(*, fetched_at: float | None, now: float, ttl: float, offline: bool) -> Freshness:
    if fetched_at is None:
        return Freshness.ABSENT if offline else Freshness.FETCH
    if offline or now - fetched_at < ttl:
        return Freshness.SERVE
    return Freshness.REVALIDATE


def negative_is_fresh(*, recorded_at: float | None, now: float, ttl: float) -> bool:
    return recorded_at is not None and now - recorded_at < ttl
