"""Client authentication: HTTP Basic against ``[serve] auth-file`` (``server.htpasswd``).

Without an auth file nothing here is installed: no middleware, no cost on the hot path.
With one, every route but ``OPEN_PATHS`` needs a user and password from the file; a
missing or wrong one gets 401 with ``WWW-Authenticate`` (pip asks for credentials only
after it, from its keyring or ``.netrc``; uv and pip with credentials in the index URL send
them at once).

bcrypt and argon2id cost 50-250 ms of CPU per check, by design. An install makes a few
hundred requests with the same credentials, so a verified password is remembered for
``VERIFIED_TTL`` seconds, keyed by the user and an HMAC-SHA256 of the password under a key
made at random by each process (the password itself is never kept). A check that misses
runs on a small thread pool of its own (never on the event loop, nor in the default
executor, which does the requests' file I/O), and concurrent requests with the same
credentials share one check. An unknown user is checked against another user's hash all
the same, so that the answer's timing does not tell which names exist.

SIGHUP (``server.lifecycle``) re-reads the file: the new table replaces the old one and
the verified passwords are forgotten; a file that cannot be used leaves the old table in
place (``auth_reload_failed``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import enum
import hmac
import os
import secrets
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from aiohttp import hdrs, web

from mirror.config import Config
from mirror.log import get_logger
from mirror.server.htpasswd import AuthFileError, Entry, Table, load, verify
from mirror.server.lifecycle import LIFECYCLE
from mirror.server.middleware import AUTH_USER, Handler

log = get_logger("mirror.auth")

#: Paths answered without credentials: a load balancer's or orchestrator's probes.
OPEN_PATHS = frozenset({"/healthz", "/readyz"})
REALM = "pypi-mirror"
CHALLENGE = f'Basic realm="{REALM}"'
#: Seconds a verified password is taken as verified again without the hash's cost.
VERIFIED_TTL = 300.0
#: Verified (user, password digest) pairs kept; the oldest go first.
VERIFIED_MAX = 4096
VERIFY_THREADS = max(1, min(4, os.cpu_count() or 1))


class Refusal(enum.Enum):
    """Why a request was answered 401 (``reason`` of ``auth_failed``)."""

    NO_CREDENTIALS = "no credentials"
    MALFORMED_HEADER = "malformed header"
    UNKNOWN_USER = "unknown user"
    WRONG_PASSWORD = "wrong password"  # noqa: S105 - a reason, not a password


_Key = tuple[str, bytes]


def basic_credentials(header: str) -> tuple[str, bytes] | None:
    """User and password of an ``Authorization: Basic`` header; None if it is not one."""
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    raw_user, sep, password = decoded.partition(b":")
    if not sep:
        return None
    try:
        user = raw_user.decode("utf-8")
    except UnicodeDecodeError:
        user = raw_user.decode("latin-1")  # what requests (pip) sends for non-ASCII
    return user, password


class Authenticator:
    """The users of the auth file, and the passwords verified lately."""

    def __init__(self, path: Path, table: Table) -> None:
        self.path = path
        self._table = table
        self._hmac_key = secrets.token_bytes(32)
        self._verified: OrderedDict[_Key, float] = OrderedDict()
        self._checking: dict[_Key, asyncio.Future[bool]] = {}
        self._generation = 0
        self._executor: ThreadPoolExecutor | None = None
        self._reload_lock = asyncio.Lock()
        #: Password hashes checked (each costs 50-250 ms of CPU), and requests let in by a
        #: password verified before: what an install costs.
        self.verifications = 0
        self.cache_hits = 0

    @property
    def users(self) -> int:
        return len(self._table)

    async def authenticate(self, header: str | None) -> str | Refusal:
        """The user the ``Authorization`` header proves to be, or why not."""
        if header is None:
            return Refusal.NO_CREDENTIALS
        credentials = basic_credentials(header)
        if credentials is None:
            return Refusal.MALFORMED_HEADER
        user, password = credentials
        key = (user, hmac.digest(self._hmac_key, password, "sha256"))
        expires = self._verified.get(key)
        if expires is not None:
            if expires > time.monotonic():
                self.cache_hits += 1
                return user
            del self._verified[key]
        entry = self._table.get(user)
        if entry is None:
            decoy = next(iter(self._table.values()), None)
            if decoy is not None:
                await self._check(key, decoy, password)  # the same time as a known user
            return Refusal.UNKNOWN_USER
        return user if await self._check(key, entry, password) else Refusal.WRONG_PASSWORD

    async def _check(self, key: _Key, entry: Entry, password: bytes) -> bool:
        """``verify`` off the event loop, shared by the requests with the same credentials."""
        pending = self._checking.get(key)
        if pending is None:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(VERIFY_THREADS, thread_name_prefix="auth")
            loop = asyncio.get_running_loop()
            pending = loop.run_in_executor(self._executor, verify, entry, password)
            self.verifications += 1
            self._checking[key] = pending
            generation = self._generation

            def settle(done: asyncio.Future[bool]) -> None:
                if self._checking.get(key) is done:
                    del self._checking[key]
                verified = not done.cancelled() and done.exception() is None and done.result()
                # Only a user's own hash, and only if the table is still the one checked.
                if verified and entry.user == key[0] and generation == self._generation:
                    self._remember(key)

            pending.add_done_callback(settle)
        # A client that goes away does not cancel the check the others wait on.
        return await asyncio.shield(pending)

    def _remember(self, key: _Key) -> None:
        self._verified[key] = time.monotonic() + VERIFIED_TTL
        self._verified.move_to_end(key)
        while len(self._verified) > VERIFIED_MAX:
            self._verified.popitem(last=False)

    async def reload(self) -> None:
        """Read the file again (SIGHUP): a good file replaces the table and forgets the
        verified passwords; a bad one is logged and the table stays."""
        async with self._reload_lock:
            try:
                table = await asyncio.to_thread(load, self.path)
            except AuthFileError as exc:
                log.error("auth_reload_failed", error=str(exc), users=len(self._table))
                return
            self._table = table
            self._verified.clear()
            self._checking.clear()
            self._generation += 1
            log.info("auth_reloaded", users=len(table), path=str(self.path))

    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in OPEN_PATHS:
            return await handler(request)
        outcome = await self.authenticate(request.headers.get(hdrs.AUTHORIZATION))
        if isinstance(outcome, Refusal):
            return self._refuse(request, outcome)
        request[AUTH_USER] = outcome
        return await handler(request)

    def _refuse(self, request: web.Request, refusal: Refusal) -> web.Response:
        if refusal is Refusal.NO_CREDENTIALS:  # a client's first try: not a failure yet
            text = "authentication required: give a user name and password (HTTP Basic)"
        else:
            credentials = basic_credentials(request.headers.get(hdrs.AUTHORIZATION, ""))
            log.warning(
                "auth_failed",
                user=credentials[0] if credentials is not None else None,
                remote=request.remote,
                reason=refusal.value,
                method=request.method,
                path=request.path,
            )
            text = (
                "malformed Authorization header: expected HTTP Basic credentials"
                if refusal is Refusal.MALFORMED_HEADER
                else "wrong user name or password"
            )
        return web.Response(
            status=401, text=text + "\n", headers={hdrs.WWW_AUTHENTICATE: CHALLENGE}
        )

    async def close(self, _app: web.Application | None = None) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None


AUTH = web.AppKey("auth", Authenticator)


def install(app: web.Application, config: Config) -> None:
    """With ``[serve] auth-file``: the middleware (after ``request_context``), the reload
    on SIGHUP, the pool's shutdown. Without: nothing. Raises AuthFileError."""
    path = config.serve.auth_file
    if path is None:
        return
    auth = Authenticator(path, load(path))

    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        return await auth.middleware(request, handler)

    app[AUTH] = auth
    app.middlewares.append(authenticate)
    app[LIFECYCLE].reloaders.append(auth.reload)
    app.on_cleanup.append(auth.close)
    log.info("auth_loaded", users=auth.users, path=str(path))
