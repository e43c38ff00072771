"""The seam between the caches/sync and TUF (PEP 458). ``None`` means trust is off."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol


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
    def scheme(self) -> str:
        """``"files"`` or ``"index"``."""

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
        """Fetch new timestamp/snapshot/targets; raises TrustError on freeze, rollback, bad sigs."""

    def status(self) -> dict[str, object]:
        """State for ``status`` and ``/health``: versions, expiry, last error."""
