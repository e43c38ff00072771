"""``pypi-mirror verify [--repair] [--json]`` over a real synced store: each kind of damage
planted by hand is found, ``--repair`` fixes it against the fake upstream (and offline
says what it could not), a clean store exits 0, and a held sync lock refuses it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pty
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mirror.core import layout
from mirror.storage import open_storage
from tests.conftest import run_cli
from tests.fakepypi import FakePyPI
from tests.sync_helpers import check_invariants, config_toml, page, publish, run_sync, sync_config

REPO = Path(__file__).resolve().parent.parent


async def verify(config: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    code, out, err = await run_cli("verify", "-c", str(config), "--json", *extra)
    assert code in (0, 1), err
    report: dict[str, Any] = json.loads(out)
    return code, report


def counts(report: dict[str, Any]) -> dict[str, int]:
    return {kind: v["count"] for kind, v in report["problems"].items() if v["count"]}


def paths(report: dict[str, Any], kind: str) -> set[str]:
    return {entry["path"] for entry in report["problems"][kind]["first"]}


async def synced(tmp: Path, upstream: FakePyPI, **sections: dict[str, Any]) -> tuple[Path, Path]:
    publish(tmp, upstream)
    root = tmp / "m"
    result = await run_sync(sync_config(upstream, root))
    assert result.ok
    config = tmp / "mirror.toml"
    text = config_toml(upstream, root)
    for section, values in sections.items():
        text += f"[{section}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())
    config.write_text(text)
    return root, config


def listed(root: Path, project: str) -> list[dict[str, Any]]:
    data = page(root, project)
    assert data is not None
    files: list[dict[str, Any]] = data["files"]
    return files


def web_rel(file: dict[str, Any]) -> str:
    return "web/" + file["url"].split("#", 1)[0].removeprefix("../../")


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


class Damage:
    """One of each kind, planted in a synced store; the paths verify must name."""

    def __init__(self, root: Path) -> None:
        files = {f["filename"]: f for f in listed(root, "demo-pkg")}
        self.missing = web_rel(files["demo_pkg-2.0-py3-none-any.whl"])
        (root / self.missing).unlink()
        self.corrupt = web_rel(files["demo_pkg-1.0.tar.gz"])
        data = bytearray((root / self.corrupt).read_bytes())
        data[len(data) // 2] ^= 0x01
        (root / self.corrupt).write_bytes(bytes(data))
        self.metadata = web_rel(files["demo_pkg-1.0-py3-none-any.whl"]) + ".metadata"
        (root / self.metadata).write_bytes((root / self.metadata).read_bytes() + b"X: 1\n")
        self.page = f"web/simple/tool/{layout.PAGE_V1_JSON}"
        (root / self.page).write_text('{"meta": {"api-version": "1.1"}, "name": ')
        self.unreferenced = "web/packages/ab/cd/" + "e" * 60 + "/stray-1.0.tar.gz"
        (root / self.unreferenced).parent.mkdir(parents=True)
        (root / self.unreferenced).write_bytes(b"stray")
        self.temp = f"tmp/{dead_pid()}.deadbeef1.stray.whl.part"
        (root / self.temp).write_bytes(b"half a file")
        self.json_api = "web/pypi/demo-pkg/json"
        doc = json.loads((root / self.json_api).read_bytes())
        extra = dict(doc["urls"][0], filename="demo_pkg-9.9-py3-none-any.whl")
        doc["urls"].append(extra)
        (root / self.json_api).write_text(json.dumps(doc))

    def expected(self) -> dict[str, str]:
        return {
            "missing": self.missing,
            "corrupt": self.corrupt,
            "metadata_mismatch": self.metadata,
            "broken_page": self.page,
            "unreferenced": self.unreferenced,
            "temp_leftover": self.temp,
            "json_api": self.json_api,
        }


async def test_a_clean_store_exits_zero(tmp_path: Path, upstream: FakePyPI) -> None:
    _root, config = await synced(tmp_path, upstream)
    code, report = await verify(config)
    assert code == 0
    assert report["ok"] is True
    assert counts(report) == {}
    assert report["kind"] == "mirror"
    assert report["pages"] == 2 and report["json_answers"] == 2
    # Four distribution files and three wheels' .metadata, every one hashed.
    assert report["files"] == report["hashed"] == 7
    code, out, err = await run_cli("verify", "-c", str(config))
    assert code == 0, err
    assert "no problems found" in out


async def test_verify_finds_each_kind_of_damage(tmp_path: Path, upstream: FakePyPI) -> None:
    root, config = await synced(tmp_path, upstream)
    damage = Damage(root)
    code, report = await verify(config)
    assert code == 1
    assert report["ok"] is False
    assert counts(report) == dict.fromkeys(damage.expected(), 1)
    for kind, path in damage.expected().items():
        assert paths(report, kind) == {path}, kind
    missing = report["problems"]["missing"]["first"][0]
    assert missing["project"] == "demo-pkg"
    # The tool's page is walked from its HTML form: its wheel is not reported unreferenced.
    assert "does not parse" in report["problems"]["broken_page"]["first"][0]["detail"]
    # Nothing was changed by looking.
    assert not (root / damage.missing).exists()
    assert (root / damage.temp).exists() and (root / damage.unreferenced).exists()
    code, out, _err = await run_cli("verify", "-c", str(config))
    assert code == 1
    assert "1 files missing (listed by a page, absent):" in out
    assert damage.corrupt in out and damage.temp in out


async def test_repair_fixes_each_kind_against_the_upstream(
    tmp_path: Path, upstream: FakePyPI
) -> None:
    root, config = await synced(tmp_path, upstream)
    damage = Damage(root)
    code, report = await verify(config, "--repair")
    assert code == 0, report["repair"]
    assert report["repair"]["not_repaired"]["count"] == 0
    assert report["repair"]["repaired"]["count"] == len(damage.expected())
    code, report = await verify(config)
    assert code == 0, counts(report)
    check_invariants(root)
    assert not (root / damage.temp).exists()
    assert not (root / damage.unreferenced).exists()


async def test_an_absent_metadata_and_a_json_api_without_page_are_found_and_repaired(
    tmp_path: Path, upstream: FakePyPI
) -> None:
    root, config = await synced(tmp_path, upstream, serve={"offline": True})
    (wheel,) = listed(root, "tool")
    metadata = web_rel(wheel) + ".metadata"
    held = (root / metadata).read_bytes()
    (root / metadata).unlink()
    orphan = "web/pypi/ghost"
    (root / orphan).mkdir(parents=True)
    (root / orphan / "json").write_text("{}")
    claim = root / "tmp" / "claims" / ("c" * 40)  # a claim no process holds
    claim.parent.mkdir(parents=True, exist_ok=True)
    claim.write_text("")
    code, report = await verify(config)
    assert code == 1
    assert counts(report) == {"missing": 1, "json_api": 1, "temp_leftover": 1}
    assert paths(report, "missing") == {metadata}
    assert paths(report, "json_api") == {orphan}
    assert paths(report, "temp_leftover") == {"tmp/claims/" + "c" * 40}
    # Offline: the .metadata is made again from the held wheel, checked against its page.
    code, report = await verify(config, "--repair")
    assert code == 0, report["repair"]
    assert (root / metadata).read_bytes() == held
    assert not (root / orphan).exists() and not claim.exists()
    code, report = await verify(config)
    assert code == 0, counts(report)


async def test_repair_offline_repairs_what_it_can_and_says_what_it_could_not(
    tmp_path: Path, upstream: FakePyPI
) -> None:
    root, config = await synced(tmp_path, upstream, serve={"offline": True})
    damage = Damage(root)
    requests = len(upstream.requests)
    code, report = await verify(config, "--repair")
    assert code == 1
    assert report["offline"] is True
    failed = {e["path"]: e["how"] for e in report["repair"]["not_repaired"]["first"]}
    assert set(failed) == {damage.missing, damage.corrupt}
    assert all("offline" in why for why in failed.values())
    assert report["repair"]["repaired"]["count"] == len(damage.expected()) - 2
    assert len(upstream.requests) == requests  # no connection anywhere
    # What is left: the two files only the upstream can give (the corrupt copy is gone).
    code, report = await verify(config)
    assert code == 1
    assert counts(report) == {"missing": 2}
    assert paths(report, "missing") == {damage.missing, damage.corrupt}


async def test_repair_with_the_upstream_gone_does_what_needs_no_upstream(
    tmp_path: Path, upstream: FakePyPI
) -> None:
    root, config = await synced(tmp_path, upstream)
    damage = Damage(root)
    await upstream.stop()  # connections refused from now on
    code, report = await verify(config, "--repair")
    assert code == 1
    failed = {e["path"]: e["how"] for e in report["repair"]["not_repaired"]["first"]}
    assert set(failed) == {damage.missing, damage.corrupt}
    assert all("failed" in why or "unreachable" in why for why in failed.values())
    repaired = {e["path"]: e["how"] for e in report["repair"]["repaired"]["first"]}
    # The page whose JSON form was broken is rendered from its HTML form instead.
    assert repaired[damage.page].startswith(f"every form rendered again from {layout.PAGE_HTML}")
    code, report = await verify(config)
    assert counts(report) == {"missing": 2}


async def test_verify_is_refused_while_a_sync_holds_the_lock(
    tmp_path: Path, upstream: FakePyPI
) -> None:
    root, config = await synced(tmp_path, upstream)
    lock = open_storage(sync_config(upstream, root).storage).lock(layout.SYNC_LOCK)
    lock.acquire()
    try:
        code, out, err = await run_cli("verify", "-c", str(config), "--repair")
    finally:
        lock.release()
    assert code == 3
    assert out == ""
    assert err.count("\n") == 1 and "a sync is running" in err and str(os.getpid()) in err


async def test_verify_of_a_path_without_a_store_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "mirror.toml"
    config.write_text(f'[storage]\npath = "{tmp_path / "nothing"}"\n')
    code, out, err = await run_cli("verify", "-c", str(config))
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and "no mirror at" in err
    assert not (tmp_path / "nothing").exists()


@pytest.mark.parametrize("mode", ["cache"])
async def test_a_pull_through_cache_does_not_count_files_not_held(
    tmp_path: Path, upstream: FakePyPI, mode: str
) -> None:
    """A cache without a sync state: pages list files fetched on demand."""
    root, config = await synced(tmp_path, upstream)
    (root / layout.SYNC_STATE).unlink()
    files = {f["filename"]: f for f in listed(root, "demo-pkg")}
    (root / web_rel(files["demo_pkg-1.0.tar.gz"])).unlink()
    code, report = await verify(config)
    assert code == 0, counts(report)
    assert report["kind"] == mode
    assert report["not_held"] == 1


async def test_progress_is_shown_on_a_terminal(tmp_path: Path, upstream: FakePyPI) -> None:
    _root, config = await synced(tmp_path, upstream)
    master, slave = pty.openpty()
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "mirror",
            "verify",
            "-c",
            str(config),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=slave,
            cwd=REPO,
        )
        os.close(slave)
        await asyncio.wait_for(proc.wait(), 60)
        assert proc.returncode == 0
        shown = b""
        with contextlib.suppress(OSError):
            while chunk := os.read(master, 65536):
                shown += chunk
    finally:
        os.close(master)
    text = shown.decode(errors="replace")
    assert "\rverify: pages 2  files 7  hashed 7" in text and "problems 0" in text
