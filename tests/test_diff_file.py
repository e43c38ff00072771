"""``[sync] diff-file``: after each ``pypi-mirror sync`` the web-root paths it wrote or
removed, as absolute paths, one a line, sorted and unique, replacing the file atomically
(``diff-append-epoch``: one file per run)."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from pathlib import Path

from tests.fakepypi import FakePyPI, build_wheel
from tests.sync_helpers import config_toml, publish

REPO = Path(__file__).resolve().parent.parent


async def sync(config: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mirror",
        "sync",
        "-c",
        str(config),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO,
    )
    _out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()


def web_files(root: Path) -> set[str]:
    return {str(p) for p in (root / "web").rglob("*") if p.is_file()}


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def file_path(root: Path, project: str, filename: str) -> str:
    data = json.loads((root / "web/simple" / project / "index.v1_json").read_bytes())
    (url,) = [f["url"] for f in data["files"] if f["filename"] == filename]
    return str(root / "web" / url.split("#", 1)[0].removeprefix("../../"))


async def test_diff_file_lists_what_each_sync_wrote_and_removed(
    tmp_path: Path, upstream: FakePyPI
) -> None:
    publish(tmp_path, upstream)
    root = (tmp_path / "m").resolve()
    diff = tmp_path / "lists" / "mirrored-files"
    config = tmp_path / "mirror.toml"
    config.write_text(config_toml(upstream, root, diff_file=str(diff)))
    await sync(config)
    first = lines(diff)
    assert first == sorted(set(first))
    # A first sync wrote everything under web/ (and nothing of state/ or tmp/).
    assert set(first) == web_files(root)
    assert all(line.startswith(str(root / "web") + "/") for line in first)
    # An operator copies what the list names (rsync --files-from), ...
    copy = tmp_path / "copy"
    for line in first:
        target = copy / Path(line).relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(line, target)

    removed = file_path(root, "demo-pkg", "demo_pkg-1.0.tar.gz")
    kept = file_path(root, "tool", "tool-0.1-py3-none-any.whl")
    upstream.remove_file("demo-pkg", "demo_pkg-1.0.tar.gz")
    upstream.add_file("demo-pkg", build_wheel(tmp_path / "dist", "Demo.Pkg", "3.0"))
    await sync(config)
    second = set(lines(diff))
    added = file_path(root, "demo-pkg", "demo_pkg-3.0-py3-none-any.whl")
    assert {added, added + ".metadata", removed} <= second
    assert str(root / "web/simple/demo-pkg/index.html") in second
    assert str(root / "web/simple/demo-pkg/index.v1_json") in second
    assert str(root / "web/pypi/demo-pkg/json") in second
    # What the run did not touch is not listed.
    assert kept not in second
    assert not any("/web/simple/tool/" in line for line in second)
    # ... and after the next run copies what is held of the new list and deletes what is
    # not (rsync --files-from --delete-missing-args): the copy equals the mirror.
    for line in second:
        target = copy / Path(line).relative_to(root)
        if Path(line).exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(line, target)
        else:
            target.unlink()
    assert {str(p.relative_to(copy)) for p in copy.rglob("*") if p.is_file()} == {
        str(Path(p).relative_to(root)) for p in web_files(root)
    }
    assert not list(diff.parent.glob(".*"))  # no temp file left beside it
    assert not list((root / "tmp").glob("*diff*"))  # nor the spool of the paths


async def test_diff_append_epoch_writes_one_file_per_run(
    tmp_path: Path, upstream: FakePyPI
) -> None:
    publish(tmp_path, upstream)
    root = tmp_path / "m"
    diff = tmp_path / "mirrored-files"
    config = tmp_path / "mirror.toml"
    config.write_text(config_toml(upstream, root, diff_file=str(diff), diff_append_epoch=True))
    await sync(config)
    await asyncio.sleep(1.1)  # the name carries whole seconds
    await sync(config)
    runs = sorted(tmp_path.glob("mirrored-files-*"), key=lambda p: int(p.name.rsplit("-", 1)[1]))
    assert len(runs) == 2
    assert not diff.exists()
    assert lines(runs[0])
    # The second run found nothing new upstream: only the root list may be written again.
    assert all("/web/simple/index" in line for line in lines(runs[1]))
