"""A TUF repository for tests: real metadata signed with fresh Ed25519 keys, served by FakePyPI.

Built with python-tuf's Metadata API (like python-tuf's ``tests/repository_simulator.py``),
no hand-written JSON. Consistent snapshots, flat layout under ``/tuf/``::

    /tuf/1.root.json, 2.root.json ...   every root version
    /tuf/timestamp.json
    /tuf/N.snapshot.json, N.targets.json, N.<bin>.json

Two delegation shapes:

* ``"succinct"`` (RSTUF): targets delegates to ``bins-0`` … ``bins-<2^bits-1>`` with
  ``succinct_roles`` (hash bins by the target path's sha256);
* ``"bins"`` (PEP 458): targets delegates everything (``*`` and ``*/*/*/*``: TUF patterns do
  not match across ``/``) to ``bins``, which delegates to ``bin-0`` … with
  ``path_hash_prefixes``.

Usage::

    repo = TufRepo(pypi, shape="bins")
    repo.add_file(pypi.add_file("demo", wheel))   # files scheme: a target per file
    repo.add_index("demo")                         # index scheme: the project page
    repo.publish()
    root_path.write_bytes(repo.root_bytes)         # what the mirror pins

Faults: ``expire(role)``, ``rollback_snapshot(version)``, ``replay_timestamp(i)``,
``rotate_root()``, ``sign_only(role, n)`` (break a threshold), ``remove_target(path)``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from securesystemslib.signer import CryptoSigner, Signer
from tuf.api.metadata import (
    DelegatedRole,
    Delegations,
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    SuccinctRoles,
    TargetFile,
    Targets,
    Timestamp,
)

from tests.fakepypi import FakePyPI, FileRecord
from tests.fakepypi.render import TEXT_HTML, simple_project

__all__ = ["TufRepo"]

Shape = Literal["succinct", "bins"]
TOP_LEVEL = ("root", "timestamp", "snapshot", "targets")


def _expiry(delta: timedelta) -> datetime:
    return (datetime.now(UTC) + delta).replace(microsecond=0)


def _new_signers(count: int) -> list[Signer]:
    return [CryptoSigner.generate_ed25519() for _ in range(count)]


class TufRepo:
    """Signs and publishes TUF metadata into ``pypi`` (``add_static``) as it changes."""

    def __init__(
        self,
        pypi: FakePyPI,
        *,
        shape: Shape = "succinct",
        bits: int = 3,
        prefix: str = "/tuf/",
        thresholds: Mapping[str, int] | None = None,
        lifetime: timedelta = timedelta(days=7),
    ) -> None:
        self.pypi = pypi
        self.shape = shape
        self.bits = bits
        self.prefix = prefix
        self.lifetime = lifetime
        thresholds = dict(thresholds or {})
        self.thresholds = thresholds
        self.signers: dict[str, list[Signer]] = {}
        #: Sign a role with only its first N keys (to break its threshold).
        self.sign_limit: dict[str, int] = {}
        self.md: dict[str, Metadata[Any]] = {}
        self.dirty: set[str] = set()
        self.published: dict[str, int] = {}
        #: Every timestamp.json served so far, oldest first (for replays).
        self.timestamps: list[bytes] = []
        #: Every root version's bytes, by version.
        self.roots: dict[int, bytes] = {}

        root = Root(expires=_expiry(lifetime), consistent_snapshot=True)
        for role in TOP_LEVEL:
            count = thresholds.get(role, 1)
            root.roles[role].threshold = count
            self.signers[role] = _new_signers(count)
            for signer in self.signers[role]:
                root.add_key(signer.public_key, role)
        self.md["root"] = Metadata(root)
        self.md["timestamp"] = Metadata(Timestamp(expires=_expiry(lifetime)))
        self.md["snapshot"] = Metadata(Snapshot(expires=_expiry(lifetime)))
        self.md["targets"] = Metadata(Targets(expires=_expiry(lifetime)))
        self.bin_roles: list[str] = []
        self._delegate()
        self._publish_root()
        self.dirty.update(["targets", "snapshot", *self.md])
        self.publish()

    # -- set-up ----------------------------------------------------------------------------

    def _delegate(self) -> None:
        targets: Targets = self.md["targets"].signed
        count = self.thresholds.get("bins", 1)
        bin_signers = _new_signers(count)
        keys = {s.public_key.keyid: s.public_key for s in bin_signers}
        keyids = list(keys)
        if self.shape == "succinct":
            succinct = SuccinctRoles(keyids, count, self.bits, "bins")
            targets.delegations = Delegations(keys=keys, succinct_roles=succinct)
            self.bin_roles = list(succinct.get_roles())
        else:
            outer = _new_signers(1)
            outer_keys = {s.public_key.keyid: s.public_key for s in outer}
            targets.delegations = Delegations(
                keys=outer_keys,
                roles={
                    "bins": DelegatedRole("bins", list(outer_keys), 1, True, paths=["*", "*/*/*/*"])
                },
            )
            bins = Targets(expires=_expiry(self.lifetime))
            number = 2**self.bits
            width = max(1, -(-self.bits // 4))
            prefixes = [f"{i:0{width}x}" for i in range(16**width)]
            per_bin = len(prefixes) // number
            roles = {}
            for index in range(number):
                name = f"bin-{index:x}"
                mine = prefixes[index * per_bin : (index + 1) * per_bin]
                roles[name] = DelegatedRole(name, keyids, count, True, path_hash_prefixes=mine)
            bins.delegations = Delegations(keys=keys, roles=roles)
            self.md["bins"] = Metadata(bins)
            self.signers["bins"] = outer
            self.bin_roles = list(roles)
        for name in self.bin_roles:
            self.md[name] = Metadata(Targets(expires=_expiry(self.lifetime)))
            self.signers[name] = bin_signers

    @property
    def root_bytes(self) -> bytes:
        """Version 1 of root: what a client pins."""
        return self.roots[1]

    def role_for(self, path: str) -> str:
        """The bin that signs ``path``."""
        targets: Targets = self.md["targets"].signed
        assert targets.delegations is not None
        if self.shape == "succinct":
            assert targets.delegations.succinct_roles is not None
            return targets.delegations.succinct_roles.get_role_for_target(path)
        bins: Targets = self.md["bins"].signed
        assert bins.delegations is not None and bins.delegations.roles is not None
        digest = hashlib.sha256(path.encode()).hexdigest()
        for name, role in bins.delegations.roles.items():
            assert role.path_hash_prefixes is not None
            if any(digest.startswith(p) for p in role.path_hash_prefixes):
                return name
        raise AssertionError(f"no bin for {path}")

    # -- targets ---------------------------------------------------------------------------

    def add_target(self, path: str, length: int, hashes: dict[str, str]) -> str:
        role = self.role_for(path)
        bin_md: Targets = self.md[role].signed
        bin_md.targets[path] = TargetFile(length, hashes, path)
        self.dirty.add(role)
        return role

    def add_file(self, record: FileRecord) -> str:
        """The ``files`` scheme: sign a registered file at its path below /packages/."""
        path = record.url_path.removeprefix("/packages/")
        self.add_target(
            path, record.size, {"blake2b-256": record.blake2b_256, "sha256": record.sha256}
        )
        return path

    def page_for(self, project: str) -> bytes:
        """The project's HTML page as the fake renders it now."""
        proj = self.pypi.project(project)
        return simple_project(proj, self.pypi.page_serial(proj.last_serial), TEXT_HTML)

    def add_index(self, project: str, page: bytes | None = None) -> str:
        """The ``index`` scheme (Warehouse + RSTUF): sign the project's page as target
        ``<name>`` and serve it at ``/simple/<name>/<blake2b-256>.<name>.html``."""
        name = self.pypi.project(project).normalized
        body = self.page_for(project) if page is None else page
        digest = hashlib.blake2b(body, digest_size=32).hexdigest()
        self.add_target(name, len(body), {"blake2b-256": digest})
        self.pypi.add_static(self.page_path(name, digest), body, "text/html; charset=utf-8")
        return name

    @staticmethod
    def page_path(name: str, digest: str) -> str:
        return f"/simple/{name}/{digest}.{name}.html"

    def remove_target(self, path: str) -> None:
        role = self.role_for(path)
        del self.md[role].signed.targets[path]
        self.dirty.add(role)

    # -- publishing ------------------------------------------------------------------------

    def _sign(self, role: str, extra: list[Signer] | None = None) -> bytes:
        md = self.md[role]
        md.signatures.clear()
        signers = self.signers[role][: self.sign_limit.get(role, len(self.signers[role]))]
        for signer in [*(extra or []), *signers]:
            md.sign(signer, append=True)
        return md.to_bytes()

    def _static(self, name: str, data: bytes) -> None:
        self.pypi.add_static(self.prefix + name, data, "application/json")

    def _publish_root(self, previous: list[Signer] | None = None) -> None:
        root: Root = self.md["root"].signed
        data = self._sign("root", previous)
        self.roots[root.version] = data
        self._static(f"{root.version}.root.json", data)

    def publish(self) -> None:
        """Sign and serve every changed role, a new snapshot if any changed, a new timestamp."""
        snapshot: Snapshot = self.md["snapshot"].signed
        changed = sorted(r for r in self.dirty if r not in ("root", "timestamp", "snapshot"))
        for role in changed:
            signed = self.md[role].signed
            if role in self.published:
                signed.version += 1
            self._static(f"{signed.version}.{role}.json", self._sign(role))
            self.published[role] = signed.version
            snapshot.meta[f"{role}.json"] = MetaFile(version=signed.version)
        if changed or "snapshot" in self.dirty:
            if "snapshot" in self.published:
                snapshot.version += 1
            self._static(f"{snapshot.version}.snapshot.json", self._sign("snapshot"))
            self.published["snapshot"] = snapshot.version
        self.dirty.clear()
        self.publish_timestamp()

    def publish_timestamp(self, snapshot_version: int | None = None) -> None:
        timestamp: Timestamp = self.md["timestamp"].signed
        if "timestamp" in self.published:
            timestamp.version += 1
        version = snapshot_version or self.md["snapshot"].signed.version
        timestamp.snapshot_meta = MetaFile(version=version)
        data = self._sign("timestamp")
        self.published["timestamp"] = timestamp.version
        self.timestamps.append(data)
        self._static("timestamp.json", data)

    # -- faults ----------------------------------------------------------------------------

    def expire(self, role: str) -> None:
        """Publish ``role`` (timestamp, snapshot, targets or a bin) already expired."""
        self.md[role].signed.expires = _expiry(-timedelta(hours=1))
        if role != "timestamp":
            self.dirty.add(role)
        self.publish()

    def rollback_snapshot(self, version: int) -> None:
        """A new, validly signed timestamp that points at an older snapshot (a rollback by
        whoever holds the timestamp key or replays old files)."""
        self.publish_timestamp(snapshot_version=version)

    def replay_timestamp(self, index: int) -> None:
        """Serve an earlier timestamp.json again (a replay: version goes down)."""
        self._static("timestamp.json", self.timestamps[index])

    def rotate_root(self, roles: tuple[str, ...] = ("root", "timestamp", "snapshot")) -> int:
        """Root N+1 with fresh keys for ``roles``, signed by the old and the new root keys;
        then re-sign what the new keys sign. Returns the new root version."""
        root: Root = self.md["root"].signed
        old_root_signers = list(self.signers["root"])
        root.version += 1
        root.expires = _expiry(self.lifetime)
        for role in roles:
            for keyid in list(root.roles[role].keyids):
                root.revoke_key(keyid, role)
            self.signers[role] = _new_signers(root.roles[role].threshold)
            for signer in self.signers[role]:
                root.add_key(signer.public_key, role)
        extra = old_root_signers if "root" in roles else None
        self._publish_root(extra)
        self.dirty.update(r for r in roles if r not in ("root", "timestamp"))
        self.dirty.add("snapshot")
        self.publish()
        return root.version

    def sign_only(self, role: str, count: int) -> None:
        """From now on, sign ``role`` with only its first ``count`` keys."""
        self.sign_limit[role] = count
