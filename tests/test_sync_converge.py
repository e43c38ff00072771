"""A sync always converges: whatever the upstream does while a run is in progress (a
project removed, removed and re-created, a release removed, a file added), and however
often a run is killed with ``kill -9`` while the upstream keeps changing, a bounded number
of further runs reaches the upstream serial, and the web tree then equals a clean sync of
the final upstream into a fresh directory: no entry stuck in the deferred list, no orphan
file, nothing missing.

In-process tests mutate the fake upstream from inside its request log (the middleware
appends to it before answering), so "during the run" means exactly "after the mirror asked
for this file and before it got it". Kill tests run the real command line and SIGKILL it
from the same place, so a seeded kill point is a reproducible state of the killed run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from mirror.sync.status import gather_status
from tests.fakepypi import FakePyPI, build_wheel
from tests.sync_helpers import (
    check_invariants,
    config_toml,
    filenames,
    package_files,
    run_sync,
    sync_config,
    web_tree,
)

if TYPE_CHECKING:
    from mirror.config import Config
    from mirror.sync.engine import SyncResult

REPO = Path(__file__).resolve().parent.parent

#: After the run the upstream changed under (or the last kill), this many runs at most
#: must bring the mirror to the upstream serial.
FURTHER_RUNS = 3
#: One worker, one file at a time: the order of requests, hence of a run's steps, is fixed.
SERIAL_SYNC: dict[str, Any] = {"workers": 1, "file-workers": 1}
PROJECTS = [f"proj{p:03d}" for p in range(4)]


async def sync(config: Config) -> SyncResult:
    """One in-process sync (``run_sync``), bounded in time."""
    return await asyncio.wait_for(run_sync(config), 30)


# -- the upstream -------------------------------------------------------------------------


class Releases:
    """Publishes one-wheel releases with never-reused versions (PyPI never takes the same
    filename twice, even after a removal)."""

    def __init__(self, upstream: FakePyPI, dist: Path) -> None:
        self.upstream = upstream
        self.dist = dist
        self.next: dict[str, int] = {}

    def add(self, project: str) -> str:
        minor = self.next.get(project, 0)
        self.next[project] = minor + 1
        version = f"1.{minor}"
        self.upstream.add_file(project, build_wheel(self.dist, project, version, pad_bytes=64))
        return version


def wheel(project: str, version: str) -> str:
    return f"{project}-{version}-py3-none-any.whl"


def owner(upstream: FakePyPI, filename: str) -> tuple[str, str] | None:
    """(project, version) of the live upstream release holding ``filename``."""
    for project in upstream.projects.values():
        for release in project.releases.values():
            if filename in release.files:
                return project.normalized, release.version
    return None


class OnRequest(list[tuple[str, str]]):
    """The fake's request log; runs ``action`` once, on the first request ``when`` accepts,
    before that request is answered."""

    def __init__(self, when: Callable[[str], bool], action: Callable[[], None]) -> None:
        super().__init__()
        self.when = when
        self.action = action
        self.fired_at: int | None = None  #: index of the request it fired on

    def append(self, item: tuple[str, str]) -> None:
        super().append(item)
        if self.fired_at is None and self.when(item[1]):
            self.fired_at = len(self) - 1
            self.action()

    def requested(self, prefix: str) -> bool:
        return any(path.startswith(prefix) for _method, path in self)


def file_of(project: str) -> Callable[[str], bool]:
    """A request for any file (or .metadata) of ``project``."""
    return lambda path: (
        path.startswith("/packages/") and path.rsplit("/", 1)[-1].startswith(f"{project}-")
    )


def not_yet_fetched(upstream: FakePyPI, log: OnRequest, *, but: str) -> str:
    """The first live project (by name) whose page this run has not asked for yet."""
    waiting = [
        name
        for name in sorted(upstream.projects)
        if name != but and not log.requested(f"/simple/{name}/")
    ]
    assert waiting, "every project was fetched already: nothing left to change under the run"
    return waiting[0]


async def prepared(
    tmp_path: Path, upstream: FakePyPI, kind: str
) -> tuple[Config, Releases, list[str]]:
    """Four projects, each with two releases the next run has to download (returned).
    ``kind`` "full": the next run is the mirror's first (a full run), the releases are 1.0
    and 1.1; "changelog": the mirror is synced, then every project gets releases 1.2 and
    1.3, so the next run follows the changelog and has every project in its plan."""
    releases = Releases(upstream, tmp_path / "dist")
    config = sync_config(upstream, tmp_path / "mirror", sync=SERIAL_SYNC)
    if kind == "changelog":
        for project in PROJECTS:
            releases.add(project)
            releases.add(project)
        assert (await sync(config)).ok
    new: list[str] = []
    for project in PROJECTS:  # the same two versions for every project
        new = [releases.add(project), releases.add(project)]
    return config, releases, new


# -- convergence and the comparison with a clean sync --------------------------------------


async def further_runs(config: Config, upstream: FakePyPI) -> list[SyncResult]:
    """Sync again until a run reaches the upstream serial, at most FURTHER_RUNS times."""
    upstream.requests = []
    results: list[SyncResult] = []
    for _ in range(FURTHER_RUNS):
        result = await sync(config)
        results.append(result)
        if result.ok and result.serial == upstream.serial:
            return results
    last = results[-1]
    pytest.fail(
        f"no convergence in {FURTHER_RUNS} further runs: serial {last.serial}, "
        f"upstream {upstream.serial}, ok={last.ok}, reason: {last.reason}"
    )


def tree_differences(root: Path, clean: Path) -> list[str]:
    """How the mirror at ``root`` differs from the clean sync at ``clean`` (empty: equal)."""
    problems = []
    orphans = sorted(package_files(root) - package_files(clean))
    missing = sorted(package_files(clean) - package_files(root))
    if orphans:
        problems.append(f"files a clean sync does not hold: {orphans}")
    if missing:
        problems.append(f"files missing: {missing}")
    ours, theirs = web_tree(root), web_tree(clean)
    extra = sorted(set(ours) - set(theirs))
    lacking = sorted(set(theirs) - set(ours))
    differ = sorted(k for k in set(ours) & set(theirs) if ours[k] != theirs[k])
    if extra:
        problems.append(f"web/ has what a clean sync has not: {extra}")
    if lacking:
        problems.append(f"web/ lacks: {lacking}")
    if differ:
        problems.append(f"web/ files differing from a clean sync: {differ}")
    return problems


async def settled_differences(config: Config, upstream: FakePyPI) -> list[str]:
    """Stuck state: what ``status`` says is carried, lagging or interrupted."""
    status = await gather_status(config)
    problems = []
    if status["serial"] != upstream.serial or status["lag"] != 0:
        problems.append(f"status: serial {status['serial']}, lag {status['lag']}")
    if status["deferred"]:
        problems.append(f"status: {status['deferred']} project(s) carried to the next run")
    if "interrupted_run" in status:
        problems.append(f"status: an interrupted run is left: {status['interrupted_run']}")
    return problems


async def assert_equals_a_clean_sync(
    tmp_path: Path, upstream: FakePyPI, config: Config, context: str = ""
) -> None:
    """The mirror at ``config`` is what a clean sync of the upstream makes, and settled.
    ``context``: what happened before, for the failure message."""
    root = config.storage.path
    clean = tmp_path / "clean"
    upstream.requests = []
    result = await sync(sync_config(upstream, clean))
    assert result.ok and result.serial == upstream.serial, result.reason
    problems = tree_differences(root, clean) + await settled_differences(config, upstream)
    assert not problems, "\n".join(problems) + context
    root_page = json.loads((root / "web" / "simple" / "index.v1_json").read_bytes())
    assert root_page["meta"]["_last-serial"] == upstream.serial
    check_invariants(root)


# -- in-process: the upstream changes while a run is in progress ----------------------------


@pytest.mark.parametrize("kind", ["full", "changelog"])
async def test_a_project_removed_while_a_run_is_in_progress_is_gone_after_the_next_runs(
    tmp_path: Path, upstream: FakePyPI, kind: str
) -> None:
    """The run has the project in its plan; upstream removes it before the run gets to it.
    The page's 404 must not be carried as a stale page for ever: the next runs reach the
    upstream serial and hold nothing of the project."""
    config, _, _ = await prepared(tmp_path, upstream, kind)
    victim: list[str] = []

    def remove() -> None:
        victim.append(not_yet_fetched(upstream, log, but="proj001"))
        upstream.remove_project(victim[0])

    upstream.requests = log = OnRequest(file_of("proj001"), remove)
    await sync(config)
    assert victim, "the upstream never changed under the run"

    await further_runs(config, upstream)
    assert filenames(config.storage.path, victim[0]) == set()
    await assert_equals_a_clean_sync(tmp_path, upstream, config)


@pytest.mark.parametrize("kind", ["full", "changelog"])
@pytest.mark.parametrize("recreated", ["during-the-run", "after-the-run"])
async def test_a_project_removed_and_recreated_around_a_run_ends_up_as_upstream_has_it(
    tmp_path: Path, upstream: FakePyPI, kind: str, recreated: str
) -> None:
    """Upstream removes a project the run has yet to reach, then re-creates it with a new
    release, either before the run gets to it or once the run is over. The old files go,
    the new release is mirrored."""
    config, releases, _ = await prepared(tmp_path, upstream, kind)
    victim: list[str] = []
    new_version: list[str] = []

    def recreate() -> None:
        new_version.append(releases.add(victim[0]))

    def remove() -> None:
        victim.append(not_yet_fetched(upstream, log, but="proj001"))
        upstream.remove_project(victim[0])
        if recreated == "during-the-run":
            recreate()

    upstream.requests = log = OnRequest(file_of("proj001"), remove)
    await sync(config)
    assert victim, "the upstream never changed under the run"
    if recreated == "after-the-run":
        recreate()

    await further_runs(config, upstream)
    assert filenames(config.storage.path, victim[0]) == {wheel(victim[0], new_version[0])}
    await assert_equals_a_clean_sync(tmp_path, upstream, config)


@pytest.mark.parametrize("kind", ["full", "changelog"])
@pytest.mark.parametrize("where", ["being-downloaded", "not-yet-reached", "already-synced"])
async def test_a_release_removed_while_a_run_is_in_progress_is_gone_after_the_next_runs(
    tmp_path: Path, upstream: FakePyPI, kind: str, where: str
) -> None:
    """The run is downloading proj001's second new release. Upstream removes a release:
    proj001's first new one (already downloaded, its page not yet written), one of a
    project the run has yet to reach, or one of proj000 (already synced by this run).
    Afterwards the release's files are gone from pages and from disk."""
    config, _, (first, second) = await prepared(tmp_path, upstream, kind)
    target = {"being-downloaded": "proj001", "already-synced": "proj000"}.get(where)
    removed: list[tuple[str, str]] = []

    def remove() -> None:
        project = target or not_yet_fetched(upstream, log, but="proj001")
        removed.append((project, first))
        upstream.remove_release(project, first)

    upstream.requests = log = OnRequest(lambda p: p.endswith(wheel("proj001", second)), remove)
    await sync(config)
    assert removed, "the upstream never changed under the run"

    await further_runs(config, upstream)
    gone = wheel(*removed[0])
    assert gone not in filenames(config.storage.path, removed[0][0])
    assert gone not in package_files(config.storage.path)
    await assert_equals_a_clean_sync(tmp_path, upstream, config)


@pytest.mark.parametrize("kind", ["full", "changelog"])
@pytest.mark.parametrize(
    "where", ["being-downloaded", "not-yet-reached", "already-synced", "new-project"]
)
async def test_a_file_added_while_a_run_is_in_progress_is_mirrored_by_the_next_runs(
    tmp_path: Path, upstream: FakePyPI, kind: str, where: str
) -> None:
    """While the run downloads proj001, upstream adds a release to proj001, to a project the
    run has yet to reach, to proj000 (already synced by this run), or creates a project.
    The next runs mirror it."""
    config, releases, _ = await prepared(tmp_path, upstream, kind)
    target = {"being-downloaded": "proj001", "already-synced": "proj000", "new-project": "zzz"}
    added: list[tuple[str, str]] = []

    def add() -> None:
        project = target.get(where) or not_yet_fetched(upstream, log, but="proj001")
        added.append((project, releases.add(project)))

    upstream.requests = log = OnRequest(file_of("proj001"), add)
    await sync(config)
    assert added, "the upstream never changed under the run"

    await further_runs(config, upstream)
    assert wheel(*added[0]) in filenames(config.storage.path, added[0][0])
    await assert_equals_a_clean_sync(tmp_path, upstream, config)


# -- the real command line, killed with SIGKILL ---------------------------------------------


def is_file_request(path: str) -> bool:
    return path.startswith("/packages/")


class KillAt(list[tuple[str, str]]):
    """The fake's request log; SIGKILLs ``pid`` on the ``after``-th request ``counts``
    accepts (by default: files and .metadata), before that request is answered."""

    def __init__(self, after: int, counts: Callable[[str], bool] = is_file_request) -> None:
        super().__init__()
        self.after = after
        self.counts = counts
        self.seen = 0
        self.pid: int | None = None
        self.killed = asyncio.Event()

    def append(self, item: tuple[str, str]) -> None:
        super().append(item)
        self.seen += self.counts(item[1])
        self.kill_if_due()

    def kill_if_due(self) -> None:
        if self.seen >= self.after and self.pid is not None and not self.killed.is_set():
            os.kill(self.pid, signal.SIGKILL)
            self.killed.set()


def write_config(tmp: Path, upstream: FakePyPI, root: Path, **sync: object) -> Path:
    path = tmp / f"mirror-{root.name}.toml"
    path.write_text(config_toml(upstream, root, **sync))
    return path


async def cli_sync(config: Path, log: Path, trigger: KillAt | None = None) -> int:
    """``pypi-mirror sync -c config``, killed by ``trigger`` if it is due; the exit code
    (-9 when killed)."""
    with open(log, "ab") as out:  # the child keeps its own copy
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "mirror",
            "sync",
            "-c",
            str(config),
            stdout=out,
            stderr=out,
            cwd=REPO,
        )
    try:
        if trigger is not None:
            trigger.pid = proc.pid
            trigger.kill_if_due()
        await asyncio.wait_for(proc.wait(), 30)
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
    assert proc.returncode is not None
    return proc.returncode


async def cli_until_done(
    config: Path, log: Path, upstream: FakePyPI, context: str = ""
) -> list[int]:
    """Run the command line to completion: at most FURTHER_RUNS runs, until exit 0."""
    upstream.requests = []
    codes: list[int] = []
    for _ in range(FURTHER_RUNS):
        codes.append(await cli_sync(config, log))
        if codes[-1] == 0:
            return codes
    reasons = [line for line in log.read_text().splitlines() if line.startswith("pypi-mirror: ")]
    pytest.fail(
        f"no exit 0 in {FURTHER_RUNS} further runs (exit codes {codes}); "
        f"last: {reasons[-1] if reasons else 'no reason printed'}{context}"
    )


def unlisted(root: Path) -> set[str]:
    """Files held under web/packages that no page lists (a killed run's downloads)."""
    listed = set()
    for index in (root / "web" / "simple").glob("*/index.v1_json"):
        listed |= {f["filename"] for f in json.loads(index.read_bytes())["files"]}
    return package_files(root) - listed


async def test_a_file_a_killed_run_fetched_whose_release_was_then_removed_is_pruned(
    tmp_path: Path, upstream: FakePyPI
) -> None:
    """``kill -9`` while a project's files download, one file at a time: when the run asks
    for proj001's second wheel, its first one (and .metadata) is on disk, and the page
    that would list it is not written. Upstream then removes that first release. The
    resumed runs must not keep its file: the tree equals a clean sync's, and every held
    file is listed by a page."""
    releases = Releases(upstream, tmp_path / "dist")
    for project in PROJECTS[:3]:
        for _ in range(3):
            releases.add(project)
    root = tmp_path / "killed"
    config = write_config(tmp_path, upstream, root, stale_retries=0, **SERIAL_SYNC)
    log = tmp_path / "sync.log"
    trigger = KillAt(2, counts=lambda path: file_of("proj001")(path) and path.endswith(".whl"))
    upstream.requests = trigger
    assert await cli_sync(config, log, trigger) == -9
    first = next(p for _m, p in trigger if p.endswith(".whl") and file_of("proj001")(p))
    fetched = first.rsplit("/", 1)[-1]
    check_invariants(root, allow_unlisted=True)
    found = owner(upstream, fetched)
    assert found is not None
    upstream.remove_release(*found)

    await cli_until_done(config, log, upstream)
    assert fetched not in package_files(root), f"the orphan {fetched} is still held"
    await assert_equals_a_clean_sync(tmp_path, upstream, sync_config(upstream, root))
    assert not list((root / "tmp").iterdir())


def mutate(rng: random.Random, upstream: FakePyPI, releases: Releases, root: Path) -> list[str]:
    """One round of upstream changes between two kills; what was done, for the report."""
    done = []
    # A release whose file the killed run may have downloaded (held, listed by no page).
    candidates = sorted({o for f in unlisted(root) if (o := owner(upstream, f)) is not None})
    if not candidates:
        candidates = sorted(
            (p.normalized, v) for p in upstream.projects.values() for v in p.releases
        )
    if candidates:
        project, version = rng.choice(candidates)
        upstream.remove_release(project, version)
        done.append(f"remove release {project} {version}")
    # A file added: to a live project, or a project created.
    live = sorted(upstream.projects)
    project = rng.choice(live) if live and rng.random() < 0.7 else f"new{len(releases.next):03d}"
    done.append(f"add {project} {releases.add(project)}")
    # A project removed, or one removed earlier re-created.
    gone = sorted(set(releases.next) - set(upstream.projects))
    if gone and rng.random() < 0.5:
        project = rng.choice(gone)
        done.append(f"re-create {project} {releases.add(project)}")
    else:
        project = rng.choice(sorted(upstream.projects))
        upstream.remove_project(project)
        done.append(f"remove project {project}")
    return done


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_kill_9_at_random_moments_while_upstream_changes_then_resume_equals_clean_sync(
    tmp_path: Path, upstream: FakePyPI, seed: int
) -> None:
    """Four times: start ``pypi-mirror sync``, SIGKILL it after a seeded-random number of
    file requests, then change the upstream (remove a release, preferably one whose file
    the killed run already downloaded; add a file; remove a project or re-create one).
    Then run sync to completion: a bounded number of runs exits 0, and the tree equals a
    clean sync of the final upstream."""
    rng = random.Random(seed)
    releases = Releases(upstream, tmp_path / "dist")
    for project in (f"proj{p:03d}" for p in range(10)):
        for _ in range(3):
            releases.add(project)
    root = tmp_path / "killed"
    config = write_config(tmp_path, upstream, root, stale_retries=0, **SERIAL_SYNC)
    log = tmp_path / "sync.log"
    history: list[str] = []
    for round_ in range(4):
        # the first run has 60 file requests to make, a resumed one fewer
        after = rng.randint(1, 40 if round_ == 0 else 12)
        trigger = KillAt(after)
        upstream.requests = trigger
        code = await cli_sync(config, log, trigger)
        assert code in (-9, 0, 1), f"round {round_}: exit code {code}"
        history.append(f"round {round_}: kill after {after} file requests, exit {code}")
        check_invariants(root, allow_unlisted=True)
        history.extend(mutate(rng, upstream, releases, root))

    context = "\nwhat happened: " + "; ".join(history)
    await cli_until_done(config, log, upstream, context)
    await assert_equals_a_clean_sync(tmp_path, upstream, sync_config(upstream, root), context)
    assert not list((root / "tmp").iterdir()), context
