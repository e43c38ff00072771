"""What ``state/bundle/`` remembers, through the Storage seam.

- identity: a random id naming this mirror as a bundle source (made at the first export);
- the last export: its range end (serial, or sequence number for a pull-through cache),
  when it started, and the projects held then (the next export's removals are the
  projects held then and not any more);
- the last import: the source mirror, the range end applied, the bundle's id;
- the import journal: present while a bundle is being applied, so that an import killed
  part way is finished by running it again (and no other bundle is applied meanwhile).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

from mirror.core import layout
from mirror.errors import StorageError
from mirror.storage import Storage

LIMIT = 1 << 20
T = TypeVar("T")
NAMES_LIMIT = 1 << 30


async def identity(storage: Storage) -> str:
    data = await storage.read_bytes(layout.BUNDLE_IDENTITY, limit=4096)
    if data and data.strip():
        return data.decode("ascii", "replace").strip()
    made = uuid.uuid4().hex
    await storage.write_bytes(layout.BUNDLE_IDENTITY, made.encode() + b"\n")
    return made


@dataclass(frozen=True)
class ExportState:
    kind: str  # RangeKind value
    end: int
    started_at: float
    bundle_id: str


@dataclass(frozen=True)
class ImportState:
    source: str
    kind: str
    end: int
    bundle_id: str


@dataclass(frozen=True)
class Journal:
    bundle_id: str
    source: str
    start: int
    end: int


async def _load(storage: Storage, rel: str) -> dict[str, object] | None:
    data = await storage.read_bytes(rel, limit=LIMIT)
    if data is None:
        return None
    try:
        raw = json.loads(data)
        if isinstance(raw, dict):
            return raw
    except ValueError:
        pass
    raise StorageError(f"{rel} in {storage.describe()} is damaged; move it away")


async def _save(storage: Storage, rel: str, value: Any) -> None:
    await storage.write_bytes(rel, json.dumps(asdict(value), sort_keys=True).encode() + b"\n")


def _build(cls: type[T], raw: dict[str, object] | None, rel: str) -> T | None:
    if raw is None:
        return None
    try:
        return cls(**raw)
    except TypeError as exc:
        raise StorageError(f"{rel} is damaged ({exc}); move it away") from exc


async def last_export(storage: Storage) -> ExportState | None:
    return _build(ExportState, await _load(storage, layout.BUNDLE_EXPORT), layout.BUNDLE_EXPORT)


async def save_export(storage: Storage, state: ExportState) -> None:
    await _save(storage, layout.BUNDLE_EXPORT, state)


async def last_import(storage: Storage) -> ImportState | None:
    return _build(ImportState, await _load(storage, layout.BUNDLE_IMPORTED), layout.BUNDLE_IMPORTED)


async def save_import(storage: Storage, state: ImportState) -> None:
    await _save(storage, layout.BUNDLE_IMPORTED, state)


async def journal(storage: Storage) -> Journal | None:
    return _build(Journal, await _load(storage, layout.BUNDLE_JOURNAL), layout.BUNDLE_JOURNAL)


async def open_journal(storage: Storage, entry: Journal) -> None:
    await _save(storage, layout.BUNDLE_JOURNAL, entry)


async def close_journal(storage: Storage) -> None:
    await storage.delete(layout.BUNDLE_JOURNAL)


async def exported_projects(storage: Storage) -> set[str]:
    """The projects held at the last export (a name is ~20 bytes: a few MB for PyPI)."""
    data = await storage.read_bytes(layout.BUNDLE_EXPORTED, limit=NAMES_LIMIT)
    return set(data.decode().split()) if data else set()


async def save_exported_projects(storage: Storage, names: AsyncIterator[str]) -> None:
    writer = storage.writer(layout.BUNDLE_EXPORTED)
    try:
        batch: list[str] = []
        async for name in names:
            batch.append(name + "\n")
            if len(batch) >= 4096:
                await writer.write("".join(batch).encode())
                batch.clear()
        await writer.write("".join(batch).encode())
        await writer.commit()
    finally:
        await writer.abort()
