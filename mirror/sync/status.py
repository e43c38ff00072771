"""``pypi-mirror status``: where the mirror is, read from ``state/sync`` and ``web/``.

Counts (projects, files, bytes) are taken from the web root itself, so they are true
whatever the state says; the upstream serial is asked for (XML-RPC, else the root page's
``X-PyPI-Last-Serial`` header) unless the upstream cannot be reached.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from mirror.config import Config, TufMode
from mirror.core import layout
from mirror.errors import LockHeld, MirrorError, StorageError
from mirror.project.root import held_projects
from mirror.project.source import UPSTREAM_ACCEPT
from mirror.storage import Storage, open_storage
from mirror.sync.journal import RunJournal, RunResult, load_state
from mirror.sync.progress import human_bytes
from mirror.sync.xmlrpc import ChangelogClient, XmlRpcUnavailable
from mirror.upstream.client import UpstreamClient, last_serial_of


async def upstream_serial(config: Config) -> int | None:
    session = UpstreamClient.make_session(config.upstream)
    try:
        upstream = UpstreamClient(config.upstream, session)
        try:
            return await ChangelogClient(upstream).last_serial()
        except XmlRpcUnavailable:
            async with upstream.open_file(
                upstream.url_for("simple/"), accept=UPSTREAM_ACCEPT
            ) as stream:
                return last_serial_of(stream.response.headers)
    finally:
        await session.close()


def _running(storage: Storage) -> bool:
    lock = storage.lock(layout.SYNC_LOCK)
    try:
        lock.acquire()
    except LockHeld:
        return True
    except OSError:
        return False
    lock.release()
    return False


async def holdings(storage: Storage) -> dict[str, int]:
    """Projects with a page, and the files (without ``.metadata``) and bytes held."""
    projects = 0
    async for batch in held_projects(storage):
        projects += len(batch)
    files = 0
    size = 0
    async for info in storage.iter_files(layout.WEB_PACKAGES):
        size += info.size
        if not info.rel.endswith(layout.METADATA_SUFFIX):
            files += 1
    return {"projects": projects, "files": files, "bytes": size}


async def gather_status(config: Config, *, ask_upstream: bool = True) -> dict[str, Any]:
    storage = open_storage(config.storage, create=False)
    if not [names async for names in storage.iter_names(layout.WEB)]:
        raise StorageError(
            f"{storage.describe()} holds no mirror yet (no {layout.WEB}/ directory); "
            "run 'pypi-mirror sync' first"
        )
    state = await load_state(storage)
    held = await holdings(storage)
    projects, files, size = held["projects"], held["files"], held["bytes"]
    status: dict[str, Any] = {
        "storage": storage.describe(),
        "serial": state.serial,
        "cursor": state.cursor,
        "upstream": config.upstream.url,
        "upstream_serial": None,
        "lag": None,
        "projects": projects,
        "files": files,
        "bytes": size,
        "deferred": state.deferred_count,
        "running": _running(storage),
        "last_run": asdict(state.last_run) if state.last_run else None,
    }
    journal = await RunJournal.open(storage) if not status["running"] else None
    if journal is not None:
        status["interrupted_run"] = {"id": journal.meta.id, "entries": journal.meta.count}
    last_run = status["last_run"]
    if last_run and last_run["result"] is RunResult.RUNNING and not status["running"]:
        last_run["result"] = RunResult.INTERRUPTED
    if config.tuf.mode is TufMode.VERIFY:
        status["tuf"] = await _trust_status(storage)
    if ask_upstream:
        try:
            serial = await upstream_serial(config)
        except MirrorError as exc:
            status["upstream_error"] = str(exc)
        else:
            status["upstream_serial"] = serial
            if serial is not None and state.serial is not None:
                status["lag"] = max(serial - state.serial, 0)
    return status


async def _trust_status(storage: Storage) -> dict[str, Any]:
    """What the last TUF refresh (by `serve` or `sync`) recorded."""
    data = await storage.read_bytes(layout.TUF_STATUS, limit=1 << 20)
    if data is None:
        return {"mode": "verify", "state": "unknown", "last_error": "no refresh recorded yet"}
    try:
        recorded: dict[str, Any] = json.loads(data)
    except ValueError:
        return {
            "mode": "verify",
            "state": "unknown",
            "last_error": f"{layout.TUF_STATUS} unreadable",
        }
    return recorded


def _when(timestamp: object) -> str:
    if not isinstance(timestamp, int | float):
        return "-"
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def render_status(status: dict[str, Any]) -> str:
    serial = "none yet" if status["serial"] is None else status["serial"]
    lines = [f"mirror      {status['storage']}"]
    upstream = status["upstream_serial"]
    if upstream is not None:
        lag = "-" if status["lag"] is None else status["lag"]
        lines.append(f"serial      {serial} (upstream {upstream}, lag {lag})")
    else:
        error = status.get("upstream_error", "not asked")
        lines.append(f"serial      {serial} (upstream serial unknown: {error})")
    lines.append(f"projects    {status['projects']}")
    lines.append(f"files       {status['files']} ({human_bytes(status['bytes'])})")
    if status["deferred"]:
        lines.append(f"deferred    {status['deferred']} project(s) carried to the next run")
    if status["running"]:
        lines.append("running     a sync is running now")
    trust = status.get("tuf")
    if trust:
        versions = (
            f"root v{trust.get('root_version')}, timestamp v{trust.get('timestamp_version')}, "
            f"snapshot v{trust.get('snapshot_version')}, expires {trust.get('expires')}"
        )
        lines.append(f"trust       TUF {trust.get('targets', '')}: {trust['state']} ({versions})")
        if trust.get("last_error"):
            lines.append(f"            {trust['last_error']}")
    last = status["last_run"]
    if last:
        lines.append(
            f"last run    {last['result']} ({last['kind']}): started {_when(last['started'])}, "
            f"ended {_when(last['finished'])}; {last['projects']} projects, "
            f"+{last['files']} files, {human_bytes(last['bytes'])}, "
            f"-{last['removed_files']} files"
        )
        if last.get("reason"):
            lines.append(f"            {last['reason']}")
    else:
        lines.append("last run    none")
    with contextlib.suppress(KeyError):
        interrupted = status["interrupted_run"]
        lines.append(
            f"interrupted run {interrupted['id']} ({interrupted['entries']} entries) "
            "resumes with the next sync"
        )
    return "\n".join(lines)
