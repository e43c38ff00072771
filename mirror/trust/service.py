"""``TufTrust``: the :class:`~mirror.trust.base.Trust` seam implemented with python-tuf.

The async half. It decides when to refresh, turns python-tuf's exceptions into the
mirror's (:mod:`mirror.trust.translate`: ``TrustError`` for anything that means "do not
trust this", ``Upstream*`` for transport trouble), keeps the state that ``status()`` and
``/health`` report, runs the blocking half (:mod:`mirror.trust.updater`) in one worker
thread, one call at a time, and writes what it verified to the store
(:mod:`mirror.trust.publish`).

Refresh policy:

* top-level metadata is refreshed when ``refresh-interval`` seconds passed since the last
  attempt, when the trusted metadata expired, and once when a target is missing (a new
  file may be newer than our snapshot); the missing target is an error only if it is
  still missing after that refresh;
* expired timestamp/snapshot/targets (freeze), a version lower than the trusted one
  (rollback), a bad signature or an unmet threshold: the refresh is refused, new content
  is refused with ``TrustError`` until a later refresh succeeds, and what was verified
  before stays served (it is in storage and never re-checked against the refusal);
* the upstream being unreachable is not a refusal: targets keep being answered from the
  metadata trusted before, until it expires;
* an exception of an unknown type (a bug) is no verdict on the metadata either: it
  propagates to the caller with its traceback, the state becomes ``stale`` (or
  ``unavailable``), and the next refresh that works clears it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import json
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urljoin, urlsplit

import aiohttp
from tuf.api import exceptions as tuf_exceptions
from tuf.api.metadata import TargetFile

from mirror.config import Config, TufConfig, TufMode, TufTargets, UpstreamConfig
from mirror.core import layout
from mirror.errors import (
    IntegrityError,
    MirrorError,
    StorageError,
    TrustError,
    UpstreamError,
    UpstreamNotFound,
    UpstreamTooLarge,
    UpstreamUnavailable,
)
from mirror.log import get_logger
from mirror.metrics import Metrics
from mirror.storage import Storage
from mirror.trust.base import TrustedPage, TrustedTarget, TrustState
from mirror.trust.fetcher import LoopFetcher
from mirror.trust.paths import fill, normalise_hashes, parse_metadata_name
from mirror.trust.publish import prune, publish
from mirror.trust.translate import KNOWN_ERRORS, error_kind, map_errors, translate
from mirror.trust.updater import TrustedView, TufCore
from mirror.upstream.client import UpstreamClient

log = get_logger("mirror.trust")

T = TypeVar("T")

JSON_PAGE = "application/vnd.pypi.simple.v1+json"
HTML_PAGE = "text/html"


class TargetMissing(TrustError):
    """The signed metadata has no target for this path, even after a refresh."""


@dataclass(frozen=True)
class TrustSettings:
    """Where the metadata and pages are, and how often to refresh (from ``[tuf]``)."""

    scheme: TufTargets
    metadata_url: str
    index_url: str
    index_target: str
    index_page: str
    refresh_interval: float

    @classmethod
    def from_config(cls, tuf: TufConfig, upstream: UpstreamConfig) -> TrustSettings:
        return cls(
            scheme=tuf.targets,
            metadata_url=metadata_url(tuf, upstream),
            index_url=tuf.index_url or urljoin(upstream.url, "simple/"),
            index_target=tuf.index_target,
            index_page=tuf.index_page,
            refresh_interval=float(tuf.refresh_interval),
        )


def metadata_url(tuf: TufConfig, upstream: UpstreamConfig) -> str:
    """``[tuf] metadata-url``, or ``<upstream url>tuf/``."""
    return tuf.metadata_url or urljoin(upstream.url, "tuf/")


def trust_upstream_config(config: Config) -> UpstreamConfig:
    """The upstream rules, with the configured metadata and page hosts allowed too."""
    settings = TrustSettings.from_config(config.tuf, config.upstream)
    extra: list[str] = []
    for url in (settings.metadata_url, settings.index_url):
        host = urlsplit(url).netloc.lower()
        if host and host not in config.upstream.allowed_hosts and host not in extra:
            extra.append(host)
    if not extra:
        return config.upstream
    return dataclasses.replace(config.upstream, file_hosts=(*config.upstream.file_hosts, *extra))


def _deadline(upstream: UpstreamConfig) -> float:
    """How long one bridged download may take: every attempt timing out, plus backoff."""
    attempts = upstream.retries + 1
    return attempts * 3 * upstream.timeout + 8.0 * upstream.retries + 5.0


def _iso(moment: float | datetime | None) -> str | None:
    if moment is None:
        return None
    if isinstance(moment, datetime):
        return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return datetime.fromtimestamp(moment, UTC).isoformat().replace("+00:00", "Z")


class TufTrust:
    """Trust through python-tuf's ngclient (``[tuf] mode = "verify"``)."""

    def __init__(
        self,
        *,
        settings: TrustSettings,
        core: TufCore,
        upstream: UpstreamClient,
        storage: Storage,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        #: Where verified metadata is published (``web/tuf/``) and ``status()`` recorded.
        self.storage = storage
        self.settings = settings
        self.core = core
        self.upstream = upstream
        self.metrics = metrics
        self.clock = clock
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="tuf"
        )
        self._refresh_lock = asyncio.Lock()
        self._attempts = 0
        self._view: TrustedView | None = None
        self._last_attempt: float | None = None
        self._last_success: float | None = None
        #: Set while the last refresh was refused (freeze, rollback, signatures).
        self._refused: TrustError | None = None
        #: Why the last refresh failed (refused, unreachable, a bug); None after a success.
        self._refresh_error: Exception | None = None
        #: The last error of any operation, for ``status()``.
        self._last_error: Exception | None = None
        self._closed = False

    @classmethod
    async def open(
        cls,
        config: Config,
        storage: Storage,
        session: aiohttp.ClientSession,
        metrics: Metrics | None = None,
    ) -> TufTrust:
        """A trust for ``config`` (mode ``verify``) keeping its metadata in ``storage``.

        Raises StorageError when the store has no local directory for python-tuf.
        """
        root_path = config.tuf.root
        assert root_path is not None, "config validation requires [tuf] root in verify mode"
        metadata_dir = storage.local_path(layout.TUF_METADATA_DIR)
        if metadata_dir is None:
            raise StorageError(
                f'[tuf] mode = "verify" needs a filesystem store for its metadata directory '
                f"({layout.TUF_METADATA_DIR}); {storage.describe()} has no local files"
            )
        loop = asyncio.get_running_loop()
        bootstrap = await loop.run_in_executor(None, Path(root_path).read_bytes)
        settings = TrustSettings.from_config(config.tuf, config.upstream)
        upstream = UpstreamClient(trust_upstream_config(config), session)
        core = TufCore(
            metadata_dir=metadata_dir,
            lock=storage.lock(layout.TUF_LOCK),
            bootstrap=bootstrap,
            metadata_url=settings.metadata_url,
            fetcher=LoopFetcher(loop, upstream, _deadline(config.upstream)),
        )
        return cls(
            settings=settings, core=core, upstream=upstream, storage=storage, metrics=metrics
        )

    @property
    def scheme(self) -> TufTargets:
        return self.settings.scheme

    async def close(self) -> None:
        """Wait for the worker's current call, then stop it."""
        self._closed = True
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: self._executor.shutdown(wait=True, cancel_futures=True)
        )

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        if self._closed:
            raise UpstreamUnavailable("the mirror is shutting down")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    # -- refresh ----------------------------------------------------------------------------

    async def refresh(self) -> None:
        """Refresh now; raises TrustError (refused) or UpstreamError (unreachable); any
        other exception (a bug) propagates as it is."""
        await self._refresh(self._attempts)
        if isinstance(self._refresh_error, MirrorError):
            raise self._refresh_error

    async def maybe_refresh(self) -> None:
        """Refresh if due (for ``/tuf/timestamp.json``); refusals and transport failures
        are only recorded, any other exception (a bug) propagates."""
        if self._due():
            await self._refresh(self._attempts)

    def _due(self) -> bool:
        now = self.clock()
        if self._view is None or self._view.expires.timestamp() <= now:
            return True
        return self._last_attempt is None or now - self._last_attempt >= (
            self.settings.refresh_interval
        )

    async def _refresh(self, seen_attempts: int) -> None:
        """One refresh at a time; callers that waited for another one take its result."""
        async with self._refresh_lock:
            if self._attempts != seen_attempts:
                return
            self._attempts += 1
            self._last_attempt = self.clock()
            previous = self._view
            try:
                refreshed = await self._call(self.core.refresh)
                await publish(self.storage, refreshed.publications)
            except KNOWN_ERRORS as exc:
                await self._refresh_failed(translate(exc, "refreshing TUF metadata"))
                return
            except Exception as exc:
                # A bug, not a verdict on the metadata: recorded (not as a refusal) for
                # status(), then raised to the caller, which logs it with its traceback.
                self._last_error = self._refresh_error = exc
                await self._record_status()
                raise
            await self._prune(refreshed.keep)
            view = refreshed.view
            self._view = view
            self._refused = self._refresh_error = self._last_error = None
            self._last_success = self._last_attempt
            changed = previous is None or (
                previous.timestamp_version,
                previous.root_version,
            ) != (view.timestamp_version, view.root_version)
            if previous is not None and previous.root_version != view.root_version:
                log.warning("tuf_root_rotated", old=previous.root_version, new=view.root_version)
            (log.info if changed else log.debug)(
                "tuf_refreshed",
                root=view.root_version,
                timestamp=view.timestamp_version,
                snapshot=view.snapshot_version,
                targets=view.targets_version,
                expires=_iso(view.expires),
            )
            await self._record_status()

    async def _refresh_failed(self, error: MirrorError) -> None:
        self._last_error = self._refresh_error = error
        if isinstance(error, TrustError):
            self._refused = error
        log.error(
            "tuf_refresh_failed",
            url=self.settings.metadata_url,
            kind=error_kind(error),
            error=str(error),
            refusing=self._refused is not None,
        )
        # ngclient stores each new root once verified: publish them also when a later
        # step (timestamp, snapshot) failed.
        if not self._closed:
            try:
                await publish(self.storage, await self._call(self.core.roots))
            except KNOWN_ERRORS as exc:
                log.warning("tuf_roots_not_published", error=str(translate(exc, "TUF roots")))
        await self._record_status()

    async def _prune(self, keep: Mapping[str, Collection[int]]) -> None:
        """Housekeeping of ``web/tuf/``: a failure is only logged."""
        try:
            await prune(self.storage, keep)
        except KNOWN_ERRORS as exc:
            log.warning("tuf_prune_failed", error=str(translate(exc, f"pruning {layout.WEB_TUF}")))

    async def _record_status(self) -> None:
        try:
            data = json.dumps(self.status(), sort_keys=True).encode()
            await self.storage.write_bytes(layout.TUF_STATUS, data)
        except (OSError, MirrorError) as exc:
            log.warning("tuf_status_not_recorded", error=str(exc))

    async def _ensure_usable(self, what: str) -> None:
        """Refresh if due; raise unless there is unexpired, unrefused metadata to use."""
        if self._due():
            await self._refresh(self._attempts)
        if self._refused is not None:
            raise TrustError(f"{what}: refused, {self._refused}")
        view = self._view
        if view is None:
            raise UpstreamUnavailable(
                f"{what}: no trusted TUF metadata yet ({self._why_not_refreshed()})"
            )
        if view.expires.timestamp() <= self.clock():
            raise TrustError(
                f"{what}: the trusted TUF metadata expired at {_iso(view.expires)} and "
                f"could not be refreshed ({self._why_not_refreshed()})"
            )

    def _why_not_refreshed(self) -> str:
        error = self._refresh_error
        if error is None:
            return "not loaded"
        if isinstance(error, MirrorError):
            return str(error)
        return f"internal error {type(error).__name__}: {error}; see the log"

    async def _lookup(self, target_path: str, what: str) -> TargetFile | None:
        await self._ensure_usable(what)
        attempts = self._attempts
        info = await self._lookup_once(target_path, what)
        if info is None:
            log.info("tuf_target_missing", target=target_path, action="refreshing once")
            await self._refresh(attempts)
            await self._ensure_usable(what)
            info = await self._lookup_once(target_path, what)
        return info

    async def _lookup_once(self, target_path: str, what: str) -> TargetFile | None:
        try:
            with map_errors(what):
                found = await self._call(self.core.lookup, target_path)
                await publish(self.storage, found.publications)
        except MirrorError as error:
            self._last_error = error
            raise
        return found.info

    # -- the Trust seam ---------------------------------------------------------------------

    async def file_target(self, rel: str) -> TrustedTarget:
        what = f"packages/{rel}"
        info = await self._lookup(rel, what)
        if info is None:
            raise TargetMissing(
                f"{what}: no signed TUF target for it in snapshot "
                f"v{self._view.snapshot_version if self._view else '?'} (after a refresh); "
                "the upstream did not sign this file, or someone added it on the way"
            )
        try:
            hashes = normalise_hashes(info.hashes)
        except ValueError as exc:
            raise TrustError(f"{what}: its signed TUF target is unusable: {exc}") from exc
        return TrustedTarget(length=info.length, hashes=hashes)

    async def index_page(self, project: str) -> TrustedPage:
        target_path = fill(self.settings.index_target, name=project)
        what = f"simple/{project}/ (TUF target {target_path!r})"
        info = await self._lookup(target_path, what)
        if info is None:
            raise UpstreamNotFound(f"simple/{project}/ (no signed TUF target {target_path!r})")
        if not info.hashes:
            raise TrustError(f"{what}: its signed TUF target lists no hashes")
        digest = next(iter(info.hashes.values()))
        url = urljoin(
            self.settings.index_url,
            fill(self.settings.index_page, name=project, hash=digest),
        )
        try:
            response = await self.upstream.get_page(url, accept="*/*", limit=info.length)
        except UpstreamTooLarge as exc:
            raise self._page_failure(project, url, info, exc) from exc
        except UpstreamNotFound as exc:
            raise UpstreamUnavailable(
                f"{url}: the upstream signed a page for {project!r} but does not serve it "
                "(404); retry later"
            ) from exc
        try:
            info.verify_length_and_hashes(response.body)
        except tuf_exceptions.LengthOrHashMismatchError as exc:
            raise self._page_failure(project, url, info, exc) from exc
        content_type = JSON_PAGE if url.endswith(".json") else HTML_PAGE
        return TrustedPage(body=response.body, content_type=content_type, url=url)

    def _page_failure(
        self, project: str, url: str, info: TargetFile, exc: Exception
    ) -> IntegrityError:
        error = TrustError(
            f"simple/{project}/: the page at {url} does not match its signed TUF target "
            f"({exc}); refusing it"
        )
        if self.metrics is not None:
            self.metrics.integrity_failures.labels("TrustError").inc()
        log.error(
            "integrity_failure",
            project=project,
            file=info.path,
            url=url,
            error=str(error),
            expected={"length": info.length, **info.hashes},
        )
        return error

    async def ensure_metadata(self, name: str) -> bool:
        """Make ``web/tuf/<name>`` (a delegated role's current version) available."""
        parsed = parse_metadata_name(name)
        if parsed is None or parsed[0] is None or parsed[1] in ("root", "timestamp"):
            return False
        version, role = parsed
        if role in ("snapshot", "targets"):
            return False  # published by every refresh; other versions are not held
        what = f"tuf/{name}"
        try:
            with map_errors(what):
                await self._ensure_usable(what)
                publications = await self._call(self.core.delegated_role, role, version)
                if publications is None:
                    return False
                await publish(self.storage, publications)
        except MirrorError as error:
            log.warning("tuf_metadata_unavailable", name=name, error=str(error))
            return False
        return True

    def state(self) -> TrustState:
        """How far the trusted metadata can be used now (``status()["state"]``)."""
        view = self._view
        if self._refused is not None:
            return TrustState.REFUSED
        if view is None:
            return TrustState.STARTING if self._last_attempt is None else TrustState.UNAVAILABLE
        if view.expires.timestamp() <= self.clock():
            return TrustState.EXPIRED
        if self._refresh_error is not None:
            return TrustState.STALE
        return TrustState.OK

    def status(self) -> dict[str, object]:
        view = self._view
        return {
            "mode": TufMode.VERIFY.value,
            "targets": self.settings.scheme.value,
            "metadata_url": self.settings.metadata_url,
            "state": self.state().value,
            "root_version": view.root_version if view else None,
            "timestamp_version": view.timestamp_version if view else None,
            "snapshot_version": view.snapshot_version if view else None,
            "targets_version": view.targets_version if view else None,
            "expires": _iso(view.expires) if view else None,
            "last_refresh": _iso(self._last_success),
            "last_attempt": _iso(self._last_attempt),
            "error_kind": error_kind(self._last_error) if self._last_error else None,
            "last_error": str(self._last_error) if self._last_error else None,
        }


async def probe_metadata(config: Config) -> str | None:
    """Why ``serve`` must not start in ``verify`` mode, or None: the upstream's
    ``timestamp.json`` must be reachable (it is what every refresh starts with)."""
    settings = TrustSettings.from_config(config.tuf, config.upstream)
    upstream_config = trust_upstream_config(config)
    url = urljoin(settings.metadata_url, "timestamp.json")
    session = UpstreamClient.make_session(upstream_config)
    try:
        client = UpstreamClient(upstream_config, session)
        await client.get_page(url, accept="application/json", limit=16384 * 4)
    except UpstreamError as exc:
        return (
            f'[tuf] mode = "verify" but the TUF metadata is unreachable: {exc}; '
            f"check [tuf] metadata-url ({settings.metadata_url}) or the network, "
            'or set [tuf] mode = "off"'
        )
    finally:
        await session.close()
    return None
