"""The one writer of a project and the storage seam under it: the core decisions it takes
(serial verdicts, metadata sources, the record), the storage operations it relies on, what
it keeps consistent across views and crashes, and the architecture rules that keep it the
only writer."""

from __future__ import annotations

import ast
import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mirror.concurrency import bounded
from mirror.core import layout
from mirror.core.changelog import EntryKind, PlanEntry, supersede
from mirror.core.layout import PackagePath
from mirror.core.metadata import MetadataSource, advertised_metadata, metadata_source
from mirror.core.model import DistFile
from mirror.core.record import PageMeta, ProjectRecord
from mirror.core.verdict import Answer, PageVerdict, Promise, judge
from mirror.errors import LockHeld, StorageError
from mirror.storage import read_lines
from mirror.storage.filesystem import FileSystemStorage
from tests.conftest import MirrorFactory
from tests.fakepypi import FakePyPI, build_wheel
from tests.sync_helpers import run_sync, sync_config

REPO = Path(__file__).resolve().parent.parent
PYPI_PREFIX = "https://files.example/packages/"

# ------------------------------------------------------------------------ core decisions


@pytest.mark.parametrize(
    ("answer", "page", "held", "promise", "verdict"),
    [
        (Answer.PAGE, 10, None, Promise(), PageVerdict.CURRENT),
        (Answer.PAGE, 10, 9, Promise(), PageVerdict.CURRENT),
        (Answer.PAGE, 8, 9, Promise(), PageVerdict.STALE),  # behind the held copy
        (Answer.PAGE, None, 9, Promise(), PageVerdict.CURRENT),  # no serial: nothing to judge
        (Answer.PAGE, 10, None, Promise(11), PageVerdict.STALE),  # a lagging CDN
        (Answer.PAGE, 11, None, Promise(11), PageVerdict.CURRENT),
        (Answer.PAGE, 12, None, Promise(11, expect_gone=True), PageVerdict.CURRENT),  # re-made
        (Answer.PAGE, 10, None, Promise(11, expect_gone=True), PageVerdict.STALE),
        (Answer.NOT_FOUND, None, 9, Promise(), PageVerdict.GONE),
        (Answer.NOT_FOUND, None, 9, Promise(11, expect_gone=True), PageVerdict.GONE),
        (Answer.NOT_FOUND, None, None, Promise(11), PageVerdict.STALE),  # not there yet
        (Answer.NOT_MODIFIED, None, 9, Promise(), PageVerdict.UNCHANGED),
        (Answer.NOT_MODIFIED, None, 9, Promise(11), PageVerdict.STALE),
        (Answer.NOT_MODIFIED, None, 11, Promise(11), PageVerdict.UNCHANGED),
    ],
)
def test_every_writer_judges_an_upstream_answer_the_same_way(
    answer: Answer, page: int | None, held: int | None, promise: Promise, verdict: PageVerdict
) -> None:
    judgement = judge(answer, page_serial=page, held_serial=held, promise=promise)
    assert judgement.verdict is verdict
    assert bool(judgement.reason) == (verdict is PageVerdict.STALE)


def test_a_later_changelog_row_supersedes_an_entry_carried_from_an_earlier_run() -> None:
    carried = PlanEntry("demo", 15)
    removed = PlanEntry("demo", 21, EntryKind.SYNC, expect_gone=True)
    assert supersede(carried, removed) == removed
    assert supersede(removed, carried) == removed


@pytest.mark.parametrize(
    ("core", "filename", "signed_files_only", "source"),
    [
        ({"sha256": "ab" * 32}, "d-1.0-py3-none-any.whl", False, MetadataSource.UPSTREAM),
        ({"sha256": "ab" * 32}, "d-1.0-py3-none-any.whl", True, MetadataSource.WHEEL),
        (True, "d-1.0-py3-none-any.whl", False, MetadataSource.WHEEL),  # nothing to check
        (False, "d-1.0-py3-none-any.whl", False, MetadataSource.WHEEL),
        ({"md5": "ab" * 16}, "d-1.0-py3-none-any.whl", False, MetadataSource.WHEEL),
        (False, "d-1.0.tar.gz", False, MetadataSource.NONE),
        ({"sha256": "ab" * 32}, "d-1.0.tar.gz", False, MetadataSource.UPSTREAM),
    ],
)
def test_one_rule_says_where_metadata_comes_from(
    core: bool | dict[str, str], filename: str, signed_files_only: bool, source: MetadataSource
) -> None:
    file = DistFile(filename, "https://files.example/x", core_metadata=core)
    assert metadata_source(file, signed_files_only=signed_files_only) is source


def test_only_what_a_metadata_request_would_return_is_advertised() -> None:
    offered = DistFile("d-1.0-py3-none-any.whl", "u", core_metadata={"sha256": "ab" * 32})
    assert advertised_metadata(offered, MetadataSource.UPSTREAM, None) == {"sha256": "ab" * 32}
    # signed files only: upstream's digest is not ours to vouch for until we extracted it
    assert advertised_metadata(offered, MetadataSource.WHEEL, None) is True
    assert advertised_metadata(offered, MetadataSource.WHEEL, "cd" * 32) == {"sha256": "cd" * 32}
    bare = DistFile("d-1.0-py3-none-any.whl", "u")
    assert advertised_metadata(bare, MetadataSource.WHEEL, None) is False
    assert advertised_metadata(DistFile("d-1.0.tar.gz", "u"), MetadataSource.NONE, None) is False


def test_the_record_lists_only_the_file_urls_it_cannot_derive() -> None:
    pypi = [PackagePath(f"{i:02x}" * 32, f"d-{i}.0-py3-none-any.whl") for i in range(300)]
    odd = PackagePath("ef" * 32, "d-9.9.tar.gz")
    files = [(p, PYPI_PREFIX + p.rel) for p in pypi] + [(odd, "https://other.example/d.tgz")]
    record = ProjectRecord.for_files(PageMeta(1.0, '"e"', 7), files, filters="f")
    assert record.file_prefix == PYPI_PREFIX
    assert record.urls == {odd.rel: "https://other.example/d.tgz"}
    assert len(record.dump()) < 500  # whatever the number of files
    loaded = ProjectRecord.load(record.dump())
    assert loaded == record
    assert loaded is not None and loaded.upstream_url(pypi[42]) == PYPI_PREFIX + pypi[42].rel
    assert loaded.upstream_url(odd) == "https://other.example/d.tgz"
    assert ProjectRecord.load(b"not json") is None


# ------------------------------------------------------------------------ storage seam


async def test_deleting_a_file_removes_the_directories_it_leaves_empty(tmp_path: Path) -> None:
    storage = FileSystemStorage.open(tmp_path)
    path = PackagePath("ab" * 32, "d-1.0.tar.gz")
    await storage.write_bytes(path.web, b"x")
    await storage.write_bytes(layout.simple_page("d", layout.PAGE_HTML), b"<html>")
    assert await storage.delete(path.web)
    assert not (tmp_path / "web" / "packages" / "ab").exists()
    assert (tmp_path / "web" / "packages").is_dir()  # the area itself stays
    assert await storage.delete(layout.simple_page("d", layout.PAGE_HTML))
    assert not (tmp_path / "web" / "simple" / "d").exists()
    assert not await storage.delete(path.web)


async def test_identical_page_forms_are_one_file_on_disk(tmp_path: Path) -> None:
    storage = FileSystemStorage.open(tmp_path)
    html = layout.simple_page("d", layout.PAGE_HTML)
    v1 = layout.simple_page("d", layout.PAGE_V1_HTML)
    await storage.write_bytes(html, b"<html>one</html>")
    await storage.link(html, v1)
    assert os.stat(tmp_path / html).st_ino == os.stat(tmp_path / v1).st_ino
    await storage.write_bytes(html, b"<html>two</html>")  # a new page replaces, never edits
    assert (tmp_path / v1).read_bytes() == b"<html>one</html>"
    assert not list((tmp_path / "tmp").iterdir())


async def test_a_reader_follows_a_write_across_its_commit(tmp_path: Path) -> None:
    storage = FileSystemStorage.open(tmp_path)
    writer = storage.writer("web/packages/x")
    await writer.write(b"first ")
    await writer.flush()
    reader = await writer.open_reader()
    assert reader is not None
    assert await reader.read(100) == b"first "
    await writer.write(b"second")
    await writer.commit()
    assert await reader.read(100) == b"second"
    await reader.close()
    assert (tmp_path / "web/packages/x").read_bytes() == b"first second"
    aborted = storage.writer("web/packages/y")
    await aborted.write(b"never")
    await aborted.abort()
    assert await aborted.open_reader() is None
    assert not list((tmp_path / "tmp").iterdir())


async def test_an_append_log_is_durable_after_sync_and_read_back_as_lines(
    tmp_path: Path,
) -> None:
    storage = FileSystemStorage.open(tmp_path)
    log = storage.open_append(layout.SYNC_PROGRESS)
    for n in range(5):
        log.append(f"{n} d\n".encode())
    await log.sync()
    log.append(b"5 x\n")
    await log.close()
    lines = [line async for batch in read_lines(storage, layout.SYNC_PROGRESS, 2) for line in batch]
    assert lines == ["0 d", "1 d", "2 d", "3 d", "4 d", "5 x"]


def test_a_held_lock_names_its_holder_and_another_process_cannot_take_it(
    tmp_path: Path,
) -> None:
    """The sync's lock: another process gets LockHeld at once, naming the holder's pid."""
    storage = FileSystemStorage.open(tmp_path)
    lock = storage.lock(layout.SYNC_LOCK)
    lock.acquire()
    try:
        probe = (
            "import sys\nfrom pathlib import Path\n"
            "from mirror.storage.filesystem import FileLock\nfrom mirror.errors import LockHeld\n"
            "try:\n    FileLock(Path(sys.argv[1])).acquire()\nexcept LockHeld as exc:\n"
            "    print(exc.holder)\n    sys.exit(3)\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", probe, str(tmp_path / layout.SYNC_LOCK)],
            capture_output=True,
            text=True,
            cwd=REPO,
            check=False,
        )
        assert result.returncode == 3, result.stderr
        assert result.stdout.strip() == str(os.getpid())
    finally:
        lock.release()
    again = storage.lock(layout.SYNC_LOCK)
    again.acquire()  # released by its holder: free again
    again.release()


async def test_only_known_errors_are_translated_by_the_worker_pool() -> None:
    async def fails(item: int) -> None:
        if item == 2:
            raise RuntimeError("a bug")

    with pytest.raises(RuntimeError, match="a bug"):
        await bounded(range(5), 2, fails)

    async def disk_full(item: int) -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(StorageError, match="No space left") as info:
        await bounded(range(3), 2, disk_full)
    assert isinstance(info.value.__cause__, OSError)


# ------------------------------------------------------------------------ keeper behaviour


async def test_a_held_json_api_answer_never_lists_a_file_its_page_dropped(
    tmp_path: Path, upstream: FakePyPI, make_mirror: MirrorFactory
) -> None:
    """nginx serves web/pypi/<p>/json as it is: when a refresh drops a file from the page,
    the stored JSON API answer is cut at once, before anyone asks for it again."""
    upstream.add_file("demo", build_wheel(tmp_path, "demo", "1.0"))
    upstream.add_file("demo", build_wheel(tmp_path, "demo", "2.0"))
    mirror = await make_mirror({"serve": {"index-ttl": 0}})
    status, _, body = await mirror.get("/pypi/demo/json")
    assert status == 200, body
    assert set(json.loads(body)["releases"]) == {"1.0", "2.0"}
    status, _, _ = await mirror.get("/pypi/demo/1.0/json")
    assert status == 200
    upstream.remove_release("demo", "1.0")
    status, _, _ = await mirror.get("/simple/demo/")  # index-ttl 0: revalidated now
    assert status == 200
    stored = json.loads((mirror.root / "web" / "pypi" / "demo" / "json").read_bytes())
    assert set(stored["releases"]) == {"2.0"}
    assert [f["filename"] for f in stored["urls"]] == ["demo-2.0-py3-none-any.whl"]
    assert not (mirror.root / "web" / "pypi" / "demo" / "1.0").exists()


async def test_a_pull_through_page_behind_the_held_copy_is_not_applied(
    tmp_path: Path, upstream: FakePyPI, make_mirror: MirrorFactory
) -> None:
    upstream.add_file("demo", build_wheel(tmp_path, "demo", "1.0"))
    upstream.add_file("demo", build_wheel(tmp_path, "demo", "2.0"))
    mirror = await make_mirror({"serve": {"index-ttl": 0}})
    status, _, before = await mirror.get("/simple/demo/")
    assert status == 200
    upstream.remove_release("demo", "2.0")
    upstream.lagging_serial = 5  # a CDN node answering with an older serial than we hold
    status, _, after = await mirror.get("/simple/demo/")
    assert status == 200
    assert after == before


async def test_a_dead_writers_leftovers_are_removed_at_start_up(
    tmp_path: Path, upstream: FakePyPI
) -> None:
    """A writer killed after downloading a file its page never listed left a record of it;
    the next start-up deletes that file (and only files no page lists)."""
    upstream.add_file("demo", build_wheel(tmp_path, "demo", "1.0"))
    root = tmp_path / "m"
    config = sync_config(upstream, root)
    assert (await run_sync(config)).ok
    listed = next((root / "web" / "packages").rglob("*.whl"))
    orphan = PackagePath("cd" * 32, "demo-9.9-py3-none-any.whl")
    (root / orphan.web).parent.mkdir(parents=True)
    (root / orphan.web).write_bytes(b"downloaded, never listed")
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    pid = int(dead.stdout)
    intent = root / layout.prune_intent("demo", f"{os.uname().nodename}.{pid}")
    intent.parent.mkdir(parents=True)
    rel = listed.relative_to(root / "web" / "packages").as_posix()
    intent.write_text(f"{orphan.rel}\n{rel}\n")
    assert (await run_sync(config)).ok
    assert not (root / orphan.web).exists()
    assert listed.exists()
    assert not intent.exists()


# ------------------------------------------------------------------------ architecture


def _python_files() -> list[Path]:
    return sorted((REPO / "mirror").rglob("*.py"))


def test_only_the_storage_package_names_the_filesystem_backend() -> None:
    offenders = [
        str(path.relative_to(REPO))
        for path in _python_files()
        if "FileSystemStorage" in path.read_text()
        and path.relative_to(REPO).parts[:2] != ("mirror", "storage")
    ]
    assert offenders == []


def _string_constants(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
    ]


def test_storage_paths_are_spelled_only_in_the_layout() -> None:
    needles = (f"{layout.WEB}/", f"{layout.STATE}/", f"{layout.TMP}/", layout.PAGE_V1_JSON)
    offenders = [
        f"{path.relative_to(REPO)}:{line}: {value!r}"
        for path in _python_files()
        if path.name != "layout.py"
        for line, value in _string_constants(path)
        if any(needle in value for needle in needles)
        and not value.startswith("Bytes held under")  # a metric's help text
    ]
    assert offenders == []


def test_code_outside_storage_never_reaches_around_the_seam() -> None:
    forbidden = ("storage.path(", "storage.root", "aiofiles", ".storage.file(")
    offenders = [
        f"{path.relative_to(REPO)}: {needle}"
        for path in _python_files()
        if path.relative_to(REPO).parts[:2] != ("mirror", "storage")
        for needle in forbidden
        if needle in path.read_text()
    ]
    assert offenders == []


def test_one_atomic_write_implementation() -> None:
    """Only the filesystem backend renames files into place."""
    offenders = [
        str(path.relative_to(REPO))
        for path in _python_files()
        if ("os.replace(" in path.read_text() or ".replace(temp" in path.read_text())
        and path.name != "filesystem.py"
    ]
    assert offenders == []


async def test_lock_held_is_raised_in_process_too(tmp_path: Path) -> None:
    storage = FileSystemStorage.open(tmp_path)
    first = storage.lock(layout.SYNC_LOCK)
    first.acquire()
    try:
        second = storage.lock(layout.SYNC_LOCK)
        with pytest.raises(LockHeld) as info:
            await asyncio.get_running_loop().run_in_executor(None, second.acquire)
        assert info.value.holder == os.getpid()
    finally:
        first.release()
