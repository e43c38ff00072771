"""Clients behind a verifying mirror: a python-tuf client through /tuf/, pip and uv."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from tuf.ngclient import Updater, UpdaterConfig

from tests.conftest import MirrorFactory, RunningMirror
from tests.fakepypi import FakePyPI, build_wheel
from tests.tufrepo import TufRepo
from tests.tufrepo.support import pip_install, stored_packages, tuf_mirror, uv_install


def tuf_client_download(
    mirror: RunningMirror, root: bytes, workdir: Path, target_path: str
) -> tuple[bytes, int]:
    """python-tuf's own client, pointed at the mirror for metadata and files alike, pinned
    to the same root as the mirror: the downloaded bytes and the root version it reached."""
    updater = Updater(
        metadata_dir=str(workdir / "metadata"),
        metadata_base_url=mirror.url + "tuf/",
        target_dir=str(workdir / "downloads"),
        target_base_url=mirror.url + "packages/",
        config=UpdaterConfig(prefix_targets_with_hash=False),
        bootstrap=root,
    )
    (workdir / "downloads").mkdir(parents=True, exist_ok=True)
    updater.refresh()
    info = updater.get_targetinfo(target_path)
    assert info is not None, f"{target_path} not found through the mirror"
    path = updater.download_target(info)
    root_version = int(Path(workdir / "metadata" / "root.json").resolve().name.split(".")[0])
    return Path(path).read_bytes(), root_version


@pytest.mark.parametrize("shape", ["succinct", "bins"])
async def test_python_tuf_client_verifies_a_file_through_the_mirror(
    tmp_path: Path, upstream: FakePyPI, make_mirror: MirrorFactory, shape: str
) -> None:
    """The mirror has not seen the file yet: the client's metadata requests make the mirror
    fetch and verify the bin on demand, the file request makes it download and verify the
    file; the client then verifies everything again with the same pinned root, after two
    root rotations (every root version is re-served)."""
    wheel = build_wheel(tmp_path / "dist", "demo", "1.0", pad_bytes=100_000)
    repo = TufRepo(upstream, shape=shape)  # type: ignore[arg-type]
    path = repo.add_file(upstream.add_file("demo", wheel))
    repo.publish()
    repo.rotate_root()
    repo.rotate_root()
    mirror = await tuf_mirror(make_mirror, repo, tmp_path, "files")
    assert stored_packages(mirror) == []
    upstream.reset_log()

    data, root_version = await asyncio.to_thread(
        tuf_client_download, mirror, repo.root_bytes, tmp_path / "client", path
    )
    assert data == wheel.read_bytes()
    assert root_version == 3
    assert [p.name for p in stored_packages(mirror)] == [wheel.name]
    # The mirror fetched the bin once (for the client's metadata request), not twice.
    role = repo.role_for(path)
    assert upstream.count(f"/tuf/{repo.published[role]}.{role}.json") == 1


async def test_tuf_route_does_not_fetch_roles_the_trusted_snapshot_does_not_list(
    tmp_path: Path, upstream: FakePyPI, make_mirror: MirrorFactory
) -> None:
    """The mirror's /tuf/ tree only ever holds what verified: a role name the trusted
    snapshot does not list is a 404, not something fetched blindly."""
    repo = TufRepo(upstream)
    mirror = await tuf_mirror(make_mirror, repo, tmp_path, "files")
    status, _, _ = await mirror.get("/tuf/1.not-a-role.json")
    assert status == 404
    assert upstream.count("/tuf/1.not-a-role.json") == 0


@pytest.mark.parametrize("scheme", ["files", "index"])
async def test_pip_and_uv_install_through_a_verifying_mirror(
    tmp_path: Path, upstream: FakePyPI, make_mirror: MirrorFactory, scheme: str
) -> None:
    """The control for the attack tests: with honest upstream metadata both clients
    install through the mirror in both schemes."""
    wheel = build_wheel(tmp_path / "dist", "demo", "1.0")
    record = upstream.add_file("demo", wheel)
    repo = TufRepo(upstream, shape="bins")
    if scheme == "files":
        repo.add_file(record)
    else:
        repo.add_index("demo")
    repo.publish()
    mirror = await tuf_mirror(make_mirror, repo, tmp_path, scheme)

    code, out = await pip_install(mirror, tmp_path / "pip-target", "demo")
    assert code == 0, out
    assert (tmp_path / "pip-target" / "demo" / "__init__.py").is_file()
    code, out = await uv_install(mirror, tmp_path / "uv-target", "demo")
    assert code == 0, out
    assert (tmp_path / "uv-target" / "demo" / "__init__.py").is_file()
