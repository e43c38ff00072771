"""A bundle is refused, with one line naming the reason and the first bad path, and
nothing of it applied: a flipped byte, a truncated, missing, renamed or foreign volume,
an untrusted or absent signature, a manifest edited after signing, unsafe tar members."""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
from pathlib import Path

import pytest

from mirror.bundle.errors import BundleError
from mirror.bundle.sign import load_private, sign
from mirror.bundle.volumes import MANIFEST_MEMBER, SIGNATURE_MEMBER, VOLUME_MEMBER
from mirror.config import Config
from mirror.core import layout
from tests.bundle_helpers import (
    config_file,
    export,
    import_,
    make_key,
    offline_config,
    served_state,
    source_config,
)
from tests.conftest import run_cli
from tests.fakepypi import FakePyPI, build_wheel
from tests.sync_helpers import check_invariants, publish, run_sync

MIB = 1024 * 1024


async def synced(tmp_path: Path, upstream: FakePyPI, key: Path | None) -> Config:
    publish(tmp_path, upstream)
    # Larger than a volume: split across volumes.
    upstream.add_file("big", build_wheel(tmp_path / "dist", "big", "1.0", pad_bytes=int(2.5 * MIB)))
    a = source_config(upstream, tmp_path / "a", key)
    assert (await run_sync(a)).ok
    return a


def volumes(base: Path) -> list[Path]:
    return sorted(base.parent.glob(base.name + ".*.tar"))


async def refused(b: Config, *paths: Path, match: str, **options: bool) -> str:
    before = served_state(b.storage.path)
    with pytest.raises(BundleError, match=match) as caught:
        await import_(b, *paths, **options)
    assert served_state(b.storage.path) == before, "a refused bundle changed the store"
    assert not (b.storage.path / layout.BUNDLE_JOURNAL).exists()
    message = str(caught.value)
    assert "\n" not in message
    return message


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


async def test_damaged_volumes_are_refused_and_the_intact_set_is_applied(
    tmp_path: Path, upstream: FakePyPI
) -> None:
    key, pub = make_key(tmp_path)
    a = await synced(tmp_path, upstream, key)
    base = tmp_path / "out" / "bundle"
    base.parent.mkdir()
    result = await export(a, base, max_size=MIB)
    parts = volumes(base)
    assert len(parts) >= 3 and result.volumes == parts
    assert all(p.stat().st_size <= MIB for p in parts)
    assert any(b".part001" in p.read_bytes() for p in parts)  # the big wheel is split
    b = offline_config(tmp_path / "b", [pub])
    damaged = tmp_path / "damaged"

    def copy() -> list[Path]:
        shutil.rmtree(damaged, ignore_errors=True)
        damaged.mkdir()
        return [Path(shutil.copy(p, damaged)) for p in parts]

    # Not a bundle at all: a path that does not exist, an empty directory, a stray file.
    await refused(b, tmp_path / "no-such.tar", match="no such file or directory")
    (tmp_path / "empty").mkdir()
    await refused(b, tmp_path / "empty", match="empty directory")
    (tmp_path / "notes.tar").write_bytes(b"not a tar file at all")
    await refused(b, tmp_path / "notes.tar", match="not a bundle volume")
    # A flipped byte in the middle of a file's data (the big wheel, volume 2).
    copies = copy()
    flip(copies[1], copies[1].stat().st_size // 2)
    message = await refused(b, *copies, match="corrupt")
    assert copies[1].name in message or "web" in message
    # A flipped byte in the padding after a member, and one in a tar header.
    copies = copy()
    flip(copies[0], 600)
    await refused(b, *copies, match="corrupt")
    copies = copy()
    flip(copies[0], 1024 + 3)
    await refused(b, *copies, match="bad tar header|holds")
    # A truncated volume.
    copies = copy()
    with copies[1].open("r+b") as handle:
        handle.truncate(copies[1].stat().st_size - 5000)
    await refused(b, *copies, match="truncated")
    # A missing volume (the middle one; then the last one, which holds the manifest).
    copies = copy()
    await refused(b, copies[0], *copies[2:], match="volume 2 of .* is missing")
    await refused(b, *copies[:-1], match="no manifest")
    # Renamed volumes (out of order).
    copies = copy()
    copies[0].rename(damaged / "tmp")
    copies[1].rename(copies[0])
    (damaged / "tmp").rename(copies[1])
    await refused(b, *copies, match="out of order")
    # A volume of another bundle.
    other = tmp_path / "other" / "bundle"
    other.parent.mkdir()
    await export(a, other, max_size=MIB, everything=True)
    copies = copy()
    await refused(b, copies[0], volumes(other)[1], *copies[2:], match="different bundles")

    # The intact set, given as a directory, in any order.
    result_b = await import_(b, base.parent)
    assert result_b.written > 0
    assert served_state(tmp_path / "b") == served_state(tmp_path / "a")
    check_invariants(tmp_path / "b")


async def test_signatures_decide_what_is_accepted(tmp_path: Path, upstream: FakePyPI) -> None:
    key, pub = make_key(tmp_path)
    _, stranger_pub = make_key(tmp_path, "stranger.key")
    a = await synced(tmp_path, upstream, key)
    bundle = tmp_path / "bundle.tar"
    await export(a, bundle)

    # Signed by a key this host does not trust.
    await refused(
        offline_config(tmp_path / "b", [stranger_pub]), bundle, match="not signed by a trusted key"
    )
    # No trusted key at all: refused unless --allow-unsigned.
    await refused(offline_config(tmp_path / "b", []), bundle, match="trusted-keys is empty")

    # The manifest edited after signing (one digit of a file's length).
    edited = tmp_path / "edited.tar"
    data = bytearray(bundle.read_bytes())
    start = data.index(b'{"t":"entry"')
    at = data.index(b'"size":', start) + len(b'"size":')
    data[at] = ord("9") if data[at] != ord("9") else ord("8")
    edited.write_bytes(bytes(data))
    b = offline_config(tmp_path / "b", [pub])
    await refused(b, edited, match="not signed by a trusted key")

    # An unsigned bundle: refused where keys are trusted, even with --allow-unsigned.
    unsigned_source = source_config(upstream, tmp_path / "a", None)
    unsigned = tmp_path / "unsigned.tar"
    await export(unsigned_source, unsigned, everything=True)
    await refused(b, unsigned, match="not signed", allow_unsigned=True)
    # ... and accepted with --allow-unsigned where none is.
    nobody = offline_config(tmp_path / "b", [])
    result = await import_(nobody, unsigned, allow_unsigned=True)
    assert result.signed_by is None and result.projects == 3

    code, _, err = await run_cli("import", "-c", config_file(tmp_path / "s.toml", b), edited)
    assert code == 1 and err.startswith("pypi-mirror: import refused:"), err
    assert len(err.strip().splitlines()) == 1, err


def crafted(
    tmp_path: Path,
    key: Path,
    members: list[tuple[tarfile.TarInfo, bytes]],
    entries: list[dict[str, object]],
) -> Path:
    """A one-volume bundle whose members and manifest the test chooses, properly signed."""
    bundle_id = "c" * 32
    header = {
        "t": "bundle",
        "format": 1,
        "id": bundle_id,
        "created": 0.0,
        "source": {"id": "s", "upstream": "http://x/", "mode": "mirror"},
        "range": {"kind": "serial", "from": 0, "to": 5},
        "tuf": False,
    }

    def member(info: tarfile.TarInfo, data: bytes) -> bytes:
        if info.isreg():
            info.size = len(data)
        raw = info.tobuf(format=tarfile.PAX_FORMAT)
        return raw + data + b"\0" * (-len(data) % 512)

    vol = json.dumps({"bundle": bundle_id, "volume": 1}).encode()
    prefix_bytes = member(tarfile.TarInfo(VOLUME_MEMBER), vol) + b"".join(
        member(info, data) for info, data in members
    )
    last = {
        "t": "last",
        "index": 1,
        "prefix_size": len(prefix_bytes),
        "prefix_sha256": hashlib.sha256(prefix_bytes).hexdigest(),
    }
    end = {
        "t": "end",
        "entries": len(entries),
        "bytes": 0,
        "projects": 0,
        "removed": 0,
        "volumes": 1,
    }
    manifest = b"".join(json.dumps(line).encode() + b"\n" for line in [header, *entries, last, end])
    signature = sign(load_private(key), hashlib.sha256(manifest).hexdigest(), len(manifest)).dump()
    volume = (
        prefix_bytes
        + member(tarfile.TarInfo(MANIFEST_MEMBER), manifest)
        + member(tarfile.TarInfo(SIGNATURE_MEMBER), signature)
        + b"\0" * 1024
    )
    path = tmp_path / "crafted.tar"
    path.write_bytes(volume)
    return path


async def test_unsafe_paths_and_members_are_refused(tmp_path: Path) -> None:
    key, pub = make_key(tmp_path)
    b = offline_config(tmp_path / "b", [pub])
    data = b"evil"
    digest = hashlib.sha256(data).hexdigest()

    def regular(name: str) -> tuple[tarfile.TarInfo, bytes]:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        return info, data

    def entry(path: str, member: str) -> dict[str, object]:
        return {
            "t": "entry",
            "path": path,
            "size": len(data),
            "sha256": digest,
            "project": None,
            "parts": [[1, member, len(data)]],
        }

    record = layout.project_record("demo")
    for path in ("../../evil", "/etc/passwd", layout.STATE + "/../../evil", layout.SYNC_STATE):
        bundle = crafted(tmp_path, key, [regular(path)], [entry(path, path)])
        await refused(b, bundle, match="outside what a bundle may carry|unsafe path")
    for name in ("../../evil", "/abs/evil"):
        bundle = crafted(tmp_path, key, [regular(name)], [entry(record, name)])
        await refused(b, bundle, match="unsafe path|not in the manifest|holds")
    link = tarfile.TarInfo(record)
    link.type = tarfile.SYMTYPE
    link.linkname = "/etc/passwd"
    bundle = crafted(tmp_path, key, [(link, b"")], [entry(record, record)])
    await refused(b, bundle, match="not a regular file")
    # A manifest that claims more bytes than the volume holds.
    bundle = crafted(
        tmp_path,
        key,
        [regular(record)],
        [{**entry(record, record), "size": 999, "parts": [[1, record, 999]]}],
    )
    await refused(b, bundle, match="holds")
    assert not (tmp_path / "evil").exists()
