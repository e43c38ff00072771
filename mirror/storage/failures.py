"""A failed write to the store as a one-line ``StorageError`` a user can act on."""

from __future__ import annotations

import errno

from mirror.errors import StorageError

_REASONS = {
    errno.ENOSPC: "no space left on",
    errno.EDQUOT: "disk quota exceeded on",
    errno.EROFS: "read-only file system at",
    errno.EACCES: "permission denied in",
    errno.EPERM: "operation not permitted in",
    errno.EMFILE: "too many open files for",
    errno.ENFILE: "too many open files for",
}


def storage_failure(exc: OSError, what: str, where: str) -> StorageError:
    """``cannot store <what>: no space left on <where>`` and the like, for an ``OSError``
    raised while storing ``what`` in the store at ``where`` (``Storage.describe()``)."""
    reason = _REASONS.get(exc.errno or 0)
    if reason is not None:
        return StorageError(f"cannot store {what}: {reason} {where}")
    detail = exc.strerror or str(exc) or type(exc).__name__
    return StorageError(f"cannot store {what} in {where}: {detail}")
