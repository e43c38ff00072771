"""A full disk while serving (issue 9): the storage root on a small tmpfs the test mounts.

What must hold: everything already stored is still served; what would need storing is a
clear one-line 503 ("cannot store ...: no space left on <storage path>") for every client
at once, none waits for its own timeout; no temp file and no half-written project page
(``index.html`` without ``index.v1_json``) is left; and once space is freed, caching
simply resumes. Needs root (``mount``); skipped with the reason otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import MirrorFactory, RunningMirror
from tests.fakepypi import FakePyPI, build_wheel

# Every request of these tests is answered within this many seconds, or the test fails.
ANSWER_WITHIN = 15.0


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs mounted for the test (and unmounted after it)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs (a disk that fills up)")
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m,mode=0755", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip() or result.returncode}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, check=False)


def fill(disk: Path) -> Path:
    """Fill ``disk`` to the last byte with one file; its path."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for size in (1 << 20, 1 << 16, 1 << 12, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)
    with pytest.raises(OSError) as full:
        (disk / "probe").write_bytes(b"x" * 4096)
    assert full.value.errno == errno.ENOSPC
    (disk / "probe").unlink(missing_ok=True)
    return filler


def leftovers(root: Path) -> list[str]:
    """Temp files, and project directories with one page rendering but not the other."""
    found = [str(p) for p in (root / "tmp").rglob("*") if p.is_file()]
    simple = root / "web" / "simple"
    for project in simple.iterdir() if simple.exists() else ():
        if project.is_dir():
            names = {p.name for p in project.iterdir()}
            if ("index.html" in names) != ("index.v1_json" in names):
                found.append(f"{project}: {sorted(names)}")
    return found


async def answer(mirror: RunningMirror, path: str) -> tuple[int, bytes]:
    status, _, body = await asyncio.wait_for(mirror.get(path), ANSWER_WITHIN)
    return status, body


def assert_cannot_store(status: int, body: bytes, storage: Path) -> None:
    assert status == 503, body
    text = body.decode()
    assert text.endswith("\n") and text.count("\n") == 1, text
    assert text.startswith("cannot store ") and f"no space left on {storage}" in text, text


async def test_a_full_disk_is_a_clear_503_for_new_things_while_held_ones_are_served(
    tmp_path: Path, upstream: FakePyPI, make_mirror: MirrorFactory, small_disk: Path
) -> None:
    held = upstream.add_file("held", build_wheel(tmp_path, "held", "1.0"))
    later = upstream.add_file("held", build_wheel(tmp_path, "held", "2.0", pad_bytes=200_000))
    fresh = upstream.add_file("fresh", build_wheel(tmp_path, "fresh", "1.0"))
    storage = small_disk / "data"
    # index-ttl 0: every page request revalidates (and would write its record).
    mirror = await make_mirror({"serve": {"index-ttl": 0}}, storage=storage)
    assert (await answer(mirror, "/simple/held/"))[0] == 200
    assert (await answer(mirror, held.url_path)) == (200, held.source.read_bytes())
    filler = fill(small_disk)

    # What is held is served: the file, and the page (revalidated, stored copy kept).
    assert (await answer(mirror, held.url_path)) == (200, held.source.read_bytes())
    status, body = await answer(mirror, "/simple/held/")
    assert status == 200 and later.filename.encode() in body

    # What would need storing: a clear 503, for every one of several clients at once.
    answers = await asyncio.gather(*(answer(mirror, later.url_path) for _ in range(6)))
    for status, body in answers:
        assert_cannot_store(status, body, storage)
    assert_cannot_store(*await answer(mirror, later.url_path + ".metadata"), storage)
    assert_cannot_store(*await answer(mirror, "/simple/fresh/"), storage)
    assert_cannot_store(*await answer(mirror, "/pypi/held/json"), storage)

    assert leftovers(storage) == []
    assert not (storage / "web" / later.url_path.lstrip("/")).exists()

    # Space is freed: caching resumes, no restart needed.
    filler.unlink()
    assert (await answer(mirror, later.url_path)) == (200, later.source.read_bytes())
    assert (await answer(mirror, fresh.url_path))[0] == 200
    status, body = await answer(mirror, "/simple/fresh/")
    assert status == 200 and fresh.filename.encode() in body
    status, body = await answer(mirror, "/pypi/held/json")
    assert status == 200 and json.loads(body)["info"]["name"] == "held"
    assert leftovers(storage) == []


async def test_a_disk_that_cannot_take_a_whole_file_fails_before_any_byte_is_sent(
    tmp_path: Path, upstream: FakePyPI, make_mirror: MirrorFactory, small_disk: Path
) -> None:
    """Room left, but not for the file: the download makes room for the whole file
    before it starts (the index gives its size), so its clients get the 503 — not a
    200 cut off half way — and the page written meanwhile is whole."""
    big = upstream.add_file("big", build_wheel(tmp_path, "big", "1.0", pad_bytes=1_500_000))
    storage = small_disk / "data"
    mirror = await make_mirror({}, storage=storage)
    assert (await answer(mirror, "/simple/big/"))[0] == 200
    ballast = small_disk / "ballast"
    disk = os.statvfs(small_disk)
    ballast.write_bytes(b"\0" * (disk.f_bavail * disk.f_frsize - 512 * 1024))  # 512 KiB left
    answers = await asyncio.gather(*(answer(mirror, big.url_path) for _ in range(3)))
    for status, body in answers:
        assert_cannot_store(status, body, storage)
    assert leftovers(storage) == []
    ballast.unlink()
    assert (await answer(mirror, big.url_path)) == (200, big.source.read_bytes())


async def test_a_page_that_does_not_fit_leaves_no_half_of_it(
    tmp_path: Path, upstream: FakePyPI, make_mirror: MirrorFactory, small_disk: Path
) -> None:
    """Room for the JSON rendering of a new project's page but not for its HTML: nothing
    of the page is renamed into place (before, ``index.v1_json`` stayed without its
    ``index.html``), and the page is there, whole, once there is room."""
    upstream.add_file("wide", build_wheel(tmp_path, "wide", "1.0"))
    upstream.synthetic_files["wide"] = 2000
    reference = await make_mirror({}, storage=tmp_path / "reference")
    assert (await answer(reference, "/simple/wide/"))[0] == 200
    rendered = reference.root / "web" / "simple" / "wide"
    json_size = sum((rendered / n).stat().st_size for n in ("index.v1_json", "index.v1_json.gz"))
    assert (rendered / "index.html").stat().st_size > 256 * 1024

    storage = small_disk / "data"
    mirror = await make_mirror({}, storage=storage)
    ballast = small_disk / "ballast"
    disk = os.statvfs(small_disk)
    ballast.write_bytes(b"\0" * (disk.f_bavail * disk.f_frsize - json_size - 128 * 1024))
    assert_cannot_store(*await answer(mirror, "/simple/wide/"), storage)
    assert leftovers(storage) == []
    assert not (storage / "web" / "simple" / "wide" / "index.v1_json").exists()
    ballast.unlink()
    status, body = await answer(mirror, "/simple/wide/")
    assert status == 200 and body.count(b"</a>") == 2001
    assert leftovers(storage) == []
