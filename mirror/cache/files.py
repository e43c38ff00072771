"""Distribution files in pull-through mode: which project lists a missed file, and what
is the cache's own about files — the files known to be held (so a hit costs one executor
hop) and the files being read (so eviction leaves them alone). Downloading and verifying
is the ``ProjectKeeper``'s (``project.files``).
"""

from __future__ import annotations

import asyncio
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, KeysView
from contextlib import asynccontextmanager
from dataclasses import dataclass

from mirror.cache.pages import PageCache
from mirror.core import layout
from mirror.core.layout import PackagePath
from mirror.core.names import project_candidates_from_filename
from mirror.core.rewrite import MirroredFile
from mirror.errors import UpstreamNotFound
from mirror.log import get_logger
from mirror.project.files import Download
from mirror.storage import storage_failure

log = get_logger("mirror.files")

PRESENT_ENTRIES = 100_000
MAX_CANDIDATES = 3


class ReadHold:
    """``rel`` marked as being read (``FileCache.readers``) until ``release`` (once)."""

    def __init__(self, readers: Counter[str], rel: str) -> None:
        self._readers = readers
        self._held = True
        self.rel = rel
        readers[rel] += 1

    def another(self) -> ReadHold:
        """A hold of its own on the same file (for an answer that outlives a request)."""
        return ReadHold(self._readers, self.rel)

    def release(self) -> None:
        if not self._held:
            return
        self._held = False
        self._readers[self.rel] -= 1
        if self._readers[self.rel] <= 0:
            del self._readers[self.rel]


@dataclass(frozen=True)
class Located:
    project: str
    item: MirroredFile


class FileCache:
    def __init__(self, pages: PageCache) -> None:
        self.pages = pages
        self.keeper = pages.keeper
        self.describe = pages.keeper.storage.describe()
        self.readers: Counter[str] = Counter()
        # Files recently seen on disk: a hit then costs one executor hop (the sendfile's).
        # Eviction forgets what it removes; a file removed behind our back is a 404.
        self._present: OrderedDict[str, None] = OrderedDict()

    def known_present(self, rel: str) -> bool:
        if rel in self._present:
            self._present.move_to_end(rel)
            return True
        return False

    def note_present(self, rel: str) -> None:
        self._present[rel] = None
        self._present.move_to_end(rel)
        while len(self._present) > PRESENT_ENTRIES:
            self._present.popitem(last=False)

    def forget_present(self, rel: str) -> None:
        self._present.pop(rel, None)
        self._present.pop(layout.metadata_rel(rel), None)

    @property
    def downloading(self) -> KeysView[str]:
        return self.keeper.files.downloading

    def hold(self, rel: str) -> ReadHold:
        """Mark ``rel`` as needed by a request from now on (eviction in this process leaves
        it alone) until the hold is released."""
        return ReadHold(self.readers, rel)

    @asynccontextmanager
    async def reading(self, rel: str) -> AsyncIterator[None]:
        """Mark ``rel`` as being read so that eviction leaves it alone."""
        hold = self.hold(rel)
        try:
            yield
        finally:
            hold.release()

    async def locate(self, path: PackagePath) -> Located | None:
        """Which project lists this file, by its filename and the held (or fetched) pages."""
        candidates = project_candidates_from_filename(path.filename)[:MAX_CANDIDATES]
        held = [p for p in candidates if self.pages.known_held(p)]
        if not held:  # none known in memory: ask the store about all of them at once
            present = await asyncio.gather(*(self.keeper.pages.has_page(p) for p in candidates))
            held = [p for p, yes in zip(candidates, present, strict=True) if yes]
        # Held pages first; only the likeliest names at all, so that a made-up filename
        # costs at most MAX_CANDIDATES upstream page requests.
        for project in held + [p for p in candidates if p not in held]:
            try:
                await self.pages.ensure(project)
            except UpstreamNotFound:
                continue
            except OSError as exc:  # the page could not be stored: the held one will do
                error = storage_failure(exc, f"the page of {project}", self.describe)
                if project not in held:
                    raise error from exc
                log.warning("storage_stale_served", what=f"the page of {project}", error=str(error))
            item = await self.keeper.held_file(project, path)
            if item is None and await self.pages.may_refresh_for_unknown_file(project):
                # Perhaps uploaded since the page was fetched: look once more, upstream.
                await self.pages.refresh(project)
                item = await self.keeper.held_file(project, path)
            if item is not None:
                return Located(project, item)
        return None

    def download(self, located: Located) -> Download:
        return self.keeper.download(located.project, located.item)

    async def ensure_metadata(self, located: Located) -> bool:
        """Make ``<file>.metadata`` held: from upstream where offered, else from the wheel."""
        return await self.keeper.ensure_metadata(located.project, located.item) is not None
