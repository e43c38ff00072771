"""``TufTrust``: the :class:`~mirror.trust.base.Trust` seam implemented with python-tuf.

The async half. It decides when to refresh, turns python-tuf's exceptions into the
mirror's (``TrustError`` for anything that means "do not trust this", ``Upstream*`` for
transport trouble), keeps the state that ``status()`` and ``/health`` report, and runs the
blocking half (:mod:`mirror.trust.updater`) in one worker thread, one call at a time.

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
  metadata trusted before, until it expires.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urljoin, urlsplit

import aiohttp
from tuf.api import exceptions as tuf_exceptions
from tuf.api.metadata import TargetFile

from mirror.config import Config, TufConfig, UpstreamConfig
from mirror.errors import (
    IntegrityError,
    MirrorError,
    StorageError,
    TrustError,
    UpstreamError,
    UpstreamNotFound,
    UpstreamTimeout,
    UpstreamTooLarge,
    UpstreamUnavailable,
)
from mirror.log import get_logger
from mirror.metrics import Metrics
from mirror.storage import FileSystemStorage
from mirror.trust.base import TrustedPage, TrustedTarget
from mirror.trust.fetcher import LoopFetcher
from mirror.trust.paths import fill, normalise_hashes, parse_metadata_name
from mirror.trust.publish import Publisher
from mirror.trust.updater import TrustedView, TufCore
from mirror.upstream.client import UpstreamClient

log = get_logger("mirror.trust")

T = TypeVar("T")

METADATA_DIR = "state/tuf/metadata"
JSON_PAGE = "application/vnd.pypi.simple.v1+json"
HTML_PAGE = "text/html"


class TargetMissing(TrustError):
    """The signed metadata has no target for this path, even after a refresh."""


@dataclass(frozen=True)
class TrustSettings:
    """Where the metadata and pages are, and how often to refresh (from ``[tuf]``)."""

    scheme: str
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


def translate(exc: BaseException, what: str) -> MirrorError:
    """python-tuf's exceptions as the mirror's, with a message that says what to do."""
    if isinstance(exc, MirrorError):
        return exc
    error = _translate(exc, what)
    error.__cause__ = exc
    return error


def _translate(exc: BaseException, what: str) -> MirrorError:
    if isinstance(exc, tuf_exceptions.ExpiredMetadataError):
        return TrustError(
            f"{what}: TUF metadata expired ({exc}); a freeze attack or an upstream that "
            "stopped re-signing: new content is refused until fresh metadata arrives"
        )
    if isinstance(exc, tuf_exceptions.BadVersionNumberError):
        return TrustError(
            f"{what}: TUF metadata version check failed ({exc}); a rollback (older metadata "
            "than this mirror already trusts) or an inconsistent upstream: new content is "
            "refused until consistent, newer metadata arrives"
        )
    if isinstance(exc, tuf_exceptions.UnsignedMetadataError):
        return TrustError(
            f"{what}: TUF signatures do not meet the threshold ({exc}); new content is "
            "refused until correctly signed metadata arrives"
        )
    if isinstance(exc, tuf_exceptions.LengthOrHashMismatchError):
        return TrustError(f"{what}: does not match its signed TUF length and hashes ({exc})")
    if isinstance(exc, tuf_exceptions.DownloadLengthMismatchError):
        return TrustError(f"{what}: longer than its signed TUF length ({exc})")
    if isinstance(exc, tuf_exceptions.RepositoryError):
        return TrustError(f"{what}: TUF metadata refused ({type(exc).__name__}: {exc})")
    if isinstance(exc, tuf_exceptions.SlowRetrievalError):
        return UpstreamTimeout(f"{what}: TUF metadata download timed out ({exc})")
    if isinstance(exc, tuf_exceptions.DownloadError):
        return UpstreamUnavailable(f"{what}: TUF metadata could not be downloaded ({exc})")
    if isinstance(exc, OSError):
        return StorageError(f"{what}: cannot use the TUF metadata directory: {exc}")
    return TrustError(f"{what}: {type(exc).__name__}: {exc}")


def _kind(exc: BaseException) -> str:
    cause = exc.__cause__ or exc
    names = {
        tuf_exceptions.ExpiredMetadataError: "expired",
        tuf_exceptions.BadVersionNumberError: "rollback",
        tuf_exceptions.UnsignedMetadataError: "signature",
        tuf_exceptions.LengthOrHashMismatchError: "mismatch",
        tuf_exceptions.DownloadLengthMismatchError: "mismatch",
        tuf_exceptions.RepositoryError: "refused",
        tuf_exceptions.DownloadError: "unreachable",
        UpstreamError: "unreachable",
        StorageError: "storage",
    }
    for cls, name in names.items():
        if isinstance(cause, cls):
            return name
    return "error"


# The last refresh's outcome, for `pypi-mirror status` (a separate process).
STATUS_FILE = "state/tuf/status.json"


class TufTrust:
    """Trust through python-tuf's ngclient (``[tuf] mode = "verify"``)."""

    def __init__(
        self,
        *,
        settings: TrustSettings,
        core: TufCore,
        upstream: UpstreamClient,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
        storage: FileSystemStorage | None = None,
    ) -> None:
        #: Where ``status()`` is recorded after each refresh, for ``pypi-mirror status``.
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
        #: Why the last refresh failed (refused or unreachable); None after a success.
        self._refresh_error: MirrorError | None = None
        #: The last error of any operation, for ``status()``.
        self._last_error: MirrorError | None = None
        self._closed = False

    @classmethod
    async def open(
        cls,
        config: Config,
        storage: FileSystemStorage,
        session: aiohttp.ClientSession,
        metrics: Metrics | None = None,
    ) -> TufTrust:
        """A trust for ``config`` (mode ``verify``) keeping its metadata in ``storage``."""
        root_path = config.tuf.root
        assert root_path is not None, "config validation requires [tuf] root in verify mode"
        loop = asyncio.get_running_loop()
        bootstrap = await loop.run_in_executor(None, Path(root_path).read_bytes)
        settings = TrustSettings.from_config(config.tuf, config.upstream)
        upstream = UpstreamClient(trust_upstream_config(config), session)
        metadata_dir = storage.path(METADATA_DIR)
        core = TufCore(
            metadata_dir=metadata_dir,
            bootstrap=bootstrap,
            metadata_url=settings.metadata_url,
            fetcher=LoopFetcher(loop, upstream, _deadline(config.upstream)),
            publisher=Publisher(storage, metadata_dir),
        )
        return cls(
            settings=settings, core=core, upstream=upstream, metrics=metrics, storage=storage
        )

    @property
    def scheme(self) -> str:
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
        """Refresh now; raises TrustError (refused) or UpstreamError (unreachable)."""
        await self._refresh(self._attempts)
        if self._refresh_error is not None:
            raise self._refresh_error

    async def maybe_refresh(self) -> None:
        """Refresh if due (for ``/tuf/timestamp.json``); failures are only recorded."""
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
                view = await self._call(self.core.refresh)
            except Exception as exc:
                error = translate(exc, "refreshing TUF metadata")
                self._last_error = self._refresh_error = error
                if isinstance(error, TrustError):
                    self._refused = error
                log.error(
                    "tuf_refresh_failed",
                    url=self.settings.metadata_url,
                    kind=_kind(error),
                    error=str(error),
                    refusing=self._refused is not None,
                )
                await self._record_status()
                return
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

    async def _record_status(self) -> None:
        if self.storage is None:
            return
        try:
            data = json.dumps(self.status(), sort_keys=True).encode()
            await self.storage.write_bytes(STATUS_FILE, data)
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
                f"{what}: no trusted TUF metadata yet ({self._refresh_error or 'not loaded'})"
            )
        if view.expires.timestamp() <= self.clock():
            raise TrustError(
                f"{what}: the trusted TUF metadata expired at {_iso(view.expires)} and "
                f"could not be refreshed ({self._refresh_error})"
            )

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
            return await self._call(self.core.lookup, target_path)
        except Exception as exc:
            error = translate(exc, what)
            self._last_error = error
            raise error from exc

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
        try:
            await self._ensure_usable(f"tuf/{name}")
            return await self._call(self.core.delegated_role, role, version)
        except Exception as exc:
            error = translate(exc, f"tuf/{name}")
            log.warning("tuf_metadata_unavailable", name=name, error=str(error))
            return False

    def status(self) -> dict[str, object]:
        view = self._view
        now = self.clock()
        if self._refused is not None:
            state = "refused"
        elif view is None:
            state = "unavailable" if self._last_attempt is not None else "starting"
        elif view.expires.timestamp() <= now:
            state = "expired"
        elif self._refresh_error is not None:
            state = "stale"
        else:
            state = "ok"
        return {
            "mode": "verify",
            "targets": self.settings.scheme,
            "metadata_url": self.settings.metadata_url,
            "state": state,
            "root_version": view.root_version if view else None,
            "timestamp_version": view.timestamp_version if view else None,
            "snapshot_version": view.snapshot_version if view else None,
            "targets_version": view.targets_version if view else None,
            "expires": _iso(view.expires) if view else None,
            "last_refresh": _iso(self._last_success),
            "last_attempt": _iso(self._last_attempt),
            "error_kind": _kind(self._last_error) if self._last_error else None,
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
