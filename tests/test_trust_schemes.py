"""TUF verification (PEP 458) in pull-through: both target schemes, both delegation shapes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import MirrorFactory
from tests.fakepypi import FakePyPI, build_wheel
from tests.tufrepo import TufRepo
from tests.tufrepo.support import health, stored_packages, tuf_mirror

JSON = "application/vnd.pypi.simple.v1+json"


@pytest.mark.parametrize("shape", ["succinct", "bins"])
async def test_files_scheme_serves_a_signed_file_and_republishes_the_metadata(
    tmp_path: Path, upstream: FakePyPI, make_mirror: MirrorFactory, shape: str
) -> None:
    """Each file is a target at its /packages/ path; the bin that signs it is walked by
    ngclient and then re-served verbatim under /tuf/ next to the top-level roles."""
    wheel = build_wheel(tmp_path / "dist", "demo", "1.0")
    record = upstream.add_file("demo", wheel)
    repo = TufRepo(upstream, shape=shape)  # type: ignore[arg-type]
    path = repo.add_file(record)
    repo.publish()
    mirror = await tuf_mirror(make_mirror, repo, tmp_path, "files")

    status, _, body = await mirror.get(record.url_path)
    assert status == 200 and body == wheel.read_bytes()
    assert [p.name for p in stored_packages(mirror)] == [wheel.name]

    tuf = (await health(mirror))["tuf"]
    assert tuf["state"] == "ok" and tuf["targets"] == "files"
    assert tuf["root_version"] == 1 and tuf["snapshot_version"] == repo.published["snapshot"]
    role = repo.role_for(path)
    names = [
        "1.root.json",
        "timestamp.json",
        f"{repo.published['snapshot']}.snapshot.json",
        f"{repo.published['targets']}.targets.json",
        f"{repo.published[role]}.{role}.json",
    ]
    if shape == "bins":
        names.append(f"{repo.published['bins']}.bins.json")
    for name in names:
        status, headers, body = await mirror.get(f"/tuf/{name}")
        assert status == 200, name
        assert body == upstream.static[f"/tuf/{name}"][0], f"{name} is not verbatim"
        assert (mirror.root / "web" / "tuf" / name).is_file()
    _, headers, _ = await mirror.get("/tuf/timestamp.json")
    assert headers["Cache-Control"] == "no-cache"


@pytest.mark.parametrize("shape", ["succinct", "bins"])
async def test_index_scheme_fetches_the_page_by_its_signed_hash(
    tmp_path: Path, upstream: FakePyPI, make_mirror: MirrorFactory, shape: str
) -> None:
    """The page is target ``<name>``, fetched at ``<name>/<blake2b>.<name>.html`` below
    /simple/, checked, and the file is then trusted through the page's sha256."""
    wheel = build_wheel(tmp_path / "dist", "demo", "1.0")
    record = upstream.add_file("demo", wheel)
    repo = TufRepo(upstream, shape=shape)  # type: ignore[arg-type]
    repo.add_index("demo")
    repo.publish()
    mirror = await tuf_mirror(make_mirror, repo, tmp_path, "index")
    upstream.reset_log()

    status, _, body = await mirror.get("/simple/demo/", headers={"Accept": JSON})
    assert status == 200
    files = {f["filename"]: f for f in json.loads(body)["files"]}
    assert files[wheel.name]["hashes"]["sha256"] == record.sha256
    page_requests = [p for _, p in upstream.requests if p.startswith("/simple/demo/")]
    assert len(page_requests) == 1 and page_requests[0].endswith(".demo.html")
    assert page_requests[0] != "/simple/demo/"

    status, _, body = await mirror.get(record.url_path)
    assert status == 200 and body == wheel.read_bytes()
    assert (await health(mirror))["tuf"]["state"] == "ok"


async def test_index_scheme_project_without_a_target_is_not_found(
    tmp_path: Path, upstream: FakePyPI, make_mirror: MirrorFactory
) -> None:
    """A project the upstream serves but never signed does not exist for the mirror."""
    upstream.add_file("signed", build_wheel(tmp_path / "dist", "signed", "1.0"))
    upstream.add_file("unsigned", build_wheel(tmp_path / "dist", "unsigned", "1.0"))
    repo = TufRepo(upstream)
    repo.add_index("signed")
    repo.publish()
    mirror = await tuf_mirror(make_mirror, repo, tmp_path, "index")

    status, _, _ = await mirror.get("/simple/signed/")
    assert status == 200
    status, _, body = await mirror.get("/simple/unsigned/")
    assert status == 404, body
    assert upstream.count("/simple/unsigned/") == 0


async def test_tuf_route_rejects_names_that_are_not_metadata(
    tmp_path: Path, upstream: FakePyPI, make_mirror: MirrorFactory
) -> None:
    """Only ``timestamp.json`` and ``N.<role>.json`` exist under /tuf/; nothing else leaks."""
    repo = TufRepo(upstream)
    mirror = await tuf_mirror(make_mirror, repo, tmp_path, "files")
    for name in ("root.json", "snapshot.json", "..%2Fstate%2Ftuf%2Flock", "1.root.json.gz", "x"):
        status, _, _ = await mirror.get(f"/tuf/{name}")
        assert status == 404, name
    status, _, _ = await mirror.get("/tuf/99.root.json")
    assert status == 404
    status, _, _ = await mirror.get("/tuf/7.bins-0.json")  # not the version trusted
    assert status == 404
