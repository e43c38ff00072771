"""Cold installs: ``pip install`` and ``uv pip install`` of the corpus's 20 ``bench-inst-NN``
projects (which depend on one another) into a fresh venv, three ways — straight from the
fake upstream, through ours with an empty cache, through proxpi with an empty cache.

- pip: ``python -m venv TARGET`` (with the pip that a fresh venv gets: ``ensurepip``'s),
  then, timed, ``TARGET/bin/python -m pip install --isolated --no-cache-dir
  --disable-pip-version-check --index-url URL <20 names>``;
- uv: ``uv venv`` from the project's .venv (untimed), then, timed, ``uv pip install
  --no-config --no-cache --python TARGET/bin/python --index-url URL <20 names>``.

Both run with this machine's pip and uv settings removed from the environment
(``PIP_CONFIG_FILE=/dev/null``, no ``PIP_*``/``UV_*`` variables, no proxies), so only the
index named can satisfy them. A proxy is started anew (empty cache) for every install and
is not part of the time; each (way, tool) runs ``repeat`` times, interleaved, and the
fastest is reported with all times kept. An install counts only when it exited 0 and all 20
projects are in the venv.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.fake import Upstream
from bench.procs import clean_env, command_output, run_measured
from bench.servers import Server, start_ours, start_proxpi

UV = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
WAYS = ("upstream", "ours", "proxpi")
TOOLS = ("pip", "uv")


@dataclass(frozen=True)
class InstallOptions:
    ways: tuple[str, ...]
    repeat: int
    proxpi_threads: int
    timeout_s: float
    work: Path


def pip_version() -> str:
    """The pip a fresh venv gets (ensurepip's bundled wheel)."""
    import ensurepip

    return str(ensurepip.version())


def uv_version() -> str:
    return command_output([UV, "--version"]).removeprefix("uv ") if UV else ""


async def _prepare(tool: str, target: Path, log: Path) -> None:
    """A fresh venv at ``target`` (untimed)."""
    if tool == "pip":
        argv = [sys.executable, "-m", "venv", str(target)]
    else:
        assert UV is not None
        argv = [UV, "venv", "--no-config", "--no-cache", "--python", sys.executable, str(target)]
    done = await run_measured(argv, log, env=clean_env(), timeout_s=120)
    if done.code != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {done.code}: {done.tail()}")


def _installed(target: Path, projects: list[str]) -> int:
    """How many of ``projects`` have a .dist-info in the venv."""
    wanted = {p.replace("-", "_") for p in projects}
    found = {
        d.name.split("-", 1)[0]
        for d in target.glob("lib/python*/site-packages/*.dist-info")
        if d.is_dir()
    }
    return len(wanted & found)


async def install_once(
    tool: str, index_url: str, projects: list[str], target: Path, opts: InstallOptions
) -> dict[str, Any]:
    """One timed install into a new venv at ``target``."""
    logs = opts.work / "logs"
    await _prepare(tool, target, logs / f"{target.name}-venv.log")
    python = target / "bin" / "python"
    if tool == "pip":
        argv = [
            str(python), "-m", "pip", "install",
            "--isolated", "--no-cache-dir", "--disable-pip-version-check",
            "--no-input", "--progress-bar", "off",
            "--index-url", index_url,
            *projects,
        ]  # fmt: skip
    else:
        assert UV is not None
        argv = [
            UV, "pip", "install",
            "--no-config", "--no-cache",
            "--python", str(python),
            "--index-url", index_url,
            *projects,
        ]  # fmt: skip
    done = await run_measured(
        argv, logs / f"{target.name}.log", env=clean_env(), timeout_s=opts.timeout_s
    )
    installed = _installed(target, projects)
    ok = done.code == 0 and not done.timed_out and installed == len(projects)
    out: dict[str, Any] = {
        "seconds": round(done.seconds, 3),
        "exit": done.code,
        "installed": installed,
        "ok": ok,
        "client_peak_rss": done.peak_rss,
    }
    if not ok:
        out["tail"] = done.tail(8)
    shutil.rmtree(target, ignore_errors=True)
    return out


async def _through(
    start: Callable[[], Awaitable[Server]] | None,
    upstream: Upstream,
    run: Callable[[str], Awaitable[dict[str, Any]]],
) -> dict[str, Any]:
    """``run`` with the index URL of a freshly started proxy (or of the upstream)."""
    if start is None:
        return await run(upstream.url + "simple/")
    server = await start()
    try:
        return await run(server.index_url)
    finally:
        await server.stop()


async def install_phase(upstream: Upstream, opts: InstallOptions) -> dict[str, Any]:
    """{way: {tool: {"seconds": best, "all": [...], ...}}}."""
    projects = upstream.install_projects
    results: dict[str, dict[str, Any]] = {w: {} for w in opts.ways}
    if not projects:
        return {w: {"error": "the corpus has no install projects"} for w in opts.ways}
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    serial = 0

    def starter(way: str) -> Callable[[], Awaitable[Server]] | None:
        nonlocal serial
        serial += 1
        name = f"install-{way}-{serial}"
        if way == "ours":
            data = opts.work / f"{name}-data"
            return lambda: start_ours(opts.work, upstream.url, name=name, data=data)
        if way == "proxpi":
            return lambda: start_proxpi(opts.work, upstream.url, opts.proxpi_threads, name=name)
        return None

    for r in range(max(1, opts.repeat)):
        for tool in TOOLS:
            if tool == "uv" and UV is None:
                continue
            for way in opts.ways:
                label = f"{way} {tool} #{r + 1}"
                target = opts.work / f"venv-{way}-{tool}-{r}"

                async def run(url: str, tool: str = tool, target: Path = target) -> dict[str, Any]:
                    return await install_once(tool, url, projects, target, opts)

                try:
                    one = await _through(starter(way), upstream, run)
                except Exception as exc:  # one way failing must not lose the others
                    one = {"ok": False, "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
                runs.setdefault((way, tool), []).append(one)
                state = f"{one['seconds']:.2f}s" if one.get("ok") else f"failed {one}"
                print(f"[bench] install {label}: {state}", flush=True)
    for (way, tool), attempts in runs.items():
        good = [a for a in attempts if a.get("ok")]
        entry: dict[str, Any] = {
            "packages": len(projects),
            "runs": len(attempts),
            "all_seconds": [a.get("seconds") for a in attempts],
        }
        if good:
            best = min(good, key=lambda a: float(a["seconds"]))
            entry.update(seconds=best["seconds"], client_peak_rss=best["client_peak_rss"])
        failed = [a for a in attempts if not a.get("ok")]
        if failed:
            entry["failures"] = len(failed)
            with contextlib.suppress(KeyError):
                entry["first_failure"] = failed[0].get("error") or failed[0]["tail"]
        results[way][tool] = entry
    return results
