"""Helpers for the sync tests: configs pointing at the fake upstream, an in-process sync
run, and checks of a synced web root (tree snapshot, invariants)."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Any

from mirror.config import Config, config_from_mapping
from mirror.services import Purpose, open_services
from mirror.storage import open_storage
from mirror.sync.engine import SyncEngine, SyncResult
from tests.conftest import merge
from tests.fakepypi import FakePyPI, build_sdist, build_wheel

JSON = "application/vnd.pypi.simple.v1+json"


def sync_config(upstream: FakePyPI, root: Path, **sections: dict[str, Any]) -> Config:
    base: dict[str, Any] = {
        "storage": {"path": str(root)},
        "upstream": {"url": upstream.url, "file-hosts": [], "timeout": 5.0, "retries": 0},
        "sync": {"workers": 4, "file-workers": 4, "stale-retries": 1},
    }
    return config_from_mapping(merge(base, sections), source="test", env={})


def config_toml(upstream: FakePyPI, root: Path, **sync: Any) -> str:
    lines = [
        "[storage]",
        f'path = "{root}"',
        "[upstream]",
        f'url = "{upstream.url}"',
        "file-hosts = []",
        "timeout = 5.0",
        "retries = 0",
        "[log]",
        'format = "json"',
        "[sync]",
    ]
    for key, value in sync.items():
        lines.append(f"{key.replace('_', '-')} = {json.dumps(value)}")
    return "\n".join(lines) + "\n"


async def run_sync(config: Config, *, stale_backoff: float = 0.01) -> SyncResult:
    """One sync in this process, as ``pypi-mirror sync`` does it."""
    storage = open_storage(config.storage)
    async with open_services(config, storage, purpose=Purpose.SYNC) as services:
        return await SyncEngine(services, stale_backoff=stale_backoff).run()


def web_tree(root: Path) -> dict[str, bytes]:
    """Every file under web/, relative path → bytes."""
    web = root / "web"
    return {p.relative_to(web).as_posix(): p.read_bytes() for p in web.rglob("*") if p.is_file()}


def page(root: Path, project: str) -> dict[str, Any] | None:
    path = root / "web" / "simple" / project / "index.v1_json"
    if not path.exists():
        return None
    data: dict[str, Any] = json.loads(path.read_bytes())
    return data


def filenames(root: Path, project: str) -> set[str]:
    data = page(root, project)
    return set() if data is None else {f["filename"] for f in data["files"]}


def package_files(root: Path) -> set[str]:
    """Filenames of the distribution files held under web/packages."""
    return {
        p.name
        for p in (root / "web" / "packages").rglob("*")
        if p.is_file() and not p.name.endswith(".metadata")
    }


def root_names(root: Path) -> dict[str, int | None]:
    data = json.loads((root / "web" / "simple" / "index.v1_json").read_bytes())
    return {p["name"]: p.get("_last-serial") for p in data["projects"]}


def check_invariants(root: Path, *, allow_unlisted: bool = False) -> None:
    """No page lists a missing file; every held file matches the digest in its path and is
    listed by some page (nothing unverified, nothing orphaned). ``allow_unlisted``: right
    after a kill, verified files whose page was not written yet may exist."""
    listed: set[str] = set()
    for index in (root / "web" / "simple").glob("*/index.v1_json"):
        data = json.loads(index.read_bytes())
        for file in data["files"]:
            rel = file["url"].split("#", 1)[0].removeprefix("../../")
            path = root / "web" / rel
            assert path.is_file(), f"{index.parent.name} lists missing {rel}"
            listed.add(rel)
            assert hashlib.sha256(path.read_bytes()).hexdigest() == file["hashes"]["sha256"]
    for path in (root / "web" / "packages").rglob("*"):
        if not path.is_file() or path.name.endswith(".metadata"):
            continue
        rel = path.relative_to(root / "web").as_posix()
        digest = "".join(path.relative_to(root / "web" / "packages").parts[:3])
        assert hashlib.blake2b(path.read_bytes(), digest_size=32).hexdigest() == digest, rel
        assert allow_unlisted or rel in listed, f"{rel} is held but no page lists it"


def publish(tmp: Path, upstream: FakePyPI) -> None:
    """Two projects, three releases, wheels and sdists."""
    dist = tmp / "dist"
    upstream.add_file("Demo.Pkg", build_wheel(dist, "Demo.Pkg", "1.0", pad_bytes=3000))
    upstream.add_file("Demo.Pkg", build_sdist(dist, "Demo.Pkg", "1.0"))
    upstream.add_file("demo-pkg", build_wheel(dist, "Demo.Pkg", "2.0", requires_python=">=3.9"))
    upstream.add_file("tool", build_wheel(dist, "tool", "0.1", requires_dist=["demo-pkg>=1"]))


class RequestTrigger(list[tuple[str, str]]):
    """The fake's request log, setting an event after ``after`` file requests."""

    def __init__(self, after: int) -> None:
        super().__init__()
        self.after = after
        self.files = 0
        self.event = asyncio.Event()

    def append(self, item: tuple[str, str]) -> None:
        super().append(item)
        self.files += item[1].startswith("/packages/")
        if self.files >= self.after:
            self.event.set()


def publish_many(tmp: Path, upstream: FakePyPI, projects: int, releases: int) -> None:
    for p in range(projects):
        for r in range(releases):
            name = f"proj{p:03d}"
            upstream.add_file(name, build_wheel(tmp / "dist", name, f"1.{r}", pad_bytes=64))
