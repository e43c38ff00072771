"""Re-serving the upstream's TUF metadata: verified files copied verbatim into ``web/tuf/``.

ngclient keeps what it verified in its metadata directory (``state/tuf/metadata/``:
``timestamp.json``, ``snapshot.json``, ``targets.json``, ``<role>.json``,
``root_history/N.root.json``). After an operation succeeded, those bytes are copied,
unchanged, to the consistent-snapshot names a TUF client asks for: ``timestamp.json``,
``N.root.json`` (every version, never pruned), ``N.snapshot.json``, ``N.targets.json``,
``N.<role>.json``. Only verified bytes ever reach ``web/tuf/``.

Two halves, so that the store is written by its own atomic-write implementation only:

* :class:`LocalMetadata` (blocking, the trust worker thread) reads ngclient's directory
  and says what to publish, as :class:`Publication` values;
* :func:`publish` and :func:`prune` (async, the event loop) write and delete through the
  :class:`~mirror.storage.base.Storage` seam.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from mirror.core import layout
from mirror.log import get_logger
from mirror.storage import Storage
from mirror.trust.paths import metadata_name, parse_metadata_name

log = get_logger("mirror.trust")

_ROOT_FILE = re.compile(r"^([1-9][0-9]{0,18})\.root\.json$")
_ROOT_HISTORY = "root_history"


def metadata_version(data: bytes) -> int:
    """``signed.version`` of metadata bytes; ValueError if there is none."""
    try:
        version = json.loads(data)["signed"]["version"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"not TUF metadata: {exc}") from exc
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"not TUF metadata: bad version {version!r}")
    return version


@dataclass(frozen=True)
class Publication:
    """Verified metadata bytes to store at ``rel``; without ``replace``, a file already
    there is left as it is (versioned names never change content)."""

    rel: str
    data: bytes
    replace: bool

    @classmethod
    def web(cls, name: str, data: bytes, *, replace: bool = False) -> Publication:
        """``web/tuf/<name>``."""
        return cls(layout.web_tuf(name), data, replace)

    @classmethod
    def trusted(cls, role: str, data: bytes) -> Publication:
        """ngclient's copy of a verified delegated role, where it looks for it."""
        return cls(layout.tuf_metadata(metadata_name(role, None)), data, replace=True)


class LocalMetadata:
    """ngclient's metadata directory, read only. Blocking: the trust worker thread."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def read(self, role: str) -> bytes | None:
        """ngclient's stored copy of ``role`` (unversioned name), or None."""
        try:
            return (self.directory / metadata_name(role, None)).read_bytes()
        except FileNotFoundError:
            return None

    def role(self, role: str) -> Publication | None:
        """ngclient's copy of ``role`` as ``N.<role>.json``, or None when it has none."""
        data = self.read(role)
        if data is None:
            return None
        return Publication.web(metadata_name(role, metadata_version(data)), data)

    def timestamp(self) -> Publication | None:
        data = self.read("timestamp")
        return None if data is None else Publication.web("timestamp.json", data, replace=True)

    def roots(self) -> list[Publication]:
        """Every root version ngclient holds (all kept, for clients that start from v1),
        oldest first."""
        history = self.directory / _ROOT_HISTORY
        try:
            names = [entry.name for entry in os.scandir(history)]
        except FileNotFoundError:
            return []
        roots: list[tuple[int, Publication]] = []
        for name in names:
            match = _ROOT_FILE.match(name)
            if match:
                data = (history / name).read_bytes()
                roots.append((int(match.group(1)), Publication.web(name, data)))
        return [publication for _, publication in sorted(roots, key=lambda item: item[0])]


async def publish(storage: Storage, publications: Iterable[Publication]) -> int:
    """Write ``publications`` in order, each atomically; the number written."""
    written = 0
    for item in publications:
        if not item.replace and await storage.exists(item.rel):
            continue
        await storage.write_bytes(item.rel, item.data)
        written += 1
        log.debug("tuf_metadata_published", path=item.rel)
    return written


async def prune(storage: Storage, keep: Mapping[str, Collection[int]]) -> int:
    """Drop published versions older than every version in ``keep[role]``.

    ``keep`` holds, per role, the versions the current and the previous snapshot name,
    so a client in the middle of an update still finds what it started with. Roots
    and roles not named in ``keep`` are left alone.
    """
    doomed: list[str] = []
    prefix = layout.web_tuf("")
    async for info in storage.iter_files(layout.WEB_TUF):
        name = info.rel.removeprefix(prefix)
        if "/" in name:
            continue
        parsed = parse_metadata_name(name)
        if parsed is None:
            continue
        version, role = parsed
        versions = keep.get(role)
        if version is not None and role != "root" and versions and version < min(versions):
            doomed.append(info.rel)
    removed = 0
    for rel in doomed:
        removed += await storage.delete(rel)
    return removed
