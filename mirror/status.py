"""``pypi-mirror status``: where the mirror is, as fits its ``[sync] mode``.

- ``mirror``: the sync's report (``sync.status``): serial, upstream serial and lag,
  projects, files and bytes, the last run.
- ``cache`` (pull-through): what the storage holds (projects with pages, files and bytes
  under ``web/packages``, counted by walking it with flat memory), and, from the daemon
  listening on ``[serve] listen`` if one answers within ``DAEMON_TIMEOUT``, its hit rate
  (``/metrics``) and the upstream's state (``/health``: the circuit breaker, the
  changelog follower).

Both name where the configuration came from: the file (or the embedded defaults) and the
environment variables applied, by name.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from mirror.cache.pages import CacheResult
from mirror.config import Config, SyncMode
from mirror.errors import MirrorError
from mirror.storage import Storage, open_storage
from mirror.sync.journal import load_state
from mirror.sync.progress import human_bytes
from mirror.sync.status import gather_status, holdings, render_status

EXIT_OK = 0
EXIT_CONFIG = 2

#: How long the daemon gets to answer ``/health`` and ``/metrics`` (both at once).
DAEMON_TIMEOUT = 1.0
CACHE_RESULTS = "pypi_mirror_cache_results"
#: Lookups answered with what the mirror held, without fetching the content again.
HELD = frozenset(r.value for r in CacheResult if r.from_store)
#: Kinds of lookups as ``/metrics`` labels them, in the order they are shown.
KINDS = {"file": "files", "page": "pages", "json": "JSON API", "root": "root list"}
LABEL = 12  # the width of the label column of the text report


def run_status(config: Config, *, as_json: bool) -> int:
    try:
        status = asyncio.run(gather(config))
    except MirrorError as exc:
        print(f"pypi-mirror: {exc} (configuration: {config.origin})", file=sys.stderr)
        return EXIT_CONFIG
    except OSError as exc:
        print(
            f"pypi-mirror: cannot read storage path {config.storage.path}: "
            f"{exc.strerror or exc}; set [storage] path (configuration: {config.origin})",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    report = json.dumps(status, sort_keys=True) if as_json else render(status)
    password = urlsplit(config.upstream.url).password
    if password:  # an upstream error may quote the URL
        report = report.replace(password, "***")
    print(report)
    return EXIT_OK


def configuration(config: Config) -> dict[str, Any]:
    return {
        "file": None if config.source_path is None else str(config.source_path),
        "source": config.source,
        "environment": list(config.environment),
    }


async def gather(config: Config, *, ask_upstream: bool = True) -> dict[str, Any]:
    """The report as one JSON-able object. ``mode``: what it reports on — a mirror when
    ``[sync] mode = "mirror"`` or a ``sync`` ever ran on the storage (it mirrors whatever
    the mode says), else a pull-through cache."""
    mode = config.sync.mode
    if mode is SyncMode.CACHE and await synced(open_storage(config.storage, create=False)):
        mode = SyncMode.MIRROR
    if mode is SyncMode.MIRROR:
        status = await gather_status(config, ask_upstream=ask_upstream)
    else:
        status = await gather_cache(config)
    status["upstream"] = without_password(config.upstream.url)
    status["mode"] = mode.value
    status["configured_mode"] = config.sync.mode.value
    status["configuration"] = configuration(config)
    return status


def without_password(url: str) -> str:
    """``url`` as it may be shown: a password in it is replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")
    user = netloc[0].partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[2]}"))


async def synced(storage: Storage) -> bool:
    """Whether ``pypi-mirror sync`` ever ran (or runs) on ``storage``."""
    state = await load_state(storage)
    return state.serial is not None or state.last_run is not None


async def gather_cache(config: Config) -> dict[str, Any]:
    """A pull-through cache: what it holds, and what its daemon says."""
    storage = open_storage(config.storage, create=False)
    held, daemon = await asyncio.gather(holdings(storage), ask_daemon(config))
    return {
        "storage": storage.describe(),
        "offline": config.serve.offline,
        **held,
        "daemon": daemon,
    }


def daemon_url(config: Config) -> str | None:
    """Where a daemon run with this configuration answers (None: port 0, unknown)."""
    host, port = config.serve.host, config.serve.port
    if port == 0:
        return None
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # every address: this one
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


async def ask_daemon(config: Config) -> dict[str, Any]:
    """``answering`` and, when it does, its state and hit rate; else ``error`` says why."""
    url = daemon_url(config)
    report: dict[str, Any] = {"listen": config.serve.listen, "url": url, "answering": False}
    if url is None:
        report["error"] = "[serve] listen has port 0: the daemon's port is not known"
        return report
    try:
        async with asyncio.timeout(DAEMON_TIMEOUT), aiohttp.ClientSession() as session:
            health, metrics = await asyncio.gather(
                _get(session, url + "health"), _get(session, url + "metrics")
            )
            if health[0] == HTTPStatus.UNAUTHORIZED:  # [serve] auth-file: /readyz is open
                report.update(await _readiness(session, url))
                return report
    except TimeoutError:
        report["error"] = f"no answer within {DAEMON_TIMEOUT:g} s"
        return report
    except aiohttp.ClientError as exc:
        report["error"] = _reason(exc)
        return report
    state = _json_object(health[1])
    if state is None:
        report["error"] = f"something else does: its /health answered {health[0]}, not as ours"
        return report
    report["answering"] = True
    report["health"] = state.get("status")
    report["serving"] = state.get("mode")
    for key in ("worker", "upstream_breaker", "changelog", "tuf", "cache_bytes"):
        if key in state:
            report[key] = state[key]
    metrics_status, text = metrics
    if metrics_status != HTTPStatus.OK:
        report["metrics_error"] = f"/metrics answered {metrics_status}"
    else:
        report.update(hit_rates(text.decode("utf-8", "replace")))
    return report


async def _readiness(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    """What a daemon that asks for credentials tells without them (``/readyz``)."""
    status, body = await _get(session, url + "readyz")
    ready = _json_object(body)
    report: dict[str, Any] = {
        "answering": True,
        "metrics_error": "it asks for credentials ([serve] auth-file)",
    }
    if ready is None:
        report["health"] = f"unknown (/readyz answered {status})"
    else:
        report["health"] = ready.get("status")
        report["readiness"] = ready.get("checks")
    return report


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(body)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


async def _get(session: aiohttp.ClientSession, url: str) -> tuple[int, bytes]:
    async with session.get(url, allow_redirects=False) as resp:
        return resp.status, await resp.read()


def _reason(exc: aiohttp.ClientError) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        code = exc.os_error.errno
        return os.strerror(code).lower() if code else str(exc.os_error) or "connection failed"
    return str(exc) or type(exc).__name__


def hit_rates(text: str) -> dict[str, Any]:
    """From ``/metrics``: the lookups by kind and result since the daemon started, and
    the share answered with what was held (``None`` before the first lookup)."""
    lookups: dict[str, dict[str, int]] = {}
    try:
        families = list(text_string_to_metric_families(text))
    except ValueError as exc:
        return {"metrics_error": f"/metrics is not Prometheus text: {exc}"}
    for family in families:
        if family.name != CACHE_RESULTS:
            continue
        for sample in family.samples:
            if not sample.name.endswith("_total"):
                continue  # _created
            kind = sample.labels.get("kind", "")
            result = sample.labels.get("result", "")
            by_result = lookups.setdefault(kind, {})
            by_result[result] = by_result.get(result, 0) + int(sample.value)
    every: dict[str, int] = {}
    for results in lookups.values():
        for result, n in results.items():
            every[result] = every.get(result, 0) + n
    return {
        "lookups": lookups,
        "hit_rate": _rate(every),
        "hit_rates": {kind: _rate(results) for kind, results in lookups.items()},
    }


def _rate(results: dict[str, int]) -> float | None:
    count = sum(results.values())
    held = sum(n for result, n in results.items() if result in HELD)
    return held / count if count else None


def _line(label: str, text: str) -> str:
    return f"{label:<{LABEL}}{text}"


def render(status: dict[str, Any]) -> str:
    config = status["configuration"]
    source = config["file"] or config["source"]
    if config["environment"]:
        source += f" + environment {', '.join(config['environment'])}"
    lines = [_line("config", source)]
    if status["mode"] == SyncMode.MIRROR.value:
        how = f'[sync] mode = "{status["configured_mode"]}"'
        if status["configured_mode"] != SyncMode.MIRROR.value:
            how = f"synced by pypi-mirror sync; {how}"
        lines.append(_line("mode", f"mirror ({how})"))
        lines.append(render_status(status))
        return "\n".join(lines)
    lines.append(_line("mode", 'pull-through cache ([sync] mode = "cache")'))
    lines.append(_line("storage", status["storage"]))
    lines.append(
        _line(
            "held",
            f"{_count(status['projects'], 'project')} with pages, "
            f"{_count(status['files'], 'file')} ({human_bytes(status['bytes'])})",
        )
    )
    upstream = status["upstream"] + (" (offline: never contacted)" if status["offline"] else "")
    lines.append(_line("upstream", upstream))
    lines.extend(_render_daemon(status["daemon"]))
    return "\n".join(lines)


def _render_daemon(daemon: dict[str, Any]) -> list[str]:
    if not daemon["answering"]:
        return [_line("daemon", f"none answers on {daemon['listen']} ({daemon['error']})")]
    state = ", ".join(str(daemon[key]) for key in ("health", "serving") if daemon.get(key))
    if daemon.get("worker") is not None:  # each has its own breaker and follower
        state += f" (answered by worker {daemon['worker']})"
    lines = [_line("daemon", f"{daemon['url']}: {state}")]
    if "metrics_error" in daemon:
        lines.append(_line("hit rate", f"unknown: {daemon['metrics_error']}"))
    elif daemon["hit_rate"] is None:
        lines.append(_line("hit rate", "no lookups since the daemon started"))
    else:
        lookups = daemon["lookups"]
        parts = [
            f"{name} {_percent(daemon['hit_rates'][kind])} of {sum(lookups[kind].values())}"
            for kind, name in KINDS.items()
            if daemon["hit_rates"].get(kind) is not None
        ]
        count = sum(sum(results.values()) for results in lookups.values())
        lines.append(
            _line(
                "hit rate",
                f"{_percent(daemon['hit_rate'])} of {count} lookups since the daemon started "
                f"({', '.join(parts)})",
            )
        )
    breaker = daemon.get("upstream_breaker")
    if breaker is not None:
        text = f"{breaker.get('state')} since {breaker.get('since')}"
        if breaker.get("last_error"):
            text += f"; last error: {breaker['last_error']}"
        lines.append(_line("breaker", text))
    changelog = daemon.get("changelog")
    if changelog is not None:
        text = str(changelog.get("state"))
        if changelog.get("interval"):
            text += f" (every {changelog['interval']} s, {changelog.get('rounds', 0)} rounds)"
        if changelog.get("error"):
            text += f": {changelog['error']}"
        lines.append(_line("changelog", text))
    for name, check in (daemon.get("readiness") or {}).items():
        if isinstance(check, dict) and check.get("status") != "ok":
            why = f"{name} {check.get('status')}: {check.get('reason', '')}"
            lines.append(_line("ready", why))
    tuf = daemon.get("tuf")
    if isinstance(tuf, dict) and tuf.get("mode") not in (None, "off"):
        text = f"TUF {tuf.get('targets', '')}: {tuf.get('state')}"
        if tuf.get("last_error"):
            text += f"; {tuf['last_error']}"
        lines.append(_line("trust", text))
    return lines


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _percent(rate: float) -> str:
    return f"{rate:.0%}"
