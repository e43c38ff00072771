"""python-tuf's exceptions as the mirror's, at the trust layer's boundary.

Only the exception types we know are translated (httpx's ``map_exceptions`` is the
model); anything else is a bug, not a verdict on the metadata, and propagates unchanged
with its traceback — it is never turned into a refusal::

    tuf RepositoryError and subclasses          TrustError (do not trust this)
      (expired, rollback, signatures, length/hash mismatch, malformed metadata)
    tuf DownloadLengthMismatchError             TrustError (longer than signed)
    tuf SlowRetrievalError                      UpstreamTimeout
    tuf DownloadError and other subclasses      UpstreamUnavailable
    TimeoutError                                UpstreamTimeout
    OSError                                     StorageError (metadata directory, lock, store)
    MirrorError                                 itself

Catch :data:`KNOWN_ERRORS`, then ``raise translate(exc, what) from exc`` (or use
:func:`map_errors`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import assert_never

from tuf.api import exceptions as tuf_exceptions

from mirror.errors import (
    MirrorError,
    StorageError,
    TrustError,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)

KnownError = MirrorError | tuf_exceptions.RepositoryError | tuf_exceptions.DownloadError | OSError
#: The exception types the trust layer translates; anything else propagates.
KNOWN_ERRORS = (
    MirrorError,
    tuf_exceptions.RepositoryError,
    tuf_exceptions.DownloadError,
    OSError,
)


def translate(exc: KnownError, what: str) -> MirrorError:
    """``exc`` as the mirror's exception, its cause set, with a message that says what to do."""
    if isinstance(exc, MirrorError):
        return exc
    error = _translate(exc, what)
    error.__cause__ = exc
    return error


@contextmanager
def map_errors(what: str) -> Iterator[None]:
    """Raise the known exceptions of the block as the mirror's; let the others through."""
    try:
        yield
    except MirrorError:
        raise
    except KNOWN_ERRORS as exc:
        raise translate(exc, what) from exc


def _translate(
    exc: tuf_exceptions.RepositoryError | tuf_exceptions.DownloadError | OSError, what: str
) -> MirrorError:
    if isinstance(exc, tuf_exceptions.RepositoryError):
        return _refusal(exc, what)
    if isinstance(exc, tuf_exceptions.DownloadLengthMismatchError):
        return TrustError(f"{what}: longer than its signed TUF length ({exc})")
    if isinstance(exc, tuf_exceptions.SlowRetrievalError):
        return UpstreamTimeout(f"{what}: TUF metadata download timed out ({exc})")
    if isinstance(exc, tuf_exceptions.DownloadError):
        return UpstreamUnavailable(f"{what}: TUF metadata could not be downloaded ({exc})")
    if isinstance(exc, TimeoutError):
        return UpstreamTimeout(f"{what}: timed out ({exc})")
    if isinstance(exc, OSError):
        return StorageError(f"{what}: cannot read or write the TUF metadata in the store: {exc}")
    assert_never(exc)


def _refusal(exc: tuf_exceptions.RepositoryError, what: str) -> TrustError:
    if isinstance(exc, tuf_exceptions.ExpiredMetadataError):
        return TrustError(
            f"{what}: TUF metadata expired ({exc}); a freeze attack or an upstream that "
            "stopped re-signing: new content is refused until fresh metadata arrives"
        )
    if isinstance(exc, tuf_exceptions.BadVersionNumberError):
        return TrustError(
            f"{what}: TUF metadata version check failed ({exc}); a rollback (older metadata "
            "than this mirror already trusts) or an inconsistent upstream: new content is "
            "refused until consistent, newer metadata arrives"
        )
    if isinstance(exc, tuf_exceptions.UnsignedMetadataError):
        return TrustError(
            f"{what}: TUF signatures do not meet the threshold ({exc}); new content is "
            "refused until correctly signed metadata arrives"
        )
    if isinstance(exc, tuf_exceptions.LengthOrHashMismatchError):
        return TrustError(f"{what}: does not match its signed TUF length and hashes ({exc})")
    return TrustError(f"{what}: TUF metadata refused ({type(exc).__name__}: {exc})")


_KINDS: tuple[tuple[type[BaseException], str], ...] = (
    (tuf_exceptions.ExpiredMetadataError, "expired"),
    (tuf_exceptions.BadVersionNumberError, "rollback"),
    (tuf_exceptions.UnsignedMetadataError, "signature"),
    (tuf_exceptions.LengthOrHashMismatchError, "mismatch"),
    (tuf_exceptions.DownloadLengthMismatchError, "mismatch"),
    (tuf_exceptions.RepositoryError, "refused"),
    (tuf_exceptions.DownloadError, "unreachable"),
    (UpstreamError, "unreachable"),
    (StorageError, "storage"),
)


def error_kind(exc: BaseException) -> str:
    """A short name of what went wrong, for ``status()``; ``internal`` for a bug."""
    if not isinstance(exc, MirrorError):
        return "internal"
    for candidate in (exc.__cause__, exc):
        for cls, name in _KINDS:
            if isinstance(candidate, cls):
                return name
    return "error"
