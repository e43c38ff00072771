"""Exceptions of pypi-mirror.

::

    MirrorError
    ├── ConfigError                  bad configuration: names the key and the file
    ├── StorageError                 the storage root cannot be used
    │   └── UnsafePathError          a path would leave the storage root
    ├── LockHeld                     another process holds a lock of the store
    ├── IntegrityError               bytes that do not match what was promised
    │   ├── LengthMismatch
    │   ├── DigestMismatch
    │   └── TrustError               TUF refused (bad signature, expired, rollback, no target)
    └── UpstreamError                the upstream could not give us what we asked
        ├── UpstreamUnavailable      connection refused, 5xx after retries
        │   └── UpstreamTimeout      no answer in time
        ├── UpstreamStatusError      a 4xx we did not expect
        ├── UpstreamNotFound         404: the upstream has no such project or file
        ├── UpstreamTooLarge         a page or file over its size bound
        ├── UpstreamProtocolError    a malformed page or response
        └── ForbiddenHost            a URL outside the configured upstream hosts

Integrity failures and upstream failures are distinct roots on purpose: an integrity failure
means someone (CDN, upstream, network) handed us wrong bytes and must never be retried into
success silently or served stale in place of the right answer; an upstream failure is
transport trouble where serving the last good copy is correct.
"""

from __future__ import annotations


class MirrorError(Exception):
    """Root of every error pypi-mirror raises on purpose."""


class ConfigError(MirrorError):
    def __init__(self, message: str, *, source: str | None = None, key: str | None = None):
        where = ""
        if source and key:
            where = f"{source}: {key}: "
        elif source:
            where = f"{source}: "
        elif key:
            where = f"{key}: "
        super().__init__(f"{where}{message}")
        self.source = source
        self.key = key


class StorageError(MirrorError):
    pass


class UnsafePathError(StorageError):
    pass


class LockHeld(MirrorError):
    def __init__(self, lock: str, holder: int | None):
        who = f" by pid {holder}" if holder else ""
        super().__init__(f"lock {lock} is held{who}")
        self.lock = lock
        self.holder = holder


class IntegrityError(MirrorError):
    pass


class LengthMismatch(IntegrityError):
    def __init__(self, what: str, expected: int, actual: int):
        super().__init__(f"{what}: expected {expected} bytes, got {actual}")
        self.expected = expected
        self.actual = actual


class DigestMismatch(IntegrityError):
    def __init__(self, what: str, algorithm: str, expected: str, actual: str):
        super().__init__(f"{what}: {algorithm} expected {expected}, got {actual}")
        self.algorithm = algorithm
        self.expected = expected
        self.actual = actual


class TrustError(IntegrityError):
    pass


class UpstreamError(MirrorError):
    pass


class UpstreamUnavailable(UpstreamError):
    pass


class UpstreamTimeout(UpstreamUnavailable):
    pass


class UpstreamStatusError(UpstreamError):
    def __init__(self, url: str, status: int):
        super().__init__(f"upstream answered {status} for {url}")
        self.url = url
        self.status = status


class UpstreamNotFound(UpstreamStatusError):
    def __init__(self, url: str):
        super().__init__(url, 404)


class UpstreamTooLarge(UpstreamError):
    pass


class UpstreamProtocolError(UpstreamError):
    pass


class ForbiddenHost(UpstreamError):
    pass
