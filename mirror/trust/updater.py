"""The blocking half of the trust layer: python-tuf's ngclient over one metadata directory.

Everything here blocks (ngclient is synchronous) and runs in the trust layer's single
worker thread; the store's lock on ``state/tuf/lock`` also keeps other processes
(``sync``, ``import``) from using the same metadata directory at the same time.

An ``Updater`` can refresh only once, so every refresh makes a new one, bootstrapped from
the pinned root: ngclient then walks the newer roots it stored before (and any new ones
upstream), loads the stored timestamp and snapshot as the baseline for rollback checks,
and downloads what is new. What ngclient verified stays in the metadata directory, so
rollback protection survives restarts.

Nothing here writes to the store: each operation returns the verified bytes to publish
(:class:`~mirror.trust.publish.Publication`), which the async side writes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote

from tuf.api.metadata import Metadata, Root, Snapshot, TargetFile, Targets, Timestamp
from tuf.ngclient import Updater, UpdaterConfig

from mirror.storage import StoreLock
from mirror.trust.delegations import DelegationLoader
from mirror.trust.fetcher import LoopFetcher
from mirror.trust.paths import is_top_level, metadata_name, parse_metadata_name
from mirror.trust.publish import LocalMetadata, Publication, metadata_version


@dataclass(frozen=True)
class TrustedView:
    """The top-level metadata as of the last successful refresh."""

    root_version: int
    timestamp_version: int
    snapshot_version: int
    targets_version: int
    #: The earliest expiry of root, timestamp, snapshot and targets.
    expires: datetime
    consistent_snapshot: bool
    snapshot: Metadata[Snapshot]
    targets: Metadata[Targets]

    def role_versions(self) -> dict[str, int]:
        """Every role's version by this view (snapshot included, root and timestamp not)."""
        versions = {"snapshot": self.snapshot_version}
        for filename, meta in self.snapshot.signed.meta.items():
            versions[filename.removesuffix(".json")] = meta.version
        return versions


@dataclass(frozen=True)
class Refreshed:
    """A successful refresh: the new view, what to publish (in order) and, per role, the
    published versions to keep (older ones are pruned)."""

    view: TrustedView
    publications: tuple[Publication, ...]
    keep: dict[str, frozenset[int]]


@dataclass(frozen=True)
class Lookup:
    """A target's signed info (None: no such target) and the delegated roles ngclient
    verified on the way, to publish."""

    info: TargetFile | None
    publications: tuple[Publication, ...]


class TufCore:
    """ngclient over its metadata directory. Blocking; one thread."""

    def __init__(
        self,
        *,
        metadata_dir: Path,
        lock: StoreLock,
        bootstrap: bytes,
        metadata_url: str,
        fetcher: LoopFetcher,
        config: UpdaterConfig | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.metadata_dir = metadata_dir
        self.local = LocalMetadata(metadata_dir)
        self.lock = lock
        self.bootstrap = bootstrap
        self.metadata_url = metadata_url
        self.fetcher = fetcher
        self.config = config or UpdaterConfig(prefix_targets_with_hash=False)
        self.now = now
        self.updater: Updater | None = None
        self.view: TrustedView | None = None

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        self.metadata_dir.mkdir(parents=True, exist_ok=True)
        self.lock.acquire(wait=True)
        try:
            self.fetcher.fetched.clear()
            yield
        finally:
            self.lock.release()

    def refresh(self) -> Refreshed:
        """Root → timestamp → snapshot → targets, as the TUF client workflow says.

        Raises tuf's RepositoryError (expired, rollback, bad signatures...), DownloadError
        (network) or OSError. On failure the previous updater and view stay as they were;
        the roots verified before the failure are then published with :meth:`roots`.
        """
        with self._exclusive():
            updater = Updater(
                str(self.metadata_dir),
                self.metadata_url,
                fetcher=self.fetcher,
                config=self.config,
                bootstrap=self.bootstrap,
            )
            updater.refresh()
            view = self._read_view()
            publications = self._top_level()
            previous, self.updater, self.view = self.view, updater, view
            return Refreshed(view, publications, _keep(view, previous))

    def roots(self) -> tuple[Publication, ...]:
        """Every root ngclient verified and stored (each as ngclient stores it, one by one:
        also those of a refresh refused at a later step)."""
        with self._exclusive():
            return tuple(self.local.roots())

    def lookup(self, target_path: str) -> Lookup:
        """The signed target info for ``target_path`` (delegations walked)."""
        assert self.updater is not None, "refresh() first"
        with self._exclusive():
            info = self.updater.get_targetinfo(target_path)
            return Lookup(info, self._fetched_roles())

    def delegated_role(self, role: str, version: int) -> tuple[Publication, ...] | None:
        """What makes ``N.<role>.json`` of a delegated role available in ``web/tuf/``.

        None when ``version`` is not the one the trusted snapshot names (or nothing is
        trusted yet). Raises RepositoryError/DownloadError when the role cannot be
        verified. Roles the loader downloaded are also stored for ngclient.
        """
        view = self.view
        if view is None:
            return None
        with self._exclusive():
            loader = DelegationLoader(
                snapshot=view.snapshot,
                targets=view.targets,
                consistent_snapshot=view.consistent_snapshot,
                local=self.local.read,
                download=lambda name, limit: self.fetcher.get(self.metadata_url + name, limit),
                now=self.now(),
            )
            if loader.meta(role).version != version:
                return None
            data = loader.verified(role)
            publications: list[Publication] = []
            for fetched_role, fetched in loader.fetched.items():
                name = metadata_name(fetched_role, metadata_version(fetched))
                publications += [
                    Publication.trusted(fetched_role, fetched),
                    Publication.web(name, fetched),
                ]
            publications.append(Publication.web(metadata_name(role, version), data))
            return tuple(publications)

    def _read_view(self) -> TrustedView:
        def load(name: str) -> bytes:
            return (self.metadata_dir / name).read_bytes()

        root = Metadata[Root].from_bytes(load("root.json"))
        timestamp = Metadata[Timestamp].from_bytes(load("timestamp.json"))
        snapshot = Metadata[Snapshot].from_bytes(load("snapshot.json"))
        targets = Metadata[Targets].from_bytes(load("targets.json"))
        expires = min(md.signed.expires for md in (root, timestamp, snapshot, targets))
        return TrustedView(
            root_version=root.signed.version,
            timestamp_version=timestamp.signed.version,
            snapshot_version=snapshot.signed.version,
            targets_version=targets.signed.version,
            expires=expires,
            consistent_snapshot=bool(root.signed.consistent_snapshot),
            snapshot=snapshot,
            targets=targets,
        )

    def _top_level(self) -> tuple[Publication, ...]:
        """The verified top-level metadata ngclient holds: roots, snapshot, targets, then
        the timestamp (last, so that a client following it finds everything it names)."""
        found = [*self.local.roots(), self.local.role("snapshot"), self.local.role("targets")]
        found.append(self.local.timestamp())
        return tuple(item for item in found if item is not None)

    def _fetched_roles(self) -> tuple[Publication, ...]:
        """The delegated roles ngclient downloaded (and so verified) in this operation."""
        publications: list[Publication] = []
        for url in self.fetcher.fetched:
            parsed = parse_metadata_name(unquote(url.rsplit("/", 1)[-1]))
            if parsed is None or is_top_level(parsed[1]):
                continue
            publication = self.local.role(parsed[1])
            if publication is not None:
                publications.append(publication)
        return tuple(publications)


def _keep(view: TrustedView, previous: TrustedView | None) -> dict[str, frozenset[int]]:
    """Per role, the versions the current and the previous view name."""
    keep: dict[str, set[int]] = {}
    for role, version in view.role_versions().items():
        keep.setdefault(role, set()).add(version)
    if previous is not None:
        for role, version in previous.role_versions().items():
            if role in keep:
                keep[role].add(version)
    return {role: frozenset(versions) for role, versions in keep.items()}
