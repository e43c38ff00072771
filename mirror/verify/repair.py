"""What ``verify --repair`` does about each finding, through the one owner of a project's
artefacts (``ProjectKeeper``): whatever it fetches is verified like every download.

- a missing or corrupt file: the corrupt copy is removed, the file fetched again from the
  upstream (its URL from the project's record);
- a ``.metadata`` missing or not matching: removed, made again from the held wheel
  (checked against the digest the page advertises), else fetched from the upstream;
- a broken page: every form rendered again from the form that still parses
  (``index.v1_json``, else ``index.html``), or — when none does, or only ``index.html``
  does and the upstream is reachable — the project fetched again (a full update);
- a JSON API answer listing what its page does not: cut to the page; one without a page:
  removed;
- an unreferenced file, a temp leftover: removed.

Offline (``[serve] offline``, or the upstream unreachable: after ``UNREACHABLE_AFTER``
transport failures in a row nothing more is asked) only what needs no upstream is done,
and the rest is reported as not repaired, with the reason.
"""

from __future__ import annotations

from mirror.core import layout
from mirror.core.layout import PackagePath, PathDigest
from mirror.core.metadata import metadata_source
from mirror.core.model import ProjectPage
from mirror.core.rewrite import MirroredFile, served_path
from mirror.core.verdict import PageVerdict
from mirror.errors import MirrorError, UpstreamError, UpstreamNotFound
from mirror.log import get_logger
from mirror.project.keeper import KeepMode, ProjectKeeper
from mirror.storage import Storage
from mirror.verify.pages import PageCheck
from mirror.verify.report import Finding, Outcome, Report

log = get_logger("mirror.verify")

UNREACHABLE_AFTER = 3


class Repairer:
    def __init__(self, storage: Storage, keeper: ProjectKeeper, report: Report) -> None:
        self.storage = storage
        self.keeper = keeper
        self.report = report
        self._failures = 0

    @property
    def online(self) -> bool:
        return not self.keeper.offline and self._failures < UNREACHABLE_AFTER

    def _why_offline(self) -> str:
        if self.keeper.offline:
            return "offline ([serve] offline = true)"
        return "the upstream is unreachable"

    def _done(self, finding: Finding, how: str) -> None:
        self.report.repaired(finding, Outcome.REPAIRED, how)
        log.info("verify_repaired", kind=finding.kind.value, path=finding.path, how=how)

    def _failed(self, finding: Finding, why: str) -> None:
        self.report.repaired(finding, Outcome.FAILED, why)
        log.warning("verify_not_repaired", kind=finding.kind.value, path=finding.path, why=why)

    def _upstream_failed(self, exc: MirrorError) -> None:
        if isinstance(exc, UpstreamError) and not isinstance(exc, UpstreamNotFound):
            self._failures += 1
        else:
            self._failures = 0

    # -- pages ----------------------------------------------------------------------------

    async def page(self, check: PageCheck, findings: list[Finding]) -> ProjectPage | None:
        """Repair a project's page; the page to walk afterwards (None: none left)."""
        if check.page is not None and not (check.from_html and self.online):
            return await self._render(check, findings, "")
        if not self.online:
            for finding in findings:
                self._failed(finding, f"no form of the page parses and {self._why_offline()}")
            return None
        try:
            result = await self.keeper.update(check.project, mode=KeepMode.FULL)
        except MirrorError as exc:
            self._upstream_failed(exc)
            if check.page is not None:  # the HTML form is still there to render from
                return await self._render(check, findings, f" (fetching it failed: {exc})")
            for finding in findings:
                self._failed(finding, f"fetching the project again failed: {exc}")
            return None
        self._failures = 0
        if result.verdict is PageVerdict.GONE:
            for finding in findings:
                self._done(finding, "the project is gone upstream: removed")
            return None
        page = await self.keeper.pages.served_page(check.project)
        if result.verdict is not PageVerdict.CURRENT or page is None:
            for finding in findings:
                self._failed(finding, f"the upstream page was not usable ({result.reason})")
            return page or check.page
        for finding in findings:
            self._done(finding, "the project fetched again from the upstream")
        return page

    async def _render(self, check: PageCheck, findings: list[Finding], note: str) -> ProjectPage:
        """Every form written again from the one that parses."""
        assert check.page is not None
        await self.keeper.pages.write_page(check.page)
        source = layout.PAGE_HTML if check.from_html else layout.PAGE_V1_JSON
        for finding in findings:
            self._done(finding, f"every form rendered again from {source}{note}")
        return check.page

    async def json_api(self, finding: Finding, page: ProjectPage) -> None:
        assert finding.project is not None
        await self.keeper.json_api.cut(finding.project, page)
        self._done(finding, "cut to its page")

    async def orphan_json(self, finding: Finding) -> None:
        assert finding.project is not None
        await self.storage.delete_tree(layout.json_api_dir(finding.project))
        await self.storage.delete_tree(layout.json_api_meta_dir(finding.project))
        self._done(finding, "removed")

    # -- files ----------------------------------------------------------------------------

    async def corrupt(self, finding: Finding, path: PackagePath | None) -> None:
        await self.storage.delete(finding.path)  # wrong bytes are never served again
        await self._fetch(finding, path, "the corrupt copy removed")

    async def missing(self, finding: Finding, path: PackagePath | None) -> None:
        await self._fetch(finding, path, "")

    async def _fetch(self, finding: Finding, path: PackagePath | None, before: str) -> None:
        lead = f"{before}; " if before else ""
        if path is None or finding.project is None:
            self._failed(finding, f"{lead}not a package path")
            return
        if not self.online:
            self._failed(finding, f"{lead}cannot fetch it: {self._why_offline()}")
            return
        item = await self.keeper.held_file(finding.project, path)
        if item is None:
            self._failed(
                finding, f"{lead}the project's page or record does not say where upstream has it"
            )
            return
        try:
            await self.keeper.files.download(finding.project, item, extract=False).wait()
        except MirrorError as exc:
            self._upstream_failed(exc)
            self._failed(finding, f"{lead}fetching it failed: {exc}")
            return
        self._failures = 0
        self._done(finding, f"{lead}fetched again from the upstream, verified")

    async def metadata(self, finding: Finding, path: PackagePath | None) -> None:
        """A ``.metadata`` that is absent or does not match its page's digest."""
        project = finding.project
        if path is None or project is None:
            self._failed(finding, "not a package path")
            return
        await self.storage.delete(finding.path)
        item = await self._local_item(project, path)
        if item is None:
            self._failed(finding, "removed; its page no longer lists the file")
            return
        # The held wheel first: its METADATA, checked against the page's digest.
        if await self.storage.exists(path.web):
            try:
                sha256 = await self.keeper.files.extract_metadata(project, item, expected=item.file)
            except MirrorError as exc:
                sha256 = None
                log.warning("verify_extract_failed", path=finding.path, error=str(exc))
            if sha256 is not None:
                self._done(finding, "made again from the held wheel, verified")
                return
        if not self.online:
            self._failed(finding, f"removed; cannot fetch it: {self._why_offline()}")
            return
        upstream = await self.keeper.held_file(project, path)
        if upstream is None:
            self._failed(finding, "removed; the project's record does not say where it comes from")
            return
        try:
            sha256 = await self.keeper.ensure_metadata(project, upstream)
        except MirrorError as exc:
            self._upstream_failed(exc)
            self._failed(finding, f"removed; fetching it failed: {exc}")
            return
        if sha256 is None:
            self._failed(finding, "removed; the upstream has none for this file")
            return
        self._done(finding, "fetched again from the upstream, verified")

    async def _local_item(self, project: str, path: PackagePath) -> MirroredFile | None:
        """The file as the served page lists it (no upstream URL needed)."""
        page = await self.keeper.pages.served_page(project)
        if page is None:
            return None
        for file in page.files:
            if served_path(file) == path:
                digest = PathDigest.SHA256 if file.sha256 == path.digest else PathDigest.BLAKE2B_256
                source = metadata_source(file, signed_files_only=False)
                return MirroredFile(file, path, digest, source)
        return None

    # -- the rest -------------------------------------------------------------------------

    async def unreferenced(self, finding: Finding) -> None:
        await self.storage.delete(finding.path)
        self._done(finding, "removed")

    async def leftover(self, finding: Finding) -> None:
        await self.storage.delete(finding.path)
        self._done(finding, "removed")
