"""Storage: the Protocol every backend fits, and the filesystem backend (the default).

Code outside this package is typed against :class:`Storage` only; ``open_storage`` is the
one place that picks a backend.
"""

from mirror.config import StorageConfig
from mirror.storage.base import (
    AppendLog,
    AtomicWriter,
    ByteReader,
    FileInfo,
    Storage,
    StoreLock,
)
from mirror.storage.failures import storage_failure
from mirror.storage.filesystem import FileSystemStorage, replace_local_file
from mirror.storage.text import read_lines

__all__ = [
    "AppendLog",
    "AtomicWriter",
    "ByteReader",
    "FileInfo",
    "Storage",
    "StoreLock",
    "open_storage",
    "read_lines",
    "replace_local_file",
    "storage_failure",
]


def open_storage(config: StorageConfig, *, create: bool = True) -> Storage:
    """The configured store. ``create``: make it if needed, check that it is writable and
    clean up what dead processes left (blocking; start-up); else only look at it."""
    if create:
        return FileSystemStorage.open(config.path)
    return FileSystemStorage(config.path.expanduser().absolute())
