"""When a cached page may be served as is, must be revalidated, or must be fetched."""

from __future__ import annotations

from enum import Enum


class Freshness(Enum):
    SERVE = "serve"
    REVALIDATE = "revalidate"
    FETCH = "fetch"


def decide(*, fetched_at: float | None, now: float, ttl: float) -> Freshness:
    """For an online cache (offline mode never asks upstream, so it never decides)."""
    if fetched_at is None:
        return Freshness.FETCH
    if now - fetched_at < ttl:
        return Freshness.SERVE
    return Freshness.REVALIDATE


def negative_is_fresh(*, recorded_at: float | None, now: float, ttl: float) -> bool:
    return recorded_at is not None and now - recorded_at < ttl
