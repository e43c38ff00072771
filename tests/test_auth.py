"""Client authentication (``[serve] auth-file``): the file's format and its start-up errors,
HTTP Basic with pip and uv (right, wrong and no credentials), the open probe paths, the
cache of verified passwords, the failed attempt's log line, and SIGHUP in a real ``serve``
(one process, and a supervisor with two workers)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import bcrypt
import pytest
from argon2 import PasswordHasher

from mirror.server.auth import AUTH, Authenticator
from mirror.server.htpasswd import AuthFileError, parse
from mirror.server.keys import METRICS
from mirror.server.middleware import request_context
from tests.conftest import MirrorFactory, RunningMirror, clean_env, free_port
from tests.fakepypi import FakePyPI, build_wheel
from tests.test_e2e_clients import UV, new_venv, run

REPO = Path(__file__).resolve().parent.parent
CHALLENGE = 'Basic realm="pypi-mirror"'


def bcrypt_hash(password: str, rounds: int = 4, prefix: str = "$2b$") -> str:
    """A bcrypt hash (cost 4 unless a test needs a slow one), with the prefix asked for:
    htpasswd writes ``$2y$``, older tools ``$2a$``."""
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds)).decode()
    return prefix + hashed[4:]


def argon2_hash(password: str) -> str:
    return PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash(password)


def write_users(path: Path, *lines: str) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def authenticator(mirror: RunningMirror) -> Authenticator:
    assert mirror.app is not None
    return mirror.app[AUTH]


async def auth_mirror(make_mirror: MirrorFactory, users: Path) -> RunningMirror:
    return await make_mirror({"serve": {"auth-file": str(users)}})


# -- the file ---------------------------------------------------------------------------


def test_the_file_takes_comments_blank_lines_bcrypt_and_argon2id() -> None:
    text = "\n".join(
        [
            "# company cache users",
            "",
            f"alice:{bcrypt_hash('a')}",
            f"  bob:{bcrypt_hash('b', prefix='$2y$')}  ",
            f"carol:{bcrypt_hash('c', prefix='$2a$')}",
            f"dave:{argon2_hash('d')}",
        ]
    )
    table = parse(text, "users")
    assert sorted(table) == ["alice", "bob", "carol", "dave"]
    assert table["bob"].line == 4


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("alice", 'expected "user:hash"'),
        (":" + bcrypt_hash("x"), 'expected "user:hash"'),
        ("alice:", 'expected "user:hash"'),
        ("alice:hunter2-plain-text", "neither bcrypt"),
        ("alice:$apr1$abcdefgh$hunter2hunter2hunter2x", "neither bcrypt"),
        ("alice:{SHA}hunter2hunter2hunter2hunter2=", "neither bcrypt"),
        ("alice:" + bcrypt_hash("x")[:-5], 'bcrypt hash of user "alice" is malformed'),
        ("alice:" + argon2_hash("x").replace("$argon2id$", "$argon2id$v=19$"), "malformed"),
    ],
    # Stable ids: the hashes are salted anew in each process (pytest-xdist compares ids).
    ids=[
        "no-colon",
        "no-user",
        "no-hash",
        "plain-text",
        "apr1",
        "sha",
        "bcrypt-cut",
        "argon2-malformed",
    ],
)
def test_a_bad_line_is_refused_naming_file_and_line_and_the_fix(line: str, expected: str) -> None:
    text = f"# users\nbob:{bcrypt_hash('b')}\n{line}\n"
    with pytest.raises(AuthFileError) as raised:
        parse(text, "/etc/pypi-mirror/users")
    message = str(raised.value)
    assert message.startswith("/etc/pypi-mirror/users:3: "), message
    assert expected in message
    assert "htpasswd -nbB" in message or "remove it" in message  # the fix
    assert "\n" not in message
    secret = line.partition(":")[2]
    assert not secret or secret not in message  # a hash (or a password) is never echoed


def test_a_user_listed_twice_is_refused() -> None:
    text = f"alice:{bcrypt_hash('a')}\n\nalice:{argon2_hash('b')}\n"
    with pytest.raises(
        AuthFileError,
        match=r'^users:3: user "alice" is listed again '
        r"\(first on line 1\); keep one",
    ):
        parse(text, "users")


def serve_config(
    tmp_path: Path, upstream: FakePyPI, users: Path, port: int = 0, extra: str = ""
) -> Path:
    config = tmp_path / "mirror.toml"
    config.write_text(
        f'[storage]\npath = "{tmp_path / "data"}"\n'
        f'[upstream]\nurl = "{upstream.url}"\nfile-hosts = []\n'
        f'[serve]\nlisten = "127.0.0.1:{port}"\nauth-file = "{users}"\n{extra}\n'
        '[sync]\ninterval = 0\n[log]\nformat = "json"\n'
    )
    return config


@pytest.mark.parametrize("problem", ["malformed", "missing"])
async def test_serve_with_a_bad_auth_file_stops_with_one_line(
    problem: str, tmp_path: Path, upstream: FakePyPI
) -> None:
    users = tmp_path / "users"
    if problem == "malformed":
        write_users(users, f"alice:{bcrypt_hash('a')}", "bob:$1$plain-md5-crypt")
    config = serve_config(tmp_path, upstream, users)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mirror", "serve", "-c", str(config),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=clean_env(), cwd=REPO,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    lines = err.decode().strip().splitlines()
    assert proc.returncode == 2, (out, err)
    assert len(lines) == 1, lines
    assert "Traceback" not in err.decode()
    if problem == "malformed":
        assert f"{users}:2: " in lines[0]
        assert "htpasswd -nbB" in lines[0]
    else:
        assert f"cannot read the auth file {users}" in lines[0]
        assert "No such file or directory" in lines[0]


# -- in the app -------------------------------------------------------------------------


async def test_without_an_auth_file_there_is_no_auth_middleware(mirror: RunningMirror) -> None:
    assert mirror.app is not None
    assert list(mirror.app.middlewares) == [request_context]
    assert AUTH not in mirror.app
    status, headers, _ = await mirror.get("/simple/")
    assert status == 200
    assert "WWW-Authenticate" not in headers


async def test_no_wrong_and_right_credentials(tmp_path: Path, make_mirror: MirrorFactory) -> None:
    users = write_users(
        tmp_path / "users", f"alice:{bcrypt_hash('wonderland')}", f"dave:{argon2_hash('pw')}"
    )
    mirror = await auth_mirror(make_mirror, users)
    cases = [
        ({}, "authentication required"),
        (basic("alice", "looking-glass"), "wrong user name or password"),
        (basic("mallory", "wonderland"), "wrong user name or password"),
        ({"Authorization": "Basic !!not-base64!!"}, "malformed Authorization header"),
        ({"Authorization": "Bearer abc"}, "malformed Authorization header"),
    ]
    for path in ("/simple/", "/health", "/metrics", "/packages/aa/bb/cc/x.whl", "/healthz/"):
        for headers, text in cases:
            status, answer, body = await mirror.get(path, headers=headers)
            assert status == 401, (path, headers)
            assert answer["WWW-Authenticate"] == CHALLENGE
            assert body.decode().startswith(text)
            assert body.decode().count("\n") == 1 and body.endswith(b"\n")
            assert answer["X-Request-Id"]
    for user, password in (("alice", "wonderland"), ("dave", "pw")):  # bcrypt, argon2id
        status, _, _ = await mirror.get("/simple/", headers=basic(user, password))
        assert status == 200, user
        status, _, _ = await mirror.get("/health", headers=basic(user, password))
        assert status == 200, user


async def test_the_probe_paths_are_open(tmp_path: Path, make_mirror: MirrorFactory) -> None:
    """/healthz and /readyz answer without credentials (their own status: 200 or 503, or a
    404 where the routes do not exist), never 401."""
    users = write_users(tmp_path / "users", f"alice:{bcrypt_hash('a')}")
    mirror = await auth_mirror(make_mirror, users)
    for path in ("/healthz", "/readyz"):
        status, headers, _ = await mirror.get(path)
        assert status in (200, 503, 404), (path, status)
        assert "WWW-Authenticate" not in headers
    assert authenticator(mirror).verifications == 0


async def test_a_verified_password_is_checked_once_and_misses_share_one_check(
    tmp_path: Path, make_mirror: MirrorFactory
) -> None:
    """Ten requests at once with credentials not seen before: one check of the (slow)
    hash, done off the event loop — requests for the probe paths are answered meanwhile —
    and the next requests are let in without another."""
    users = write_users(tmp_path / "users", f"slow:{bcrypt_hash('pw', rounds=13)}")
    mirror = await auth_mirror(make_mirror, users)
    auth = authenticator(mirror)
    waiting = [
        asyncio.create_task(mirror.get("/health", headers=basic("slow", "pw"))) for _ in range(10)
    ]
    deadline = time.monotonic() + 20
    while auth.verifications == 0:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.005)
    for _ in range(5):  # the loop is free while the hash is checked (~0.5-1 s at cost 13)
        status, _, _ = await mirror.get("/healthz")
        assert status != 401
    assert not any(task.done() for task in waiting)
    results = await asyncio.wait_for(asyncio.gather(*waiting), 60)
    assert [status for status, _, _ in results] == [200] * 10
    assert auth.verifications == 1
    for _ in range(3):
        status, _, _ = await mirror.get("/simple/", headers=basic("slow", "pw"))
        assert status == 200
    assert auth.verifications == 1
    assert auth.cache_hits == 3
    # A wrong password is never remembered: each try is checked.
    for _ in range(2):
        status, _, _ = await mirror.get("/simple/", headers=basic("slow", "wrong"))
        assert status == 401
    assert auth.verifications == 3


async def test_reload_replaces_the_table_and_forgets_verified_passwords(
    tmp_path: Path, make_mirror: MirrorFactory
) -> None:
    users = write_users(tmp_path / "users", f"alice:{bcrypt_hash('a')}")
    mirror = await auth_mirror(make_mirror, users)
    auth = authenticator(mirror)
    assert (await mirror.get("/simple/", headers=basic("alice", "a")))[0] == 200
    assert (await mirror.get("/simple/", headers=basic("bob", "b")))[0] == 401
    write_users(users, f"alice:{bcrypt_hash('a')}", f"bob:{argon2_hash('b')}")
    await auth.reload()
    assert auth.users == 2
    checks = auth.verifications
    assert (await mirror.get("/simple/", headers=basic("alice", "a")))[0] == 200
    assert auth.verifications == checks + 1  # the cache was dropped
    assert (await mirror.get("/simple/", headers=basic("bob", "b")))[0] == 200
    write_users(users, "bob:broken")
    await auth.reload()  # logged; the table stays
    assert auth.users == 2
    assert (await mirror.get("/simple/", headers=basic("bob", "b")))[0] == 200
    users.unlink()
    await auth.reload()
    assert (await mirror.get("/simple/", headers=basic("alice", "a")))[0] == 200


# -- pip and uv -------------------------------------------------------------------------


def with_credentials(mirror: RunningMirror, user: str | None, password: str | None) -> str:
    if user is None:
        return mirror.index_url
    return f"http://{user}:{password}@127.0.0.1:{mirror.port}/simple/"


async def pip_install(index_url: str, venv: Path, *requirements: str) -> tuple[int, str]:
    python = await new_venv(venv)
    return await run(
        sys.executable, "-m", "pip", "--python", python, "install",
        "--isolated", "--no-cache-dir", "--disable-pip-version-check", "--no-input",
        "--index-url", index_url, *requirements,
    )  # fmt: skip


async def uv_install(index_url: str, venv: Path, *requirements: str) -> tuple[int, str]:
    assert UV is not None, "uv is installed by `make test` (test extra)"
    code, out = await run(UV, "venv", "--no-config", "--no-cache", "--python", sys.executable, venv)
    assert code == 0, out
    return await run(
        UV, "pip", "install", "--no-config", "--no-cache",
        "--python", venv / "bin" / "python", "--index-url", index_url, *requirements,
    )  # fmt: skip


def refused(mirror: RunningMirror) -> float:
    """The requests answered 401 so far (the mirror's own request metric)."""
    assert mirror.app is not None
    return sum(
        sample.value
        for metric in mirror.app[METRICS].registry.collect()
        for sample in metric.samples
        if sample.name == "pypi_mirror_requests_total" and sample.labels.get("status") == "401"
    )


@pytest.mark.parametrize("client", ["pip", "uv"])
async def test_clients_install_with_the_right_credentials_only(
    client: str, tmp_path: Path, upstream: FakePyPI, make_mirror: MirrorFactory
) -> None:
    dist = tmp_path / "dist"
    upstream.add_file("auth-app", build_wheel(dist, "auth-app", "1.0", requires_dist=["auth-dep"]))
    upstream.add_file("auth-dep", build_wheel(dist, "auth-dep", "2.0"))
    users = write_users(tmp_path / "users", f"alice:{bcrypt_hash('s3cret', prefix='$2y$')}")
    mirror = await auth_mirror(make_mirror, users)
    auth = authenticator(mirror)
    install = pip_install if client == "pip" else uv_install

    before = refused(mirror)
    for number, (user, password) in enumerate([(None, None), ("alice", "wrong")]):
        code, out = await install(
            with_credentials(mirror, user, password), tmp_path / f"refused{number}", "auth-app"
        )
        assert code != 0, out
        assert refused(mirror) > before, out  # the mirror answered 401
        before = refused(mirror)
    assert upstream.count("/packages/") == 0

    checks = auth.verifications
    code, out = await install(
        with_credentials(mirror, "alice", "s3cret"), tmp_path / "venv", "auth-app"
    )
    assert code == 0, out
    assert (tmp_path / "venv").exists()
    assert upstream.count("/packages/") >= 2
    # Pages and files of two projects: the password was checked once for all of them.
    assert auth.verifications == checks + 1
    assert auth.cache_hits >= 3


@pytest.mark.parametrize("client", ["pip", "uv"])
async def test_clients_take_the_credentials_from_netrc(
    client: str,
    tmp_path: Path,
    upstream: FakePyPI,
    make_mirror: MirrorFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    upstream.add_file("auth-app", build_wheel(tmp_path / "dist", "auth-app", "1.0"))
    users = write_users(tmp_path / "users", f"alice:{argon2_hash('s3cret')}")
    mirror = await auth_mirror(make_mirror, users)
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login alice password s3cret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))  # read by both (pip through requests)
    install = pip_install if client == "pip" else uv_install
    code, out = await install(mirror.index_url, tmp_path / "venv", "auth-app")
    assert code == 0, out
    assert authenticator(mirror).verifications == 1


# -- a real `serve`: the log lines and SIGHUP ------------------------------------------


class AuthServe:
    """``python -m mirror serve`` with an auth file, its JSON lines read as they come."""

    def __init__(self, tmp_path: Path, upstream: FakePyPI, users: Path, workers: int) -> None:
        port = free_port()
        self.config = serve_config(tmp_path, upstream, users, port, f"workers = {workers}")
        self.url = f"http://127.0.0.1:{port}/"
        self.lines: list[str] = []
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "mirror", "serve", "-c", str(self.config),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            env=clean_env(), cwd=REPO, start_new_session=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        self._reader = asyncio.create_task(self._read(self.proc.stdout))

    async def _read(self, stream: asyncio.StreamReader) -> None:
        async for line in stream:
            self.lines.append(line.decode())

    def events(self, name: str) -> list[dict[str, Any]]:
        parsed = [json.loads(line) for line in self.lines if line.startswith("{")]
        return [event for event in parsed if event["event"] == name]

    async def wait_for(
        self, name: str, count: int = 1, timeout: float = 30
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(self.events(name)) < count:
            assert self.proc is not None and self.proc.returncode is None, self.lines
            assert time.monotonic() < deadline, f"no {name} event:\n{''.join(self.lines)}"
            await asyncio.sleep(0.02)
        return self.events(name)

    async def status(self, path: str, user: str, password: str) -> int:
        connector = aiohttp.TCPConnector(force_close=True)  # spread over the workers
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.get(self.url + path.lstrip("/"), headers=basic(user, password)) as resp,
        ):
            return resp.status

    async def finish(self) -> None:
        assert self.proc is not None and self._reader is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        await self.proc.wait()
        await asyncio.wait_for(self._reader, 10)
        print("".join(self.lines))  # shown if the test fails


async def test_sighup_reloads_and_failed_attempts_are_logged_without_the_password(
    tmp_path: Path, upstream: FakePyPI
) -> None:
    users = write_users(tmp_path / "users", f"alice:{bcrypt_hash('a-pass')}")
    serve = AuthServe(tmp_path, upstream, users, workers=1)
    await serve.start()
    try:
        await serve.wait_for("auth_loaded")
        await wait_answering(serve)
        assert await serve.status("/health", "alice", "a-pass") == 200
        assert await serve.status("/health", "alice", "Tr0ub4dor-guess") == 401
        assert await serve.status("/health", "bob", "b-pass") == 401

        write_users(users, f"alice:{bcrypt_hash('a-pass')}", f"bob:{argon2_hash('b-pass')}")
        assert serve.proc is not None
        serve.proc.send_signal(signal.SIGHUP)
        (reloaded,) = await serve.wait_for("auth_reloaded")
        assert reloaded["users"] == 2
        assert await serve.status("/health", "bob", "b-pass") == 200

        write_users(users, f"alice:{bcrypt_hash('a-pass')}", "carol")
        serve.proc.send_signal(signal.SIGHUP)
        (failed,) = await serve.wait_for("auth_reload_failed")
        assert f"{users}:2: " in failed["error"]
        assert await serve.status("/health", "bob", "b-pass") == 200  # the old table
        assert await serve.status("/health", "alice", "a-pass") == 200
        assert serve.proc.returncode is None
        await asyncio.sleep(0.2)  # the access lines of the last requests
    finally:
        await serve.finish()
    attempts = serve.events("auth_failed")
    assert [(e["user"], e["reason"]) for e in attempts[:2]] == [
        ("alice", "wrong password"),
        ("bob", "unknown user"),
    ]
    assert all(e["remote"] == "127.0.0.1" for e in attempts)
    log = "".join(serve.lines)
    guess = base64.b64encode(b"alice:Tr0ub4dor-guess").decode()
    assert "Tr0ub4dor" not in log and guess not in log
    requests = serve.events("request")
    assert {(e["status"], e["user"]) for e in requests} >= {(200, "alice"), (200, "bob")}
    assert {e["user"] for e in requests if e["status"] == 401} == {None}


async def wait_answering(serve: AuthServe) -> None:
    """Until the port answers (401 without credentials: the app is up)."""
    deadline = time.monotonic() + 30
    async with aiohttp.ClientSession() as session:
        while True:
            assert serve.proc is not None and serve.proc.returncode is None, serve.lines
            with contextlib.suppress(aiohttp.ClientConnectionError):
                async with session.get(serve.url + "simple/") as resp:
                    assert resp.status == 401
                    return
            assert time.monotonic() < deadline, "serve did not come up"
            await asyncio.sleep(0.05)


async def test_sighup_to_the_supervisor_reloads_every_worker(
    tmp_path: Path, upstream: FakePyPI
) -> None:
    users = write_users(tmp_path / "users", f"alice:{bcrypt_hash('a-pass')}")
    serve = AuthServe(tmp_path, upstream, users, workers=2)
    await serve.start()
    try:
        await serve.wait_for("auth_loaded", count=2)  # once by each worker
        await wait_answering(serve)
        write_users(users, f"bob:{bcrypt_hash('b-pass')}")
        assert serve.proc is not None
        serve.proc.send_signal(signal.SIGHUP)
        reloaded = await serve.wait_for("auth_reloaded", count=2)
        assert {e["worker"] for e in reloaded} == {0, 1}
        # Each new connection may reach either worker: all of them know bob, not alice.
        for _ in range(6):
            assert await serve.status("/health", "bob", "b-pass") == 200
            assert await serve.status("/health", "alice", "a-pass") == 401
        assert not serve.events("worker_exited")
    finally:
        await serve.finish()
