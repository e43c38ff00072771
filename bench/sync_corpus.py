"""Sync benchmark: ``pypi-mirror sync`` of a generated corpus from the fake PyPI.

The corpus (``bench.corpus``: N projects of W wheels of seeded sizes, plus one larger
file) is published by ``bench.upstream`` in its own process. Then, each in a fresh
process, as an operator would run them:

1. a first (full) sync into an empty storage root;
2. a second sync with nothing new upstream (the changelog says so: the cron steady state);
3. ``status --json``, to check what the web root holds.

Printed: projects, files, bytes, seconds, throughput and the peak RSS (``ru_maxrss`` from
``wait4``) of each sync process. ``--projects`` at two scales shows that memory does not
grow with the number of projects. Nothing is asserted; traffic stays on 127.0.0.1.

    python -m bench.sync_corpus --projects 300 --wheels 4
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def start_upstream(args: argparse.Namespace, work: Path) -> tuple[subprocess.Popen[bytes], str]:
    manifest = work / "manifest.json"
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "bench.upstream",
            "--corpus-dir", str(work / "corpus"),
            "--manifest", str(manifest),
            "--projects", str(args.projects),
            "--wheels", str(args.wheels),
            "--min-size", str(args.min_size),
            "--max-size", str(args.max_size),
            "--big-size", str(args.big_size),
        ],
        cwd=REPO,
    )  # fmt: skip
    deadline = time.monotonic() + 600
    while not manifest.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("bench: the fake upstream did not start")
        time.sleep(0.1)
    return proc, str(json.loads(manifest.read_text())["url"])


def write_config(work: Path, url: str, root: Path, args: argparse.Namespace) -> Path:
    path = work / f"{root.name}.toml"
    path.write_text(
        "\n".join(
            [
                "[storage]",
                f'path = "{root}"',
                "[upstream]",
                f'url = "{url}"',
                "file-hosts = []",
                "[sync]",
                f"workers = {args.workers}",
                f"file-workers = {args.file_workers}",
                "[log]",
                'level = "warning"',
                'format = "json"',
                "",
            ]
        )
    )
    return path


def run_sync(config: Path) -> tuple[int, float, int]:
    """Exit code, seconds, peak RSS in bytes of one ``pypi-mirror sync`` process."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mirror", "sync", "-c", str(config)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
    )
    _pid, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, seconds, usage.ru_maxrss * 1024


def status(config: Path) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-m", "mirror", "status", "--json", "-c", str(config)],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout
    result: dict[str, object] = json.loads(out)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--projects", type=int, default=300)
    parser.add_argument("--wheels", type=int, default=4, help="wheels per project")
    parser.add_argument("--min-size", type=int, default=2_000)
    parser.add_argument("--max-size", type=int, default=40_000)
    parser.add_argument("--big-size", type=int, default=2_000_000)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--file-workers", type=int, default=4)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sync-bench-") as tmp:
        work = Path(tmp)
        built = time.perf_counter()
        upstream, url = start_upstream(args, work)
        print(f"corpus published in {time.perf_counter() - built:.1f}s at {url}")
        try:
            config = write_config(work, url, work / "mirror", args)
            code, first, first_rss = run_sync(config)
            held = status(config)
            code2, second, second_rss = run_sync(config)
        finally:
            upstream.send_signal(signal.SIGTERM)
            upstream.wait(30)
    files = int(str(held["files"]))
    size = int(str(held["bytes"]))
    print(
        f"full sync:        exit {code}, {held['projects']} projects, {files} files, "
        f"{size / 1e6:.1f} MB in {first:.2f}s "
        f"({files / first:.0f} files/s, {size / 1e6 / first:.1f} MB/s), "
        f"peak RSS {first_rss / 1e6:.1f} MB"
    )
    print(f"no-op resync:     exit {code2} in {second:.2f}s, peak RSS {second_rss / 1e6:.1f} MB")
    print(f"serial {held['serial']} (upstream {held['upstream_serial']}, lag {held['lag']})")
    return 0 if code == code2 == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
