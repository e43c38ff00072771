"""Helpers for the bundle tests: a synced source mirror, configs for the offline host,
export and import in-process (as the commands do) or through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mirror.bundle.export import ExportOptions, ExportResult, export_bundle
from mirror.bundle.importer import ImportOptions, ImportResult, import_bundle
from mirror.bundle.progress import LineProgress
from mirror.bundle.sign import keygen
from mirror.config import Config, config_from_mapping
from mirror.core import layout
from mirror.storage import open_storage
from tests.conftest import merge
from tests.fakepypi import FakePyPI
from tests.sync_helpers import sync_config

#: An upstream no test serves: the offline host must never need one.
NOWHERE = "http://127.0.0.1:9/"


def source_config(upstream: FakePyPI, root: Path, key: Path | None, **sections: Any) -> Config:
    """A synced mirror (mode = "mirror") that signs its bundles with ``key``."""
    extra: dict[str, Any] = {"sync": {"mode": "mirror"}}
    if key is not None:
        extra["bundle"] = {"signing-key": str(key)}
    return sync_config(upstream, root, **merge(extra, sections))


def offline_config(root: Path, trusted: list[Path], **sections: Any) -> Config:
    base: dict[str, Any] = {
        "storage": {"path": str(root)},
        "upstream": {"url": NOWHERE, "file-hosts": [], "timeout": 2.0, "retries": 0},
        "sync": {"mode": "mirror", "interval": 0},
        "serve": {"offline": True},
        "bundle": {"trusted-keys": [str(p) for p in trusted]},
    }
    return config_from_mapping(merge(base, sections), source="test", env={})


def make_key(tmp: Path, name: str = "bundle.key") -> tuple[Path, Path]:
    path = tmp / name
    keygen(path)
    return path, path.with_name(name + ".pub")


async def export(config: Config, output: Path, **options: Any) -> ExportResult:
    storage = open_storage(config.storage)
    progress = LineProgress("export", tty=False)
    return await export_bundle(config, storage, ExportOptions(output, **options), progress)


async def import_(config: Config, *paths: Path, allow_unsigned: bool = False) -> ImportResult:
    storage = open_storage(config.storage)
    progress = LineProgress("import", tty=False)
    options = ImportOptions(tuple(paths), allow_unsigned=allow_unsigned)
    return await import_bundle(config, storage, options, progress)


def config_file(path: Path, config: Config) -> Path:
    """``config`` as a TOML file for the CLI (the keys these tests set)."""
    lines = [
        "[storage]",
        f'path = "{config.storage.path}"',
        "[upstream]",
        f'url = "{config.upstream.url}"',
        "file-hosts = []",
        "[sync]",
        f'mode = "{config.sync.mode.value}"',
        "[log]",
        'format = "json"',
        "[bundle]",
        f"trusted-keys = {json.dumps([str(p) for p in config.bundle.trusted_keys])}",
    ]
    if config.bundle.signing_key is not None:
        lines.append(f'signing-key = "{config.bundle.signing_key}"')
    if config.tuf.root is not None:
        lines += ["[tuf]", f'mode = "{config.tuf.mode.value}"', f'root = "{config.tuf.root}"']
    path.write_text("\n".join(lines) + "\n")
    return path


def served_state(root: Path) -> dict[str, bytes]:
    """What an offline host serves from: every project's pages and JSON API answers,
    and every file (by path below the web root)."""
    web = root / layout.WEB
    out: dict[str, bytes] = {}
    for sub in ("simple", "pypi", "packages"):
        base = web / sub
        if not base.exists():
            continue
        for path in base.rglob("*"):
            rel = path.relative_to(web).as_posix()
            if path.is_file() and rel.count("/") > 1:  # not the root list
                out[rel] = path.read_bytes()
    return out


def journal_path(root: Path) -> Path:
    return root / layout.BUNDLE_JOURNAL


def bundle_paths(bundle: Path) -> list[str]:
    """The paths a one-file bundle's manifest lists."""
    data = bundle.read_bytes()
    start = data.index(b'{"t":"bundle"')
    end = data.index(b'{"t":"end"', start)
    manifest = data[start:end].decode()
    return [
        json.loads(line)["path"]
        for line in manifest.splitlines()
        if line.startswith('{"t":"entry"')
    ]
