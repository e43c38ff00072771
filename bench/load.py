"""Bounded load generators: N GETs over a list of URLs at a fixed concurrency.

Two implementations with one result type:

- :func:`run_load` — aiohttp in this process. Follows redirects, can check each body's
  sha256; used for the cold and single-flight phases, where correctness matters more than
  the client's own speed.
- :func:`run_wrk` — ``wrk`` (C, ``-t2`` by default) driven by a generated Lua script; used
  for the warm phases when it is installed, because an asyncio client saturates a core
  near 1 GB/s on loopback and would otherwise be the bottleneck that hides the servers'
  differences.

Bodies are never kept (counted, or hashed when asked). Every run stops after ``total``
requests or at its deadline, whichever comes first; the result says how many were done
and which bound stopped it (``bound``: the warm phases are meant to stop on time).
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import shutil
import signal
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from yarl import URL

#: What pip sends for index pages (PEP 691 JSON preferred), and its Accept-Encoding.
PIP_PAGE_HEADERS = {
    "Accept": (
        "application/vnd.pypi.simple.v1+json, "
        "application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01"
    ),
    "Accept-Encoding": "gzip, deflate",
}
FILE_HEADERS = {"Accept-Encoding": "identity"}
WRK = shutil.which("wrk")


@dataclass
class LoadResult:
    """What one load run did: counts, bytes, wall time and per-request latencies."""

    planned: int
    concurrency: int
    tool: str = "aiohttp"
    done: int = 0
    ok: int = 0
    bytes: int = 0
    seconds: float = 0.0
    redirects: int = 0
    bad_digest: int = 0
    timed_out: bool = False
    #: What ended the run: "count" (all requests done) or "time" (the duration passed).
    bound: str = "count"
    threads: int = 1
    statuses: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    #: Percentiles (ms) reported by the tool itself (wrk) instead of ``latencies``.
    reported_ms: dict[float, float] = field(default_factory=dict)

    @property
    def errors(self) -> int:
        return self.done - self.ok

    @property
    def req_per_s(self) -> float:
        return self.done / self.seconds if self.seconds else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.bytes / 1e6 / self.seconds if self.seconds else 0.0

    def percentile_ms(self, q: float) -> float:
        """Latency percentile ``q`` (0..100) in milliseconds (nearest rank)."""
        if q in self.reported_ms:
            return self.reported_ms[q]
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        rank = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))
        return ordered[rank] * 1000

    def summary(self) -> dict[str, object]:
        """The raw numbers, for the JSON report."""
        return {
            "tool": self.tool,
            "planned": self.planned,
            "done": self.done,
            "ok": self.ok,
            "errors": self.errors,
            "concurrency": self.concurrency,
            "seconds": round(self.seconds, 4),
            "bytes": self.bytes,
            "req_per_s": round(self.req_per_s, 2),
            "mb_per_s": round(self.mb_per_s, 2),
            "p50_ms": round(self.percentile_ms(50), 3),
            "p99_ms": round(self.percentile_ms(99), 3),
            "redirects": self.redirects,
            "bad_digest": self.bad_digest,
            "timed_out": self.timed_out,
            "bound": self.bound,
            "threads": self.threads,
            "statuses": dict(self.statuses),
        }


async def run_load(
    urls: Sequence[str],
    *,
    total: int,
    concurrency: int,
    headers: Mapping[str, str],
    deadline_s: float,
    expected_sha256: Mapping[str, str] | None = None,
    request_timeout_s: float = 60.0,
) -> LoadResult:
    """GET ``urls`` in order (cycling) ``total`` times with ``concurrency`` workers.

    With ``expected_sha256`` (url → hex digest), bodies are hashed and compared; a
    mismatch counts as an error. Redirects are followed (and counted), as pip does.
    """
    result = LoadResult(planned=total, concurrency=concurrency)
    if not urls or total <= 0:
        return result
    counter = itertools.count()
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    timeout = aiohttp.ClientTimeout(total=request_timeout_s)
    start = time.perf_counter()
    stop_at = start + deadline_s

    async def worker(session: aiohttp.ClientSession) -> None:
        while True:
            i = next(counter)
            if i >= total:
                return
            if time.perf_counter() > stop_at:
                result.timed_out = True
                result.bound = "time"
                return
            url = urls[i % len(urls)]
            want = expected_sha256.get(url) if expected_sha256 else None
            t0 = time.perf_counter()
            status, size, good = await _fetch(session, url, headers, want, result)
            result.latencies.append(time.perf_counter() - t0)
            result.done += 1
            result.statuses[status] += 1
            result.bytes += size
            if status == "200" and good:
                result.ok += 1

    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, auto_decompress=False
    ) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    result.seconds = time.perf_counter() - start
    return result


async def _fetch(
    session: aiohttp.ClientSession,
    url: str,
    headers: Mapping[str, str],
    want_sha256: str | None,
    result: LoadResult,
) -> tuple[str, int, bool]:
    """One GET: (status or error name, body bytes read, digest matched or not checked)."""
    hasher = hashlib.sha256() if want_sha256 else None
    size = 0
    try:
        async with session.get(url, headers=dict(headers)) as resp:
            result.redirects += len(resp.history)
            while chunk := await resp.content.readany():
                size += len(chunk)
                if hasher is not None:
                    hasher.update(chunk)
            status = str(resp.status)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return type(exc).__name__, size, False
    if hasher is not None and hasher.hexdigest() != want_sha256:
        result.bad_digest += 1
        return status, size, False
    return status, size, True


async def get_json(url: str, headers: Mapping[str, str] | None = None) -> object:
    """One GET decoded as JSON (any content type; gzip handled)."""
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session,
        session.get(url, headers=dict(headers or {})) as resp,
    ):
        resp.raise_for_status()
        return await resp.json(content_type=None)


async def post_json(url: str, payload: object) -> object:
    """One POST of JSON, answer decoded as JSON."""
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session,
        session.post(url, json=payload) as resp,
    ):
        resp.raise_for_status()
        return await resp.json(content_type=None)


_WRK_SCRIPT = r"""
local paths = {%(paths)s}
local headers = {%(headers)s}
local per_thread = %(per_thread)d
local started = 0

-- runs in the main Lua state, once per thread: each thread starts elsewhere in the list
setup = function(thread)
  thread:set("offset", started * 7919)
  started = started + 1
end

local issued = 0
request = function()
  issued = issued + 1
  if issued == per_thread + 1 then
    -- wrk's main thread sleeps for the whole -d; the bench SIGINTs it on this line
    io.write("BENCH_STOP\n")
    io.flush()
    wrk.thread:stop()
  end
  local i = ((issued - 1 + (offset or 0)) %% #paths) + 1
  return wrk.format("GET", paths[i], headers)
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH_JSON {\"requests\": %%d, \"bytes\": %%d, \"duration_us\": %%d, " ..
    "\"connect\": %%d, \"read\": %%d, \"write\": %%d, \"status\": %%d, " ..
    "\"timeout\": %%d, \"p50_us\": %%d, \"p99_us\": %%d}\n",
    summary.requests, summary.bytes, summary.duration, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(99)))
end
"""


def _lua_string(text: str) -> str:
    return json.dumps(text)  # a JSON string literal is a valid Lua string literal here


def wrk_script(
    paths: Sequence[str], headers: Mapping[str, str], total: int, threads: int = 1
) -> str:
    """The Lua script: each of ``threads`` threads cycles ``paths`` (from its own offset)
    and stops after its share of ``total`` requests (the ones still in flight then are not
    counted; the first thread done ends the run); the summary is printed as JSON."""
    return _WRK_SCRIPT % {
        "paths": ", ".join(_lua_string(p) for p in paths),
        "headers": ", ".join(f"[{_lua_string(k)}] = {_lua_string(v)}" for k, v in headers.items()),
        "per_thread": max(1, -(-total // max(1, threads))),
    }


async def run_wrk(
    urls: Sequence[str],
    *,
    total: int,
    concurrency: int,
    headers: Mapping[str, str],
    deadline_s: float,
    script_dir: Path,
    threads: int = 2,
) -> LoadResult:
    """Like :func:`run_load` (no digests, no redirects followed), with ``wrk -t<threads>``,
    for at most ``deadline_s`` seconds (wrk's ``-d``) or ``total`` requests.

    All ``urls`` must share one scheme://host:port. Non-2xx/3xx answers and socket errors
    count as errors.
    """
    threads = max(1, min(threads, concurrency))
    result = LoadResult(planned=total, concurrency=concurrency, tool="wrk", threads=threads)
    if WRK is None:
        raise RuntimeError("wrk is not installed")
    if not urls or total <= 0:
        return result
    bases = {str(URL(u).origin()) for u in urls}
    if len(bases) != 1:
        raise ValueError(f"wrk needs one origin, got {sorted(bases)}")
    paths = [URL(u).raw_path_qs for u in urls]
    script = script_dir / f"wrk-{len(list(script_dir.glob('wrk-*.lua')))}.lua"
    script.write_text(wrk_script(paths, headers, total, threads))
    argv = [
        WRK,
        f"-t{threads}",
        f"-c{concurrency}",
        f"-d{max(1, round(deadline_s))}s",
        "--timeout",
        "30s",
        "-s",
        str(script),
        bases.pop() + "/",
    ]
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        lines = await asyncio.wait_for(_wrk_output(proc), deadline_s + 30)
    except BaseException:  # timed out or cancelled: do not leave wrk running
        if proc.returncode is None:
            proc.kill()
        await asyncio.shield(proc.wait())
        raise
    out = "\n".join(lines)
    line = next(
        (ln for ln in lines if ln.startswith("BENCH_JSON ")),
        None,
    )
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {out}")
    data = json.loads(line.removeprefix("BENCH_JSON "))
    errors = sum(data[k] for k in ("connect", "read", "write", "status", "timeout"))
    result.done = int(data["requests"])
    result.ok = max(0, result.done - errors)
    result.bytes = int(data["bytes"])
    result.seconds = data["duration_us"] / 1e6
    result.bound = "count" if "BENCH_STOP" in lines else "time"
    result.statuses["ok"] = result.ok
    for key in ("connect", "read", "write", "status", "timeout"):
        if data[key]:
            result.statuses[f"wrk_{key}_errors"] = int(data[key])
    result.reported_ms = {50: data["p50_us"] / 1000, 99: data["p99_us"] / 1000}
    return result


async def _wrk_output(proc: asyncio.subprocess.Process) -> list[str]:
    """wrk's output lines; SIGINT it (it is our child) once the script says it is done."""
    assert proc.stdout is not None
    lines = []
    while raw := await proc.stdout.readline():
        line = raw.decode(errors="replace").rstrip("\n")
        if line == "BENCH_STOP" and proc.returncode is None:
            proc.send_signal(signal.SIGINT)
        lines.append(line)
    await proc.wait()
    return lines
