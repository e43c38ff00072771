"""The fake upstream (``bench.upstream``, a child process) as the bench process sees it:
start it on a corpus, read what it published, ask it what it was asked."""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.corpus import (
    BIG_PROJECT,
    INSTALL_PREFIX,
    LARGE_PROJECT,
    SMALL_PROJECT,
    CorpusSpec,
)
from bench.load import post_json
from bench.procs import python_module, start_with_manifest, stop_process


@dataclass
class Upstream:
    """The fake PyPI child process and what it published."""

    proc: asyncio.subprocess.Process
    url: str
    projects: dict[str, list[dict[str, Any]]]

    async def gets(self, path: str) -> int:
        """GETs the fake received for ``path`` so far."""
        answer = await post_json(self.url + "_bench/count", {"path": path})
        assert isinstance(answer, dict)
        return int(answer["get"])

    async def stats(self) -> dict[str, int]:
        """Every request received so far, by kind, and ``total``."""
        answer = await post_json(self.url + "_bench/stats", {})
        assert isinstance(answer, dict)
        return {str(k): int(v) for k, v in answer.items()}

    async def stop(self) -> None:
        await stop_process(self.proc)

    @property
    def corpus_projects(self) -> list[str]:
        """The ``bench-proj-NN`` projects (warm pages, mixed warm files)."""
        return sorted(p for p in self.projects if p.startswith("bench-proj-"))

    @property
    def install_projects(self) -> list[str]:
        return sorted(p for p in self.projects if p.startswith(INSTALL_PREFIX))

    def files_of(self, project: str) -> list[dict[str, Any]]:
        return list(self.projects.get(project, []))

    @property
    def pull_projects(self) -> list[str]:
        """Projects the pull-through phases fetch (not the install ones)."""
        return [*self.corpus_projects, SMALL_PROJECT, LARGE_PROJECT, BIG_PROJECT]

    @property
    def sha256_by_filename(self) -> dict[str, str]:
        return {f["filename"]: f["sha256"] for fs in self.projects.values() for f in fs}

    @property
    def file_count(self) -> int:
        return sum(len(fs) for fs in self.projects.values())

    @property
    def file_bytes(self) -> int:
        return sum(int(f["size"]) for fs in self.projects.values() for f in fs)


def diff(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    """Requests between two ``stats()`` snapshots, by kind (kinds with none left out)."""
    out = {k: v - before.get(k, 0) for k, v in after.items()}
    return {k: v for k, v in out.items() if v}


async def start_upstream(
    work: Path, spec: CorpusSpec, name: str = "upstream", timeout_s: float = 300.0
) -> Upstream:
    """Build the corpus (cached in ``work/<name>-corpus`` for the run) and serve it from
    ``python -m bench.upstream``; wait for its manifest."""
    args: list[str] = [
        "--corpus-dir",
        str(work / f"{name}-corpus"),
        "--manifest",
        str(work / f"{name}.json"),
    ]
    flags = {
        "projects": "--projects",
        "wheels_per_project": "--wheels",
        "min_size": "--min-size",
        "max_size": "--max-size",
        "big_size": "--big-size",
        "small_files": "--small-files",
        "small_size": "--small-size",
        "large_size": "--large-size",
        "install_projects": "--install-projects",
        "install_versions": "--install-versions",
    }
    for key, value in asdict(spec).items():
        if key in flags:
            args += [flags[key], str(value)]
    proc, data = await start_with_manifest(
        python_module("bench.upstream", *args),
        work / f"{name}.json",
        work / "logs" / f"{name}.log",
        timeout_s,
    )
    return Upstream(proc, data["url"], data["projects"])
