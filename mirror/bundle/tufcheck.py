"""The TUF metadata a bundle carries, verified with this host's own pinned root.

The offline host runs python-tuf's client workflow (root → timestamp → snapshot →
targets, delegations as needed) over the bundle's ``web/tuf/`` files instead of the
network, in a scratch metadata directory bootstrapped from ``[tuf] root``: metadata signed
by another root, altered after signing, or expired is refused. In the ``files`` scheme
every distribution file of the bundle must then match its signed target (length and
every digest the target lists that we can compute). In the ``index`` scheme the targets
are the upstream's own page bytes, which a mirror does not keep: the chain of metadata
is verified, the pages are not (they were verified on the connected host).

Blocking (python-tuf is synchronous): called from a thread.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from tuf.api import exceptions as tuf_exceptions
from tuf.ngclient import FetcherInterface, Updater, UpdaterConfig

from mirror.bundle.errors import BundleError
from mirror.trust.paths import normalise_hashes

BASE_URL = "bundle://tuf/"


class _BundleFetcher(FetcherInterface):
    def __init__(self, files: Mapping[str, bytes]) -> None:
        self.files = files

    def _fetch(self, url: str) -> Iterator[bytes]:
        name = url.removeprefix(BASE_URL)
        data = self.files.get(name)
        if data is None:
            raise tuf_exceptions.DownloadHTTPError(f"{name} is not in the bundle", 404)
        return iter([data])


@dataclass(frozen=True)
class Target:
    length: int
    hashes: dict[str, str]  # our names (sha256, blake2b_256, ...)


class BundleTrust:
    """Verified TUF metadata of one bundle (``open`` refreshes once)."""

    def __init__(self, updater: Updater, workdir: tempfile.TemporaryDirectory[str]) -> None:
        self.updater = updater
        self._workdir = workdir

    @classmethod
    def open(cls, pinned_root: bytes, files: Mapping[str, bytes], scratch: Path) -> BundleTrust:
        workdir = tempfile.TemporaryDirectory(prefix="bundle-tuf-", dir=scratch)
        try:
            updater = Updater(
                workdir.name,
                BASE_URL,
                fetcher=_BundleFetcher(files),
                config=UpdaterConfig(prefix_targets_with_hash=False),
                bootstrap=pinned_root,
            )
            updater.refresh()
        except (tuf_exceptions.RepositoryError, tuf_exceptions.DownloadError, ValueError) as exc:
            workdir.cleanup()
            raise BundleError(
                f"the bundle's TUF metadata does not verify with this host's pinned root "
                f"({type(exc).__name__}: {exc})"
            ) from exc
        return cls(updater, workdir)

    def close(self) -> None:
        self._workdir.cleanup()

    def target(self, target_path: str) -> Target:
        try:
            info = self.updater.get_targetinfo(target_path)
        except (tuf_exceptions.RepositoryError, tuf_exceptions.DownloadError) as exc:
            raise BundleError(
                f"{target_path}: the bundle's TUF metadata does not verify ({exc})"
            ) from exc
        if info is None:
            raise BundleError(
                f"packages/{target_path}: no signed TUF target in the bundle's metadata"
            )
        try:
            return Target(info.length, normalise_hashes(info.hashes))
        except ValueError as exc:
            raise BundleError(f"packages/{target_path}: unusable signed target ({exc})") from exc
