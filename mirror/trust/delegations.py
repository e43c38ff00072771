"""Verifying a delegated targets role by name, for clients that ask ``/tuf/`` for it.

ngclient loads a delegated role only while it looks up a target the role covers. A TUF
client behind the mirror asks for roles the mirror may not have needed yet (the bin of a
file nobody has downloaded through the mirror), and ``/tuf/`` serves only verified
metadata. So this module verifies a role by name with the public Metadata API, with the
same checks ngclient's ``TrustedMetadataSet.update_delegated_targets`` makes: the version
and (when listed) length and hashes the trusted snapshot gives, a threshold of signatures
from the keys its delegator names, and expiry. The delegator is found by walking the
delegation graph from the trusted top-level targets (succinct hash bins are matched by
name without loading any sibling; explicit ``roles`` are walked depth-first, at most
``max_delegations`` roles).

Blocking: runs in the trust layer's worker thread.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from tuf.api import exceptions as tuf_exceptions
from tuf.api.metadata import Metadata, MetaFile, Snapshot, Targets

from mirror.trust.paths import metadata_name

#: ngclient's default bound for a targets file whose length the snapshot does not give.
TARGETS_MAX_LENGTH = 5_000_000

Download = Callable[[str, int], bytes]
LocalCopy = Callable[[str], bytes | None]


class DelegationLoader:
    """Verified delegated roles, from ngclient's stored copies or downloaded.

    ``fetched`` maps each role this loader downloaded (and verified) to its bytes, for the
    caller to store and publish.
    """

    def __init__(
        self,
        *,
        snapshot: Metadata[Snapshot],
        targets: Metadata[Targets],
        consistent_snapshot: bool,
        local: LocalCopy,
        download: Download,
        now: datetime,
        max_delegations: int = 32,
    ) -> None:
        self.snapshot = snapshot
        self.targets = targets
        self.consistent_snapshot = consistent_snapshot
        self.local = local
        self.download = download
        self.now = now
        self.max_delegations = max_delegations
        self.fetched: dict[str, bytes] = {}
        self._loaded: dict[str, tuple[Metadata[Targets], bytes]] = {}

    def meta(self, role: str) -> MetaFile:
        meta = self.snapshot.signed.meta.get(f"{role}.json")
        if meta is None:
            raise tuf_exceptions.RepositoryError(
                f"role {role!r} is not listed by snapshot v{self.snapshot.signed.version}"
            )
        return meta

    def verified(self, role: str) -> bytes:
        """The bytes of ``role`` at the version the trusted snapshot names, verified."""
        delegator = self._find_delegator(role)
        return self._load(role, delegator)[1]

    def _find_delegator(self, role: str) -> Metadata[Targets]:
        stack: list[tuple[str, Metadata[Targets] | None]] = [("targets", None)]
        visited: set[str] = set()
        while stack and len(visited) < self.max_delegations:
            name, parent = stack.pop()
            if name in visited:
                continue
            visited.add(name)
            current = self.targets if parent is None else self._load(name, parent)[0]
            delegations = current.signed.delegations
            if delegations is None:
                continue
            if delegations.roles is not None:
                if role in delegations.roles:
                    return current
                stack.extend((child, current) for child in reversed(delegations.roles))
            elif (
                delegations.succinct_roles is not None
                and delegations.succinct_roles.is_delegated_role(role)
            ):
                return current
        raise tuf_exceptions.RepositoryError(
            f"role {role!r} is not delegated by the trusted targets metadata"
        )

    def _load(self, role: str, delegator: Metadata[Targets]) -> tuple[Metadata[Targets], bytes]:
        if role in self._loaded:
            return self._loaded[role]
        meta = self.meta(role)
        data = self.local(role)
        result: Metadata[Targets] | None = None
        if data is not None:
            try:
                result = self._verify(role, data, meta, delegator)
            except tuf_exceptions.RepositoryError:
                result = None
        if result is None:
            name = metadata_name(role, meta.version if self.consistent_snapshot else None)
            data = self.download(name, meta.length or TARGETS_MAX_LENGTH)
            result = self._verify(role, data, meta, delegator)
            self.fetched[role] = data
        assert data is not None
        self._loaded[role] = (result, data)
        return result, data

    def _verify(
        self, role: str, data: bytes, meta: MetaFile, delegator: Metadata[Targets]
    ) -> Metadata[Targets]:
        meta.verify_length_and_hashes(data)
        md = Metadata[Targets].from_bytes(data)
        if md.signed.type != Targets.type:
            raise tuf_exceptions.RepositoryError(
                f"{role}: expected targets metadata, got {md.signed.type!r}"
            )
        delegator.signed.verify_delegate(role, md.signed_bytes, md.signatures)
        if md.signed.version != meta.version:
            raise tuf_exceptions.BadVersionNumberError(
                f"{role}: snapshot names v{meta.version}, got v{md.signed.version}"
            )
        if md.signed.is_expired(self.now):
            raise tuf_exceptions.ExpiredMetadataError(f"{role} expired at {md.signed.expires}")
        return md
