"""Air-gap bundles end to end: export from a synced mirror A, stop the upstream, import
into B (a store that never had an upstream), install with pip and uv from B offline;
incremental bundles in order, twice, out of order; ``keygen``."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from mirror.bundle.errors import AlreadyApplied, BundleError
from mirror.core import layout
from tests.bundle_helpers import (
    bundle_paths,
    config_file,
    export,
    import_,
    make_key,
    offline_config,
    served_state,
    source_config,
)
from tests.conftest import MirrorFactory, run_cli
from tests.fakepypi import FakePyPI, build_wheel
from tests.sync_helpers import check_invariants, filenames, publish, run_sync
from tests.tufrepo.support import pip_install, uv_install


async def test_export_import_then_pip_and_uv_install_offline(
    tmp_path: Path, upstream: FakePyPI, make_mirror: MirrorFactory
) -> None:
    publish(tmp_path, upstream)
    key, pub = make_key(tmp_path)
    a = source_config(upstream, tmp_path / "a", key)
    assert (await run_sync(a)).ok
    a_file = config_file(tmp_path / "a.toml", a)
    code, _, err = await run_cli("export", "-c", a_file, tmp_path / "bundle.tar")
    assert code == 0, err
    assert "signed" in err and "UNSIGNED" not in err
    await upstream.stop()

    b = offline_config(tmp_path / "b", [pub])
    b_file = config_file(tmp_path / "b.toml", b)
    code, _, err = await run_cli("import", "-c", b_file, tmp_path / "bundle.tar")
    assert code == 0, err
    assert "imported bundle" in err
    assert served_state(tmp_path / "b") == served_state(tmp_path / "a")
    check_invariants(tmp_path / "b")

    mirror = await make_mirror(
        {"serve": {"offline": True}, "sync": {"mode": "mirror"}}, storage=tmp_path / "b"
    )
    assert mirror.services.upstream is None  # offline: no session, no connection possible
    code, out = await pip_install(mirror, tmp_path / "pip", "tool")
    assert code == 0, out
    assert (tmp_path / "pip" / "demo_pkg").exists() or "demo-pkg" in out.lower()
    code, out = await uv_install(mirror, tmp_path / "uv", "tool", "demo-pkg==1.0")
    assert code == 0, out
    status, _, body = await mirror.get("/simple/")
    assert status == 200 and b"tool" in body


async def test_incremental_bundles_in_order_twice_and_out_of_order(
    tmp_path: Path, upstream: FakePyPI
) -> None:
    dist = tmp_path / "dist"
    publish(tmp_path, upstream)
    upstream.add_file("gone", build_wheel(dist, "gone", "1.0"))
    key, pub = make_key(tmp_path)
    a = source_config(upstream, tmp_path / "a", key)
    b = offline_config(tmp_path / "b", [pub])
    bundles: list[Path] = []

    async def step(name: str) -> None:
        assert (await run_sync(a)).ok
        bundles.append(tmp_path / name)
        await export(a, bundles[-1])

    await step("one.tar")
    # What the first export carried was stored long before the next one.
    for path in (tmp_path / "a" / layout.WEB_PACKAGES).rglob("*"):
        os.utime(path, (time.time() - 3600, time.time() - 3600))
    upstream.add_file("tool", build_wheel(dist, "tool", "0.2", requires_dist=["demo-pkg>=1"]))
    upstream.set_yanked("demo-pkg", "demo_pkg-1.0-py3-none-any.whl", "broken")
    await step("two.tar")
    upstream.remove_project("gone")
    upstream.add_file("newcomer", build_wheel(dist, "newcomer", "3.0"))
    await step("three.tar")

    # Out of order: the third continues from the second's serial, which B never got.
    with pytest.raises(BundleError, match="gap"):
        await import_(b, bundles[2])
    assert not (tmp_path / "b" / layout.WEB).exists() or served_state(tmp_path / "b") == {}

    first = await import_(b, bundles[0])
    assert first.projects == 3
    assert filenames(tmp_path / "b", "gone") == {"gone-1.0-py3-none-any.whl"}
    with pytest.raises(AlreadyApplied):
        await import_(b, bundles[0])
    second = await import_(b, bundles[1])
    assert second.projects == 2  # only what changed: tool and demo-pkg
    # ... with only the files stored since the first export: tool 0.2 and its .metadata.
    files = {p.rsplit("/", 1)[-1] for p in bundle_paths(bundles[1]) if "/packages/" in p}
    assert files == {"tool-0.2-py3-none-any.whl", "tool-0.2-py3-none-any.whl.metadata"}
    assert second.written == 2
    page = (tmp_path / "b" / layout.simple_page("demo-pkg", layout.PAGE_V1_JSON)).read_text()
    assert '"yanked":"broken"' in page.replace(" ", "")
    third = await import_(b, bundles[2])
    assert third.removed == 1 and third.projects == 1
    assert filenames(tmp_path / "b", "gone") == set()
    with pytest.raises(AlreadyApplied):
        await import_(b, bundles[1])
    assert served_state(tmp_path / "b") == served_state(tmp_path / "a")
    check_invariants(tmp_path / "b")


async def test_cli_exit_codes_for_applied_twice_and_a_gap(
    tmp_path: Path, upstream: FakePyPI
) -> None:
    publish(tmp_path, upstream)
    key, pub = make_key(tmp_path)
    a = source_config(upstream, tmp_path / "a", key)
    assert (await run_sync(a)).ok
    await export(a, tmp_path / "one.tar")
    upstream.add_file("late", build_wheel(tmp_path / "dist", "late", "1.0"))
    assert (await run_sync(a)).ok
    await export(a, tmp_path / "two.tar")
    b_file = config_file(tmp_path / "b.toml", offline_config(tmp_path / "b", [pub]))

    code, _, err = await run_cli("import", "-c", b_file, tmp_path / "two.tar")
    assert code == 1 and "gap" in err and len(err.strip().splitlines()) == 1, err
    code, _, err = await run_cli("import", "-c", b_file, tmp_path / "one.tar")
    assert code == 0, err
    code, _, err = await run_cli("import", "-c", b_file, tmp_path / "one.tar")
    assert code == 0 and "applied already" in err, err
    code, _, err = await run_cli("import", "-c", b_file, tmp_path / "missing.tar")
    assert code == 1 and "no such file" in err, err
    (tmp_path / "empty").mkdir()
    code, _, err = await run_cli("import", "-c", b_file, tmp_path / "empty")
    assert code == 1 and "no bundle" in err, err
    code, _, err = await run_cli("export", "-c", b_file, "--since", "1", "--all", tmp_path / "x")
    assert code == 2, err


async def test_keygen_writes_a_private_key_only_its_owner_reads_and_never_overwrites(
    tmp_path: Path,
) -> None:
    code, _, err = await run_cli("keygen", tmp_path / "k")
    assert code == 0, err
    assert stat.S_IMODE(os.stat(tmp_path / "k").st_mode) == 0o600
    assert b"PUBLIC KEY" in (tmp_path / "k.pub").read_bytes()
    before = (tmp_path / "k").read_bytes()
    code, _, err = await run_cli("keygen", tmp_path / "k")
    assert code == 2 and "exists" in err
    assert (tmp_path / "k").read_bytes() == before
