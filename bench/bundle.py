"""``export`` and ``import`` of air-gap bundles at two corpus sizes: bundle size, export
and import seconds, peak RSS (issue 11's closing figures).

    .venv/bin/python -m bench.bundle --work /tmp/bundle-bench --projects 200 --files 5 \\
        --size 200000 --max-size 64MB

Each corpus is published on ``tests.fakepypi`` and synced into a mirror (``[sync] mode =
"mirror"``) in this process — not measured. Then ``pypi-mirror export`` (signed) and
``pypi-mirror import`` into an empty store each run in their own process through
``bench/rusage.py`` (wall seconds, peak RSS from ``wait4``). The small corpus is the test
corpus (``tests.sync_helpers.publish``: three projects, four files).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from mirror.bundle.sign import keygen
from mirror.config import parse_size
from tests.fakepypi import FakePyPI, build_wheel, running_upstream
from tests.sync_helpers import publish, run_sync, sync_config

REPO = Path(__file__).resolve().parent.parent


def _toml(root: Path, upstream: str, key: Path | None, trusted: Path | None) -> str:
    lines = [
        "[storage]",
        f'path = "{root}"',
        "[upstream]",
        f'url = "{upstream}"',
        "file-hosts = []",
        "[sync]",
        'mode = "mirror"',
        "[log]",
        'level = "warning"',
        'format = "json"',
        "[bundle]",
    ]
    if key is not None:
        lines.append(f'signing-key = "{key}"')
    lines.append(f"trusted-keys = {json.dumps([str(trusted)] if trusted else [])}")
    return "\n".join(lines) + "\n"


def _timed(work: Path, name: str, *args: str) -> tuple[float, int]:
    result = work / f"{name}.rusage"
    command = [sys.executable, "-I", "-S", str(REPO / "bench" / "rusage.py"), str(result)]
    command += [sys.executable, "-m", "mirror", *args]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{name} failed: {done.stderr.strip()}")
    _code, seconds, rss = result.read_text().split()
    return float(seconds), int(rss)


def _publish_large(tmp: Path, upstream: FakePyPI, projects: int, files: int, size: int) -> None:
    for p in range(projects):
        name = f"bundle-proj-{p:04d}"
        for f in range(files):
            wheel = build_wheel(tmp / "dist", name, f"1.{f}", pad_bytes=size)
            upstream.add_file(name, wheel)


async def measure(
    work: Path, label: str, projects: int, files: int, size: int, max_size: int | None
) -> dict[str, Any]:
    base = work / label
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    key = base / "bundle.key"
    keygen(key)
    async with running_upstream() as upstream:
        if projects:
            _publish_large(base, upstream, projects, files, size)
        else:
            publish(base, upstream)
        result = await run_sync(sync_config(upstream, base / "a", sync={"mode": "mirror"}))
        assert result.ok, result.reason
        url = upstream.url
    a_conf = base / "a.toml"
    a_conf.write_text(_toml(base / "a", url, key, None))
    b_conf = base / "b.toml"
    b_conf.write_text(
        _toml(base / "b", "http://127.0.0.1:9/", None, key.with_name("bundle.key.pub"))
    )
    output = base / "out" / "bundle"
    output.parent.mkdir()
    args = ["export", "-c", str(a_conf)]
    if max_size is not None:
        args += ["--max-size", str(max_size)]
    export_s, export_rss = _timed(base, "export", *args, str(output))
    volumes = sorted(output.parent.iterdir())
    import_s, import_rss = _timed(base, "import", "import", "-c", str(b_conf), str(output.parent))
    again_s, _ = _timed(base, "again", "import", "-c", str(b_conf), str(output.parent))
    stored = sum(
        p.stat().st_size for p in (base / "a" / "web" / "packages").rglob("*") if p.is_file()
    )
    return {
        "corpus": label,
        "files": sum(1 for p in (base / "a" / "web" / "packages").rglob("*") if p.is_file()),
        "stored_bytes": stored,
        "bundle_bytes": sum(p.stat().st_size for p in volumes),
        "volumes": len(volumes),
        "export_s": round(export_s, 2),
        "export_peak_rss_mb": round(export_rss / 1e6, 1),
        "import_s": round(import_s, 2),
        "import_peak_rss_mb": round(import_rss / 1e6, 1),
        "import_again_s": round(again_s, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/bundle-bench"))
    parser.add_argument("--projects", type=int, default=200, help="projects of the large corpus")
    parser.add_argument("--files", type=int, default=5, help="wheels per project")
    parser.add_argument("--size", type=int, default=200_000, help="bytes per wheel (padding)")
    parser.add_argument("--max-size", type=parse_size, default=None, help="volume size")
    opts = parser.parse_args()
    rows = [
        asyncio.run(measure(opts.work, "test", 0, 0, 0, None)),
        asyncio.run(
            measure(opts.work, "large", opts.projects, opts.files, opts.size, opts.max_size)
        ),
    ]
    for row in rows:
        print(json.dumps(row))


if __name__ == "__main__":
    main()
