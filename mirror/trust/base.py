"""The seam between the caches/sync and TUF (PEP 458). ``None`` means trust is off."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from mirror.config import TufTargets


class TrustState(enum.StrEnum):
    """How far the trusted TUF metadata can be used (``status()["state"]``)."""

    #: No refresh attempted yet.
    STARTING = "starting"
    #: Trusted metadata, refreshed as planned.
    OK = "ok"
    #: Trusted metadata still unexpired, but the last refresh failed (unreachable, store, bug).
    STALE = "stale"
    #: The trusted metadata expired and could not be refreshed: new content is refused.
    EXPIRED = "expired"
    #: The last refresh was refused (freeze, rollback, signatures): new content is refused.
    REFUSED = "refused"
    #: Nothing trusted yet and the refreshes so far failed.
    UNAVAILABLE = "unavailable"

    @property
    def degraded(self) -> bool:
        """New content is refused (what was verified before is still served)."""
        return self in (TrustState.REFUSED, TrustState.EXPIRED, TrustState.UNAVAILABLE)


@dataclass(frozen=True)
class TrustedTarget:
    """What TUF says a target must be: its length and digests (e.g. {"sha256": ...})."""

    length: int
    hashes: Mapping[str, str]


@dataclass(frozen=True)
class TrustedPage:
    """A project's index page, fetched and verified against its TUF target."""

    body: bytes
    content_type: str
    url: str


class Trust(Protocol):
    @property
    def scheme(self) -> TufTargets:
        """What the upstream signs: each file, or each project's index page."""

    async def file_target(self, rel: str) -> TrustedTarget:
        """The signed target for ``rel`` (``aa/bb/<digest>/<filename>``, relative to packages/).

        Raises TrustError when there is no such target or the metadata cannot be trusted.
        Only called in the ``files`` scheme.
        """

    async def index_page(self, project: str) -> TrustedPage:
        """The project's page, verified against its target. Only in the ``index`` scheme.

        Raises UpstreamNotFound when the project has no target, TrustError when the
        page does not match or the metadata cannot be trusted.
        """

    async def refresh(self) -> None:
        """Fetch new timestamp/snapshot/targets; raises TrustError on freeze, rollback, bad
        sigs, UpstreamError when unreachable; any other exception is a bug and propagates."""

    def status(self) -> dict[str, object]:
        """State for ``status`` and ``/health`` (JSON-friendly: plain strings and numbers):
        ``state`` (a :class:`TrustState` value), versions, expiry, last error."""
