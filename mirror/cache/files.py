"""Distribution files in pull-through mode: which project lists a missed file, and what
is the cache's own about files — the files known to be held (so a hit costs one executor
hop) and the files being read (so eviction leaves them alone). Downloading and verifying
is the ``ProjectKeeper``'s (``project.files``).
"""

from __future__ import annotations

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
from mirror.project.files import Download

PRESENT_ENTRIES = 100_000
MAX_CANDIDATES = 3


@dataclass(frozen=True)
class Located:
    project: str
    item: MirroredFile


class FileCache:
    def __init__(self, pages: PageCache) -> None:
        self.pages = pages
        self.keeper = pages.keeper
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

    @asynccontextmanager
    async def reading(self, rel: str) -> AsyncIterator[None]:
        """Mark ``rel`` as being read so that eviction leaves it alone."""
        self.readers[rel] += 1
        try:
            yield
        finally:
            self.readers[rel] -= 1
            if self.readers[rel] <= 0:
                del self.readers[rel]

    async def locate(self, path: PackagePath) -> Located | None:
        """Which project lists this file, by its filename and the held (or fetched) pages."""
        candidates = project_candidates_from_filename(path.filename)[:MAX_CANDIDATES]
        held = [p for p in candidates if await self.keeper.pages.has_page(p)]
        # Held pages first; only the likeliest names at all, so that a made-up filename
        # costs at most MAX_CANDIDATES upstream page requests.
        for project in held + [p for p in candidates if p not in held]:
            try:
                await self.pages.ensure(project)
            except UpstreamNotFound:
                continue
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
