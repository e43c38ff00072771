"""Files a project's writer may leave unlisted, written down before it touches them.

Before a writer commits a new page for a project it records, per project and per writer
(``state/prune/<project>/<owner>``), every file that may end up listed by no page: the
files the new page drops, and the files it is about to download. After the commit it
deletes those the page does not list and then the record (``settle``). A writer killed in
between leaves its record behind; the next writer of that project, and every start-up
(``replay``), settles the records of writers that are gone — deleting only what the page
then does not list. So no page lists a missing file, and no file outlives its last listing,
whenever a process dies.

An owner is ``<host>.<pid>``: a record of a live process is never touched by another.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable

from mirror.core import layout
from mirror.core.layout import PackagePath, parse_package_path
from mirror.core.rewrite import listed_paths
from mirror.log import get_logger
from mirror.project.pages import PageStore
from mirror.storage import Storage

log = get_logger("mirror.intents")

INTENT_LIMIT = 256 * 1024**2
# A record of another host's writer is taken over only after this long.
FOREIGN_MAX_AGE = 24 * 3600.0


def this_owner() -> str:
    return f"{socket.gethostname()}.{os.getpid()}"


def owner_gone(owner: str, mtime: float, now: float) -> bool:
    host, _, pid = owner.rpartition(".")
    if host != socket.gethostname() or not pid.isdigit():
        return now - mtime >= FOREIGN_MAX_AGE
    if int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class PruneIntents:
    def __init__(self, storage: Storage, pages: PageStore) -> None:
        self.storage = storage
        self.pages = pages
        self.owner = this_owner()
        #: Told the path and size of each file deleted (``cache.usage``); None: no one asks.
        self.on_removed: Callable[[str, int], None] | None = None

    async def record(self, project: str, paths: set[PackagePath]) -> bool:
        """Write down ``paths`` (with whatever dead writers of ``project`` left); False
        when there is nothing to write down (then there is nothing to settle either)."""
        paths = paths | await self._adopt(project)
        if not paths:
            return False
        body = "".join(sorted(p.rel + "\n" for p in paths)).encode()
        await self.storage.write_bytes(layout.prune_intent(project, self.owner), body)
        return True

    async def settle(self, project: str) -> int:
        """Delete this writer's recorded files that the served page does not list."""
        return await self._settle(project, layout.prune_intent(project, self.owner))

    async def replay(self) -> int:
        """Settle every record whose writer is gone (start-up)."""
        removed = 0
        now = time.time()
        async for info in self.storage.iter_files(layout.PRUNE_DIR):
            parts = info.rel.split("/")
            if len(parts) != 4 or not owner_gone(parts[3], info.mtime, now):
                continue
            count = await self._settle(parts[2], info.rel)
            log.info("prune_replayed", project=parts[2], files=count)
            removed += count
        return removed

    async def _adopt(self, project: str) -> set[PackagePath]:
        """The paths of dead writers' records for ``project`` (and of this writer's own,
        left by an update that failed before it settled); those records go."""
        found: set[PackagePath] = set()
        now = time.time()
        async for info in self.storage.iter_files(layout.prune_dir(project)):
            owner = info.rel.rsplit("/", 1)[-1]
            if owner == self.owner or owner_gone(owner, info.mtime, now):
                found |= await self._read(info.rel)
                await self.storage.delete(info.rel)
        return found

    async def _read(self, rel: str) -> set[PackagePath]:
        data = await self.storage.read_bytes(rel, limit=INTENT_LIMIT) or b""
        return {
            path
            for line in data.decode("utf-8", "replace").splitlines()
            if (path := parse_package_path(line.strip())) is not None
        }

    async def _settle(self, project: str, rel: str) -> int:
        paths = await self._read(rel)
        if paths:
            page = await self.pages.served_page(project)
            paths -= listed_paths(page) if page is not None else set()
        removed = 0
        for path in sorted(paths, key=lambda p: p.rel):
            for stored in (path.web, path.web_metadata):
                info = await self.storage.stat(stored) if self.on_removed is not None else None
                if await self.storage.delete(stored):
                    if info is not None and self.on_removed is not None:
                        self.on_removed(stored, info.size)
                    if stored == path.web:
                        removed += 1
                        log.info("file_removed", project=project, file=path.rel)
        await self.storage.delete(rel)
        return removed
