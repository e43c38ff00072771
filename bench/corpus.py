"""The benchmark's corpus: deterministic projects of real wheels, the same for every peer.

Sizes and contents derive from names alone (``tests.fakepypi.build_wheel`` pads with seeded
random bytes), so two runs publish byte-identical files.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from tests.fakepypi import build_wheel

#: The project holding the one large file that the single-flight phase asks for.
BIG_PROJECT = "bench-single-flight"


@dataclass(frozen=True)
class CorpusSpec:
    """How many projects and wheels, and how large (bytes)."""

    projects: int = 40
    wheels_per_project: int = 3
    min_size: int = 200_000
    max_size: int = 2_000_000
    big_size: int = 5_000_000


@dataclass(frozen=True)
class Planned:
    """One wheel to build: project, version and padding size."""

    project: str
    version: str
    size: int


def _size(name: str, lo: int, hi: int) -> int:
    digest = hashlib.sha256(name.encode()).digest()
    return lo + int.from_bytes(digest[:8], "big") % (hi - lo + 1)


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
    out.append(Planned(BIG_PROJECT, "1.0", spec.big_size))
    return out


def build(spec: CorpusSpec, dest: Path) -> list[tuple[str, Path]]:
    """Write the corpus's wheels under ``dest``; return (project, wheel path) pairs."""
    return [
        (
            item.project,
            build_wheel(dest / item.project, item.project, item.version, pad_bytes=item.size),
        )
        for item in plan(spec)
    ]
