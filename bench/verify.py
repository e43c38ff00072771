"""``pypi-mirror verify`` at several store sizes: files/s, peak RSS, CPU/wall, and how they
grow from the small store to the large one (issue 11's closing figures).

    .venv/bin/python -m bench.verify --files 2000,20000,100000 --work /tmp/verify-bench

Each store is generated straight on disk in the mirror's layout (the sync would spend its
time downloading, which is not what is measured here): ``files / FILES_PER_PROJECT``
projects, each page listing ``FILES_PER_PROJECT`` distribution files of 0.5-3 KB, half of
them wheels with a ``.metadata`` their page advertises by sha256. Both page forms and
their gzip siblings are rendered by the mirror's own code (``core.index``). ``verify
--json`` then runs in its own process through ``bench/rusage.py`` (peak RSS from
``wait4``); CPU seconds are the children's rusage. A second measurement hashes
``--big`` files of 4 MB with one and with two threads (``verify.walk.hash_file``), to show
that the hashing threads use both cores (hashlib lets go of the GIL).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from mirror.core.index import render_project_html, render_project_json
from mirror.core.model import DistFile, ProjectPage
from mirror.verify.walk import hash_file

REPO = Path(__file__).resolve().parent.parent
FILES_PER_PROJECT = 10


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def generate(root: Path, files: int, seed: int = 11) -> int:
    """A synced-looking store of ``files`` distribution files; bytes written."""
    rng = random.Random(seed)
    web = root / "web"
    total = 0
    for p in range(files // FILES_PER_PROJECT):
        name = f"proj{p:06d}"
        listed = []
        for f in range(FILES_PER_PROJECT):
            wheel = f % 2 == 0
            filename = f"{name}-1.{f}-py3-none-any.whl" if wheel else f"{name}-1.{f}.tar.gz"
            data = rng.randbytes(rng.randint(500, 3000))
            digest = hashlib.blake2b(data, digest_size=32).hexdigest()
            rel = f"{digest[:2]}/{digest[2:4]}/{digest[4:]}/{filename}"
            _write(web / "packages" / rel, data)
            total += len(data)
            core: bool | dict[str, str] = False
            if wheel:
                metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.{f}\n".encode()
                _write(web / "packages" / f"{rel}.metadata", metadata)
                total += len(metadata)
                core = {"sha256": hashlib.sha256(metadata).hexdigest()}
            listed.append(
                DistFile(
                    filename,
                    f"../../packages/{rel}",
                    {"sha256": hashlib.sha256(data).hexdigest()},
                    core_metadata=core,
                    size=len(data),
                )
            )
        page = ProjectPage(name=name, files=tuple(listed), api_version="1.4", last_serial=p + 1)
        folder = web / "simple" / name
        html = render_project_html(page)
        forms = {"index.v1_json": render_project_json(page), "index.html": html}
        for form, data in forms.items():
            _write(folder / form, data)
            _write(folder / f"{form}.gz", gzip.compress(data, mtime=0))
        os.link(folder / "index.html", folder / "index.v1_html")
        os.link(folder / "index.html.gz", folder / "index.v1_html.gz")
    (root / "state").mkdir(exist_ok=True)
    (root / "tmp").mkdir(exist_ok=True)
    return total


def run_verify(root: Path, work: Path) -> dict[str, Any]:
    config = work / "verify.toml"
    config.write_text(
        f'[storage]\npath = "{root}"\n[sync]\nmode = "mirror"\n[log]\nlevel = "warning"\n'
    )
    result = work / "rusage.txt"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    argv = [sys.executable, "-I", "-S", str(REPO / "bench/rusage.py"), str(result)]
    argv += [sys.executable, "-m", "mirror", "verify", "-c", str(config), "--json"]
    out = subprocess.run(argv, cwd=REPO, capture_output=True, check=False, timeout=3600)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    code, seconds, peak = result.read_text().split()
    report = json.loads(out.stdout)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    wall = float(seconds)
    return {
        "exit": int(code),
        "ok": report["ok"],
        "files": report["files"],
        "hashed_bytes": report["hashed_bytes"],
        "pages": report["pages"],
        "seconds": round(wall, 2),
        "files_per_s": round(report["files"] / wall),
        "peak_rss_mb": round(int(peak) / 1e6, 1),
        "cpu_over_wall": round(cpu / wall, 2),
    }


def hashing_threads(work: Path, count: int) -> dict[str, float]:
    """MB/s hashing ``count`` 4 MB files (sha256 + blake2b) with 1 and 2 threads."""
    folder = work / "big"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"f{i}"
        path.write_bytes(os.urandom(4 * 1024 * 1024))
        paths.append(path)
    figures: dict[str, float] = {}
    for threads in (1, 2):
        started = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda p: hash_file(p, ("sha256", "blake2b_256")), paths))
        seconds = time.perf_counter() - started
        figures[f"threads_{threads}_mb_per_s"] = round(count * 4 * 1.048576 / seconds, 1)
    shutil.rmtree(folder)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", default="2000,20000,100000", help="store sizes, comma-separated")
    parser.add_argument("--work", type=Path, default=Path("/tmp/verify-bench"))
    parser.add_argument("--big", type=int, default=64, help="4 MB files for the thread check")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    for files in (int(n) for n in args.files.split(",")):
        root = args.work / f"store-{files}"
        shutil.rmtree(root, ignore_errors=True)
        started = time.perf_counter()
        size = generate(root, files)
        made = time.perf_counter() - started
        figures = run_verify(root, args.work)
        figures["generated_bytes"] = size
        figures["generate_seconds"] = round(made, 1)
        results[str(files)] = figures
        print(json.dumps({"dist_files": files, **figures}), flush=True)
        shutil.rmtree(root)
    sizes = sorted(results, key=int)
    if len(sizes) > 1:
        small, large = results[sizes[0]], results[sizes[-1]]
        results["growth"] = {
            "files": round(large["files"] / small["files"], 1),
            "seconds": round(large["seconds"] / small["seconds"], 1),
            "peak_rss": round(large["peak_rss_mb"] / small["peak_rss_mb"], 2),
        }
    if args.big:
        results["hashing"] = hashing_threads(args.work, args.big)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
