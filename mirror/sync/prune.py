"""Removing what upstream (or the filters) no longer lists, without ever losing track.

Before a project's new page is committed, the files its current web page lists but the new
one does not are written to an intent file (``state/sync/prune/<project>``); after the
commit they are deleted and the intent file goes. A run killed in between replays the
intent files at its next start, deleting only what the project's page no longer lists. So
no page ever lists a file that is gone, and no file outlives its last listing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os

from mirror.cache.pages import PageCache
from mirror.core import layout
from mirror.core.index import PageParseError, parse_project_json
from mirror.core.layout import PackagePath, parse_package_path
from mirror.core.model import ProjectPage
from mirror.core.rewrite import PAGE_TO_PACKAGES
from mirror.log import get_logger
from mirror.storage import FileSystemStorage

log = get_logger("mirror.sync.prune")

PRUNE_DIR = "state/sync/prune"


def listed_paths(page: ProjectPage) -> set[PackagePath]:
    """The package paths a page the mirror rendered links to."""
    found: set[PackagePath] = set()
    for file in page.files:
        url = file.url.split("#", 1)[0]
        for prefix in (PAGE_TO_PACKAGES, "/packages/"):
            if url.startswith(prefix):
                path = parse_package_path(url[len(prefix) :])
                if path is not None:
                    found.add(path)
                break
    return found


def json_meta(project: str) -> str:
    """Where ``JsonApiCache`` keeps the freshness record of ``pypi/<project>/json``."""
    return "state/" + layout.json_api(project).removeprefix("web/") + ".meta"


class Pruner:
    def __init__(self, storage: FileSystemStorage, pages: PageCache) -> None:
        self.storage = storage
        self.pages = pages

    async def web_listed(self, project: str) -> set[PackagePath]:
        data = await self.storage.read_bytes(layout.simple_page(project, "index.v1_json"))
        if data is None:
            return set()
        try:
            return listed_paths(parse_project_json(data))
        except PageParseError as exc:
            log.warning("web_page_unreadable", project=project, error=str(exc))
            return set()

    def _intent(self, project: str) -> str:
        return f"{PRUNE_DIR}/{project}"

    async def intend(self, project: str, paths: set[PackagePath]) -> None:
        if paths:
            body = "".join(sorted(p.rel + "\n" for p in paths)).encode()
            await self.storage.write_bytes(self._intent(project), body)

    async def execute(self, project: str, paths: set[PackagePath]) -> int:
        """Delete ``paths`` (and their ``.metadata``), then the intent record."""
        removed = 0
        for path in sorted(paths, key=lambda p: p.rel):
            if await self.storage.delete(path.web):
                removed += 1
                log.info("file_removed", project=project, file=path.rel)
            await self.storage.delete(path.web_metadata)
            await self._rmdir(path.web.rsplit("/", 1)[0])
        await self.storage.delete(self._intent(project))
        return removed

    async def holds(self, project: str) -> bool:
        """Does the mirror hold anything of ``project`` (pages or JSON)?"""
        for rel in (
            layout.simple_page(project, "index.v1_json"),
            layout.state_page(project),
            layout.json_api(project),
        ):
            if await self.storage.exists(rel):
                return True
        return False

    async def remove_project(self, project: str) -> int:
        """Everything the mirror holds of ``project``: pages, JSON, files."""
        if not await self.holds(project):
            return 0
        paths = await self.web_listed(project)
        await self.intend(project, paths)
        await self.pages.forget(project)
        await self.storage.delete(layout.state_negative(project))
        await self.storage.delete(json_meta(project))
        async for info in self.storage.iter_files(f"web/pypi/{project}"):
            await self.storage.delete(info.rel)
        async for info in self.storage.iter_files(f"state/pypi/{project}"):
            await self.storage.delete(info.rel)
        removed = await self.execute(project, paths)
        for directory in (f"web/simple/{project}", f"web/pypi/{project}", f"state/pypi/{project}"):
            await self._rmtree_empty(directory)
        return removed

    async def replay(self) -> int:
        """Finish the removals a killed run left half done."""
        removed = 0
        async for info in self.storage.iter_files(PRUNE_DIR):
            project = info.rel.rsplit("/", 1)[-1]
            data = await self.storage.read_bytes(info.rel, limit=64 * 1024**2) or b""
            paths = {
                p
                for line in data.decode("utf-8", "replace").splitlines()
                if (p := parse_package_path(line.strip())) is not None
            }
            still = await self.web_listed(project)
            removed += await self.execute(project, paths - still)
            log.info("prune_replayed", project=project, files=len(paths - still))
        return removed

    async def _rmdir(self, rel: str) -> None:
        path = self.storage.path(rel)
        with contextlib.suppress(OSError):
            await asyncio.get_running_loop().run_in_executor(None, os.rmdir, path)

    async def _rmtree_empty(self, rel: str) -> None:
        """Remove ``rel`` and its subdirectories if they hold no files."""
        base = self.storage.path(rel)

        def sweep() -> None:
            for root, _dirs, _files in sorted(os.walk(base), reverse=True):
                with contextlib.suppress(OSError):
                    os.rmdir(root)

        await asyncio.get_running_loop().run_in_executor(None, sweep)
