"""Build tiny, real, installable distributions for tests: no network, no build backend.

Everything is deterministic: the same arguments give byte-identical files (fixed zip and
tar timestamps, seeded padding), so digests are stable within and across runs.
"""

from __future__ import annotations

import base64
import csv
import gzip
import hashlib
import io
import random
import re
import tarfile
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from packaging.version import Version

__all__ = [
    "build_sdist",
    "build_wheel",
    "escape_name",
    "sdist_metadata",
    "wheel_metadata",
]

_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
_TAR_MTIME = 315532800  # 1980-01-01, same instant as the zip epoch
_EMPTY: Mapping[str, bytes] = {}


def escape_name(name: str) -> str:
    """The name as written in wheel and sdist filenames (``Foo.Bar`` → ``foo_bar``)."""
    return re.sub(r"[-_.]+", "_", name).lower()


def _record_hash(data: bytes) -> str:
    digest = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _padding(name: str, version: str, size: int) -> bytes:
    """Incompressible but deterministic bytes."""
    seed = int.from_bytes(hashlib.sha256(f"{name}=={version}".encode()).digest()[:8], "big")
    return random.Random(seed).randbytes(size)


def _core_metadata(
    name: str,
    version: str,
    *,
    summary: str,
    requires_dist: Sequence[str],
    requires_python: str | None,
) -> bytes:
    lines = [
        "Metadata-Version: 2.1",
        f"Name: {name}",
        f"Version: {version}",
        f"Summary: {summary}",
    ]
    if requires_python is not None:
        lines.append(f"Requires-Python: {requires_python}")
    lines.extend(f"Requires-Dist: {req}" for req in requires_dist)
    return ("\n".join(lines) + "\n\n").encode("utf-8")


def _default_module(version: str) -> str:
    return f'"""A tiny test package."""\n\n__version__ = "{version}"\n'


def build_wheel(
    dest: Path,
    name: str,
    version: str,
    *,
    requires_dist: Sequence[str] = (),
    requires_python: str | None = None,
    python_tag: str = "py3",
    abi_tag: str = "none",
    platform_tag: str = "any",
    build_tag: str | None = None,
    summary: str = "A tiny test package",
    module_source: str | None = None,
    extra_files: Mapping[str, bytes] = _EMPTY,
    pad_bytes: int = 0,
) -> Path:
    """Write a valid wheel into ``dest`` and return its path.

    Contents: ``<pkg>/__init__.py`` (defining ``__version__``, or ``module_source``),
    ``extra_files`` (archive path → bytes), ``<pkg>/_padding.bin`` of ``pad_bytes`` random
    bytes (stored uncompressed, so the wheel grows by that much), and the ``.dist-info``
    with METADATA, WHEEL and a RECORD carrying correct sha256 hashes and sizes.
    ``<pkg>`` is the escaped name (``Foo.Bar`` → ``foo_bar``).
    """
    dest.mkdir(parents=True, exist_ok=True)
    version = str(Version(version))
    escaped = escape_name(name)
    dist_info = f"{escaped}-{version}.dist-info"
    tags = [
        f"{py}-{abi}-{plat}"
        for py in python_tag.split(".")
        for abi in abi_tag.split(".")
        for plat in platform_tag.split(".")
    ]
    wheel_lines = [
        "Wheel-Version: 1.0",
        "Generator: fakepypi (tests)",
        f"Root-Is-Purelib: {'true' if platform_tag == 'any' else 'false'}",
        *(f"Tag: {tag}" for tag in tags),
    ]
    if build_tag is not None:
        wheel_lines.append(f"Build: {build_tag}")

    # (archive path, bytes, compress?)
    entries: list[tuple[str, bytes, bool]] = [
        (f"{escaped}/__init__.py", (module_source or _default_module(version)).encode(), True),
    ]
    entries.extend((path, data, True) for path, data in sorted(extra_files.items()))
    if pad_bytes > 0:
        entries.append((f"{escaped}/_padding.bin", _padding(name, version, pad_bytes), False))
    entries.append(
        (
            f"{dist_info}/METADATA",
            _core_metadata(
                name,
                version,
                summary=summary,
                requires_dist=requires_dist,
                requires_python=requires_python,
            ),
            True,
        )
    )
    entries.append((f"{dist_info}/WHEEL", ("\n".join(wheel_lines) + "\n").encode(), True))

    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    for path, data, _ in entries:
        writer.writerow([path, _record_hash(data), str(len(data))])
    writer.writerow([f"{dist_info}/RECORD", "", ""])
    entries.append((f"{dist_info}/RECORD", record.getvalue().encode(), True))

    parts = [escaped, version]
    if build_tag is not None:
        parts.append(build_tag)
    parts += [python_tag, abi_tag, platform_tag]
    target = dest / ("-".join(parts) + ".whl")
    with zipfile.ZipFile(target, "w") as zf:
        for path, data, compress in entries:
            info = zipfile.ZipInfo(path, date_time=_ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)
    return target


def build_sdist(
    dest: Path,
    name: str,
    version: str,
    *,
    requires_dist: Sequence[str] = (),
    requires_python: str | None = None,
    summary: str = "A tiny test package",
    module_source: str | None = None,
    extra_files: Mapping[str, bytes] = _EMPTY,
    pad_bytes: int = 0,
) -> Path:
    """Write a well-formed ``<escaped>-<version>.tar.gz`` sdist into ``dest``; return its path.

    It holds PKG-INFO, a minimal pyproject.toml (setuptools backend), ``<pkg>/__init__.py``,
    ``extra_files`` and optional padding. It is not meant to be built in tests.
    """
    dest.mkdir(parents=True, exist_ok=True)
    version = str(Version(version))
    escaped = escape_name(name)
    root = f"{escaped}-{version}"
    pkg_info = _core_metadata(
        name,
        version,
        summary=summary,
        requires_dist=requires_dist,
        requires_python=requires_python,
    )
    deps = ", ".join(f'"{req}"' for req in requires_dist)
    pyproject = [
        "[build-system]",
        'requires = ["setuptools>=61"]',
        'build-backend = "setuptools.build_meta"',
        "",
        "[project]",
        f'name = "{name}"',
        f'version = "{version}"',
        f'description = "{summary}"',
        f"dependencies = [{deps}]",
    ]
    if requires_python is not None:
        pyproject.append(f'requires-python = "{requires_python}"')
    members: list[tuple[str, bytes]] = [
        ("PKG-INFO", pkg_info),
        ("pyproject.toml", ("\n".join(pyproject) + "\n").encode()),
        (f"{escaped}/__init__.py", (module_source or _default_module(version)).encode()),
    ]
    members.extend(sorted(extra_files.items()))
    if pad_bytes > 0:
        members.append((f"{escaped}/_padding.bin", _padding(name, version, pad_bytes)))

    target = dest / f"{root}.tar.gz"
    with (
        target.open("wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for path, data in members:
            info = tarfile.TarInfo(f"{root}/{path}")
            info.size = len(data)
            info.mtime = _TAR_MTIME
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return target


def wheel_metadata(path: Path) -> bytes:
    """The ``.dist-info/METADATA`` bytes of the wheel at ``path``."""
    with zipfile.ZipFile(path) as zf:
        candidates = [
            n for n in zf.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA")
        ]
        if len(candidates) != 1:
            raise ValueError(f"{path.name}: expected one .dist-info/METADATA, got {candidates}")
        return zf.read(candidates[0])


def sdist_metadata(path: Path) -> bytes:
    """The top-level ``PKG-INFO`` bytes of the ``.tar.gz`` sdist at ``path``."""
    with tarfile.open(path, mode="r:gz") as tar:
        for member in tar.getmembers():
            if member.name.count("/") == 1 and member.name.endswith("/PKG-INFO"):
                handle = tar.extractfile(member)
                if handle is not None:
                    return handle.read()
    raise ValueError(f"{path.name}: no top-level PKG-INFO")
