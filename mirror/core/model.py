"""The one in-memory model of a project's Simple API page.

Upstream PEP 691 JSON and PEP 503 HTML are both parsed into it (``core.index``), and the
mirror's own HTML and JSON pages are rendered from it, so no field upstream gave is lost
between formats. Keys this model does not know are carried in ``extra`` and re-emitted in
JSON, so a newer upstream API version degrades gracefully.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# Simple API version the mirror's pages declare (PEP 629 / PEP 691 meta.api-version).
# 1.1: PEP 700 (versions, size, upload-time); 1.2: PEP 708 (tracks, alternate-locations);
# 1.3: PEP 740 (provenance); 1.4: PEP 792 (project-status).
MIRROR_API_VERSION = "1.4"


@dataclass(frozen=True, slots=True)
class DistFile:
    """One distribution file of a project, as an index page lists it."""

    filename: str
    url: str
    hashes: Mapping[str, str] = field(default_factory=dict)
    requires_python: str | None = None
    # PEP 592 / 691: False, True (yanked without a reason) or the reason string.
    yanked: bool | str = False
    # PEP 658 / 714: False, True (metadata exists, no hash known) or {"sha256": ...}.
    core_metadata: bool | Mapping[str, str] = False
    size: int | None = None
    upload_time: str | None = None
    provenance: str | None = None
    gpg_sig: bool | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def sha256(self) -> str | None:
        return self.hashes.get("sha256")

    def relinked(self, url: str, core_metadata: bool | Mapping[str, str]) -> DistFile:
        """The same file at ``url``, advertising ``core_metadata`` (``dataclasses.replace``
        without its cost: a page may list hundreds of thousands of files)."""
        return DistFile(
            self.filename,
            url,
            self.hashes,
            self.requires_python,
            self.yanked,
            core_metadata,
            self.size,
            self.upload_time,
            self.provenance,
            self.gpg_sig,
            self.extra,
        )

    @property
    def is_yanked(self) -> bool:
        return self.yanked is not False


@dataclass(frozen=True)
class ProjectPage:
    """A project's page: ``name`` is the normalised name (PEP 503)."""

    name: str
    files: tuple[DistFile, ...] = ()
    # PEP 700; None when upstream gave none (HTML) and nothing was derived.
    versions: tuple[str, ...] | None = None
    api_version: str = "1.0"
    last_serial: int | None = None
    # PEP 792: "active", "archived", "quarantined", "deprecated"; None = not stated.
    project_status: str | None = None
    project_status_reason: str | None = None
    # PEP 708
    tracks: tuple[str, ...] = ()
    alternate_locations: tuple[str, ...] = ()
    # Unknown top-level keys and unknown "meta" keys from an upstream JSON page.
    extra: Mapping[str, Any] = field(default_factory=dict)
    meta_extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RootEntry:
    """One project on the root ``/simple/`` page."""

    name: str
    last_serial: int | None = None
