"""The benchmark's corpora: deterministic projects of real wheels, the same for every peer.

Sizes and contents derive from names alone (``tests.fakepypi.build_wheel`` pads with seeded
random bytes), so two runs publish byte-identical files. One spec describes:

- ``bench-proj-NN``: ``projects`` x ``wheels_per_project`` wheels of ``min_size`` to
  ``max_size`` bytes (the warm page phase asks for these projects' pages, the mixed warm
  file phase for their files);
- ``bench-small-files``: ``small_files`` wheels of ``small_size`` (100 KB) — warm 100 KB;
- ``bench-large-file``: one wheel of ``large_size`` (20 MB) — warm 20 MB;
- ``bench-single-flight``: one wheel of ``big_size`` (5 MB) that only the single-flight
  phase asks for (uncached until then);
- ``bench-inst-NN``: ``install_projects`` installable projects of ``install_versions``
  versions each, which depend on one another (``requires_dist``), for the cold
  ``pip install`` / ``uv pip install`` phase.

A count or size of 0 leaves that group out (the sync corpus is only ``bench-proj-NN`` and
the single-flight file).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from tests.fakepypi import build_wheel

#: The project holding the one large file that the single-flight phase asks for.
BIG_PROJECT = "bench-single-flight"
SMALL_PROJECT = "bench-small-files"
LARGE_PROJECT = "bench-large-file"
INSTALL_PREFIX = "bench-inst-"


@dataclass(frozen=True)
class CorpusSpec:
    """How many projects and wheels, and how large (bytes)."""

    projects: int = 40
    wheels_per_project: int = 3
    min_size: int = 200_000
    max_size: int = 2_000_000
    big_size: int = 5_000_000
    small_files: int = 10
    small_size: int = 100_000
    large_size: int = 20_000_000
    install_projects: int = 20
    install_versions: int = 2
    install_min_size: int = 20_000
    install_max_size: int = 400_000


@dataclass(frozen=True)
class Planned:
    """One wheel to build: project, version, padding size and dependencies."""

    project: str
    version: str
    size: int
    requires: tuple[str, ...] = field(default=())


def _size(name: str, lo: int, hi: int) -> int:
    digest = hashlib.sha256(name.encode()).digest()
    return lo + int.from_bytes(digest[:8], "big") % (hi - lo + 1)


def install_name(i: int) -> str:
    return f"{INSTALL_PREFIX}{i:02d}"


def install_requires(i: int, count: int) -> tuple[str, ...]:
    """``bench-inst-i`` depends on two later projects (an acyclic graph over all of them)."""
    return tuple(f"{install_name(j)}>=1.0" for j in (i + 1, i + 3) if j < count)


def plan(spec: CorpusSpec) -> list[Planned]:
    """Every wheel of the corpus (the single-flight file last)."""
    out = [
        Planned(
            f"bench-proj-{p:02d}",
            f"1.{w}",
            _size(f"bench-proj-{p:02d}=={w}", spec.min_size, spec.max_size),
        )
        for p in range(spec.projects)
        for w in range(spec.wheels_per_project)
    ]
    if spec.small_files and spec.small_size:
        out += [Planned(SMALL_PROJECT, f"1.{n}", spec.small_size) for n in range(spec.small_files)]
    if spec.large_size:
        out.append(Planned(LARGE_PROJECT, "1.0", spec.large_size))
    for i in range(spec.install_projects):
        for v in range(spec.install_versions):
            name = install_name(i)
            out.append(
                Planned(
                    name,
                    f"1.{v}",
                    _size(f"{name}=={v}", spec.install_min_size, spec.install_max_size),
                    install_requires(i, spec.install_projects),
                )
            )
    out.append(Planned(BIG_PROJECT, "1.0", spec.big_size))
    return out


def build(spec: CorpusSpec, dest: Path) -> list[tuple[str, Path]]:
    """Write the corpus's wheels under ``dest``; return (project, wheel path) pairs."""
    return [
        (
            item.project,
            build_wheel(
                dest / item.project,
                item.project,
                item.version,
                pad_bytes=item.size,
                requires_dist=item.requires,
            ),
        )
        for item in plan(spec)
    ]
