"""Storage: the Protocol every backend fits, and the filesystem backend (the default)."""

from mirror.storage.base import AtomicWriter, FileInfo, Storage
from mirror.storage.filesystem import FileSystemStorage

__all__ = ["AtomicWriter", "FileInfo", "FileSystemStorage", "Storage"]
