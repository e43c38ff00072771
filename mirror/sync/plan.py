"""Where a run's plan comes from: the changelog, or a full comparison of project lists.

- ``changelog``: ``changelog_since_serial(cursor)`` page by page until the upstream serial
  the run started from is reached; each page collapses to one entry per project. Entries
  the previous run could not apply (deferred, failed) are merged in: a newer row for the
  same project supersedes the carried entry; the others follow at the end.
- ``full``: ``list_packages_with_serial()`` (first run, or the filters changed).
- ``root``: the JSON ``/simple/`` root with per-project ``_last-serial``, when the upstream
  has no XML-RPC.

Full and root runs compare the upstream list with ``web/`` (both sorted externally, then
merged), so only projects that are new, newer upstream, gone upstream or now filtered
out get an entry. Entries deferred by the previous run always come first.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from mirror.core.changelog import PlanEntry, collapse, reconcile, supersede
from mirror.core.filters import Filters
from mirror.core.index import PageParseError
from mirror.core.names import is_valid_project_name, normalize
from mirror.core.rootlist import RootHtmlParser, RootJsonParser
from mirror.errors import UpstreamNotFound, UpstreamProtocolError, UpstreamTooLarge
from mirror.log import get_logger
from mirror.project.root import held_projects
from mirror.project.source import UPSTREAM_ACCEPT
from mirror.sorting import ExternalSorter, Record, merge_join
from mirror.storage import Storage
from mirror.sync.xmlrpc import ChangelogClient
from mirror.upstream.client import UpstreamClient, last_serial_of

log = get_logger("mirror.sync.plan")

BATCH = 1000
ROOT_LIMIT = 2 * 1024**3


@dataclass
class PlanTarget:
    """Filled in while the plan streams: the serial the run brings the mirror to."""

    serial: int
    listed: int = 0


async def changelog_plan(
    changelog: ChangelogClient,
    filters: Filters,
    cursor: int,
    upstream_serial: int,
    target: PlanTarget,
    carried: dict[str, PlanEntry],
) -> AsyncIterator[list[PlanEntry]]:
    """``carried``: the previous run's leftovers by project (consumed as they are merged)."""
    async for batch in _changelog_batches(changelog, filters, cursor, upstream_serial, target):
        yield [supersede(carried.pop(e.project), e) if e.project in carried else e for e in batch]
    if carried:
        yield list(carried.values())
        carried.clear()


async def _changelog_batches(
    changelog: ChangelogClient,
    filters: Filters,
    cursor: int,
    upstream_serial: int,
    target: PlanTarget,
) -> AsyncIterator[list[PlanEntry]]:
    since = cursor
    target.serial = max(upstream_serial, cursor)
    while since < upstream_serial:
        events = await changelog.since(since)
        if not events:
            break
        newest = max(event.serial for event in events)
        if newest <= since:
            raise UpstreamProtocolError(
                f"{changelog.url}: changelog_since_serial({since}) answered rows up to "
                f"serial {newest} only"
            )
        target.listed += len(events)
        yield collapse(events, filters.project_allowed)
        since = newest
        target.serial = max(target.serial, newest)


async def xmlrpc_list(changelog: ChangelogClient) -> AsyncIterator[list[Record]]:
    async for batch in changelog.packages_with_serial():
        yield [(normalize(name), serial) for name, serial in batch]


async def root_list(upstream: UpstreamClient, target: PlanTarget) -> AsyncIterator[list[Record]]:
    """The JSON (or HTML) ``/simple/`` root, streamed; sets the target from its serial."""
    url = upstream.url_for("simple/")
    try:
        async with upstream.open_file(
            url, accept=UPSTREAM_ACCEPT, headers={"Accept-Encoding": "gzip"}
        ) as stream:
            header_serial = last_serial_of(stream.response.headers)
            is_json = "json" in stream.response.headers.get("Content-Type", "").lower()
            parser: RootJsonParser | RootHtmlParser = (
                RootJsonParser() if is_json else RootHtmlParser()
            )
            size = 0
            async for chunk in stream.chunks():
                size += len(chunk)
                if size > ROOT_LIMIT:
                    raise UpstreamTooLarge(f"{url} is over {ROOT_LIMIT} bytes")
                entries = parser.feed(chunk)
                if entries:
                    yield [(normalize(e.name), e.last_serial) for e in entries]
            entries = parser.close()
            if entries:
                yield [(normalize(e.name), e.last_serial) for e in entries]
    except PageParseError as exc:
        raise UpstreamProtocolError(f"upstream root page is malformed: {exc}") from exc
    except UpstreamNotFound as exc:
        raise UpstreamProtocolError(f"upstream has no root page at {url}") from exc
    serial = header_serial if header_serial is not None else parser.last_serial
    if serial is None:
        log.warning("upstream_root_without_serial", url=url)
    else:
        target.serial = max(target.serial, serial)
    if not is_json:
        log.warning("upstream_root_without_project_serials", url=url)


async def full_plan(
    storage: Storage,
    upstream_list: AsyncIterator[list[Record]],
    filters: Filters,
    *,
    force: bool,
    target: PlanTarget,
) -> AsyncIterator[list[PlanEntry]]:
    """Compare upstream's list with the mirror's, both sorted externally, and emit the
    entries that need work."""
    tmp = storage.scratch_dir()
    async with ExternalSorter(tmp) as remote, ExternalSorter(tmp) as local:
        async for batch in upstream_list:
            await remote.add([r for r in batch if is_valid_project_name(r[0])])
        target.listed = remote.count
        async for batch in held_projects(storage):
            await local.add(batch)
        out: list[PlanEntry] = []
        async for name, up, held in merge_join(remote.sorted(), local.sorted()):
            entry = reconcile(
                name,
                listed=up is not None,
                upstream_serial=up[1] if up else None,
                held=held is not None,
                local_serial=held[1] if held else None,
                allowed=filters.project_allowed(name),
                force=force,
            )
            if entry is not None:
                out.append(entry)
                if len(out) >= BATCH:
                    yield out
                    out = []
        if out:
            yield out
