"""The blocking half of the trust layer: python-tuf's ngclient over one metadata directory.

Everything here blocks (ngclient is synchronous) and runs in the trust layer's single
worker thread; an exclusive ``flock`` on ``state/tuf/lock`` also keeps other processes
(``sync``, ``import``) from using the same metadata directory at the same time.

An ``Updater`` can refresh only once, so every refresh makes a new one, bootstrapped from
the pinned root: ngclient then walks the newer roots it stored before (and any new ones
upstream), loads the stored timestamp and snapshot as the baseline for rollback checks,
and downloads what is new. What ngclient verified stays in the metadata directory, so
rollback protection survives restarts; verified files are copied verbatim to ``web/tuf/``.
"""

from __future__ import annotations

import fcntl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote

from tuf.api.metadata import Metadata, Root, Snapshot, TargetFile, Targets, Timestamp
from tuf.ngclient import Updater, UpdaterConfig

from mirror.trust.delegations import DelegationLoader
from mirror.trust.fetcher import LoopFetcher
from mirror.trust.paths import metadata_name, parse_metadata_name
from mirror.trust.publish import Publisher, metadata_version


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


class TufCore:
    """ngclient, the metadata directory and the published copies. Blocking; one thread."""

    def __init__(
        self,
        *,
        metadata_dir: Path,
        bootstrap: bytes,
        metadata_url: str,
        fetcher: LoopFetcher,
        publisher: Publisher,
        config: UpdaterConfig | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.metadata_dir = metadata_dir
        self.bootstrap = bootstrap
        self.metadata_url = metadata_url
        self.fetcher = fetcher
        self.publisher = publisher
        self.config = config or UpdaterConfig(prefix_targets_with_hash=False)
        self.now = now
        self.lock_path = metadata_dir.parent / "lock"
        self.updater: Updater | None = None
        self.view: TrustedView | None = None

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        self.metadata_dir.mkdir(parents=True, exist_ok=True)
        with self.lock_path.open("a+b") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                self.fetcher.fetched.clear()
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def refresh(self) -> TrustedView:
        """Root → timestamp → snapshot → targets, as the TUF client workflow says.

        Raises tuf's RepositoryError (expired, rollback, bad signatures...), DownloadError
        (network) or OSError. On failure the previous updater and view stay as they were.
        """
        with self._exclusive():
            updater = Updater(
                str(self.metadata_dir),
                self.metadata_url,
                fetcher=self.fetcher,
                config=self.config,
                bootstrap=self.bootstrap,
            )
            try:
                updater.refresh()
            finally:
                # Roots are verified one by one as ngclient stores them: publish them even
                # when a later step (timestamp, snapshot) was refused.
                self.publisher.publish_roots()
            view = self._read_view()
            previous, self.updater, self.view = self.view, updater, view
            self._publish(view, previous)
            return view

    def lookup(self, target_path: str) -> TargetFile | None:
        """The signed target info for ``target_path`` (delegations walked), or None."""
        assert self.updater is not None, "refresh() first"
        with self._exclusive():
            info = self.updater.get_targetinfo(target_path)
            self._publish_fetched()
            return info

    def delegated_role(self, role: str, version: int) -> bool:
        """Make ``N.<role>.json`` of a delegated role available in ``web/tuf/``.

        True when published (or already there); False when ``version`` is not the one
        the trusted snapshot names. Raises RepositoryError/DownloadError otherwise.
        """
        view = self.view
        if view is None:
            return False
        with self._exclusive():
            loader = DelegationLoader(
                snapshot=view.snapshot,
                targets=view.targets,
                consistent_snapshot=view.consistent_snapshot,
                local=self.publisher.local,
                download=lambda name, limit: self.fetcher.get(self.metadata_url + name, limit),
                now=self.now(),
            )
            if loader.meta(role).version != version:
                return False
            data = loader.verified(role)
            for fetched_role, fetched in loader.fetched.items():
                self.publisher.write_local(fetched_role, fetched)
                self.publisher.write(
                    metadata_name(fetched_role, metadata_version(fetched)), fetched, replace=False
                )
            self.publisher.write(metadata_name(role, version), data, replace=False)
            return True

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

    def _publish(self, view: TrustedView, previous: TrustedView | None) -> None:
        """Copy the verified top-level metadata to ``web/tuf/`` and prune old versions."""
        self.publisher.publish_role("snapshot")
        self.publisher.publish_role("targets")
        self.publisher.publish_timestamp()
        keep: dict[str, set[int]] = {}
        for role, version in view.role_versions().items():
            keep.setdefault(role, set()).add(version)
        if previous is not None:
            for role, version in previous.role_versions().items():
                if role in keep:
                    keep[role].add(version)
        self.publisher.prune(keep)

    def _publish_fetched(self) -> None:
        """Publish the delegated roles ngclient downloaded (and so verified) just now."""
        for url in self.fetcher.fetched:
            parsed = parse_metadata_name(unquote(url.rsplit("/", 1)[-1]))
            if parsed is None or parsed[1] in ("root", "timestamp", "snapshot", "targets"):
                continue
            self.publisher.publish_role(parsed[1])
