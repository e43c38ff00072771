"""Re-serving the upstream's TUF metadata: verified files copied verbatim into ``web/tuf/``.

ngclient keeps what it verified in its metadata directory (``state/tuf/metadata/``:
``timestamp.json``, ``snapshot.json``, ``targets.json``, ``<role>.json``,
``root_history/N.root.json``). After an operation succeeded, those bytes are copied,
unchanged, to the consistent-snapshot names a TUF client asks for: ``timestamp.json``,
``N.root.json`` (every version, never pruned), ``N.snapshot.json``, ``N.targets.json``,
``N.<role>.json``. Only verified bytes ever reach ``web/tuf/``, each by an atomic rename.

Blocking file I/O: runs in the trust layer's worker thread, never on the event loop.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote

from mirror.log import get_logger
from mirror.storage import FileSystemStorage
from mirror.trust.paths import metadata_name, parse_metadata_name

log = get_logger("mirror.trust")

WEB_TUF = "web/tuf"
_ROOT_FILE = re.compile(r"^([1-9][0-9]{0,18})\.root\.json$")


def web_rel(name: str) -> str:
    """Storage path of a published metadata file."""
    return f"{WEB_TUF}/{name}"


def metadata_version(data: bytes) -> int:
    """``signed.version`` of metadata bytes; ValueError if there is none."""
    try:
        version = json.loads(data)["signed"]["version"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"not TUF metadata: {exc}") from exc
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"not TUF metadata: bad version {version!r}")
    return version


class Publisher:
    def __init__(self, storage: FileSystemStorage, metadata_dir: Path) -> None:
        self.storage = storage
        self.metadata_dir = metadata_dir

    def has(self, name: str) -> bool:
        return self.storage.path(web_rel(name)).is_file()

    def write(self, name: str, data: bytes, *, replace: bool) -> bool:
        """Write ``web/tuf/<name>`` atomically; False when it exists and ``replace`` is off."""
        dest = self.storage.path(web_rel(name))
        if not replace and dest.is_file():
            return False
        temp = self.storage.root / "tmp" / f"{secrets.token_hex(8)}.tuf.part"
        try:
            with temp.open("wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(temp, dest)
        finally:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
        return True

    def local(self, role: str) -> bytes | None:
        """ngclient's stored copy of ``role`` (unversioned name), or None."""
        try:
            return (self.metadata_dir / metadata_name(role, None)).read_bytes()
        except FileNotFoundError:
            return None

    def publish_role(self, role: str) -> int | None:
        """Publish ngclient's copy of ``role`` as ``N.<role>.json``; its version, or None."""
        data = self.local(role)
        if data is None:
            return None
        version = metadata_version(data)
        if self.write(metadata_name(role, version), data, replace=False):
            log.debug("tuf_metadata_published", role=role, version=version)
        return version

    def publish_timestamp(self) -> None:
        data = self.local("timestamp")
        if data is not None:
            self.write("timestamp.json", data, replace=True)

    def publish_roots(self) -> int:
        """Every root version ngclient holds (all kept, for clients that start from v1)."""
        history = self.metadata_dir / "root_history"
        count = 0
        if not history.is_dir():
            return 0
        for entry in os.scandir(history):
            if _ROOT_FILE.match(entry.name) and self.write(
                entry.name, Path(entry.path).read_bytes(), replace=False
            ):
                count += 1
        return count

    def prune(self, keep: Mapping[str, set[int]]) -> int:
        """Drop published versions older than every version in ``keep[role]``.

        ``keep`` holds, per role, the versions the current and the previous snapshot name,
        so a client in the middle of an update still finds what it started with. Roots
        and roles not named in ``keep`` are left alone.
        """
        folder = self.storage.path(WEB_TUF)
        if not folder.is_dir():
            return 0
        removed = 0
        for entry in os.scandir(folder):
            parsed = parse_metadata_name(entry.name)
            if parsed is None:
                continue
            version, role = parsed
            versions = keep.get(role)
            if version is not None and role != "root" and versions and version < min(versions):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed += 1
        return removed

    def write_local(self, role: str, data: bytes) -> None:
        """Store a verified delegated role where ngclient looks for it (atomically)."""
        dest = self.metadata_dir / f"{quote(role, '')}.json"
        temp = self.metadata_dir / f".{secrets.token_hex(8)}.part"
        try:
            temp.write_bytes(data)
            os.replace(temp, dest)
        finally:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
