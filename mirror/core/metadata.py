"""Where a file's core metadata (PEP 658 ``<file>.metadata``) comes from, and what the
mirror's page advertises for it (pure). One rule for every writer of a project.

- ``UPSTREAM``: the upstream offers it with a digest the mirror can check, and trust does
  not require signed bytes: verify it against that digest — extracted from the verified
  wheel when the mirror holds it (PEP 658: it is the wheel's METADATA, unmodified), else
  (or if those bytes do not match) fetched from ``<url>.metadata``.
- ``WHEEL``: extract ``*.dist-info/METADATA`` from the verified wheel. Also when the
  upstream offers none, offers one without a usable digest, or only distribution files are
  signed (TUF ``files`` scheme: an unsigned page cannot vouch for the metadata).
- ``NONE``: not a wheel and nothing checkable offered.

Advertised is only what a ``.metadata`` request would be answered with, verified: the
upstream digest for ``UPSTREAM``; for ``WHEEL`` the sha256 of the extracted file once it
exists (before that, ``True`` if the upstream said metadata exists: it is extracted on
request); nothing for ``NONE``.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum

from mirror.core.model import DistFile
from mirror.core.names import is_wheel
from mirror.core.verify import SUPPORTED


class MetadataSource(Enum):
    UPSTREAM = "upstream"
    WHEEL = "wheel"
    NONE = "none"


def metadata_source(file: DistFile, *, signed_files_only: bool) -> MetadataSource:
    core = file.core_metadata
    checkable = isinstance(core, Mapping) and any(a in SUPPORTED for a in core)
    if checkable and not signed_files_only:
        return MetadataSource.UPSTREAM
    if is_wheel(file.filename):
        return MetadataSource.WHEEL
    return MetadataSource.NONE


def advertised_metadata(
    file: DistFile, source: MetadataSource, extracted_sha256: str | None
) -> bool | Mapping[str, str]:
    """The ``core-metadata`` value the mirror's page gives ``file``."""
    if source is MetadataSource.UPSTREAM:
        return file.core_metadata
    if source is MetadataSource.WHEEL:
        if extracted_sha256 is not None:
            return {"sha256": extracted_sha256}
        return file.core_metadata is not False
    return False
