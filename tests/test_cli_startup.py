"""Start-up errors as an operator meets them — one line on stderr, exit code 2, no
traceback — for ``serve`` with one worker and with a supervisor and workers: the address
in use (also by another ``serve`` whose workers share it with ``SO_REUSEPORT``, and taken
between the supervisor's check and the workers' bind), a mistyped ``PYPI_MIRROR_*``
variable (for every command), an unwritable storage path; and ``--version`` and ``--help``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mirror.cli import _parser
from mirror.config import load_config
from mirror.errors import ConfigError
from tests.conftest import clean_env, free_port
from tests.test_cli_serve import wait_until_up
from tests.test_serve_workers import wait_for_workers

REPO = Path(__file__).resolve().parent.parent
LISTEN_HINT = "stop the other server or set [serve] listen (or PYPI_MIRROR_SERVE_LISTEN)"


def child_env(**extra: str) -> dict[str, str]:
    """This machine's environment without any PYPI_MIRROR_* of its own, plus ``extra``."""
    env = {k: v for k, v in clean_env().items() if not k.startswith("PYPI_MIRROR_")}
    return {**env, **extra}


def write_config(tmp_path: Path, port: int, *, workers: int, storage: Path | None = None) -> Path:
    config = tmp_path / f"mirror-{workers}.toml"
    config.write_text(
        f'[storage]\npath = "{storage or tmp_path / "data"}"\n'
        # offline: nothing at start-up depends on an upstream
        f'[serve]\nlisten = "127.0.0.1:{port}"\nworkers = {workers}\noffline = true\n'
        '[log]\nformat = "json"\n'
    )
    return config


async def run(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> tuple[int, str, str]:
    """``python ARGS`` (``-m mirror …`` or ``-c SCRIPT …``): exit code, stdout, stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env or child_env(),
        cwd=REPO,
        start_new_session=True,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # never leave workers behind
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def one_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("pypi-mirror: "), err
    return lines[0]


@contextlib.contextmanager
def listening(port: int) -> Iterator[socket.socket]:
    """Another program listening on 127.0.0.1:port (a plain socket, as most servers)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen()
        yield sock


# -- the address in use ------------------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 2])
async def test_port_in_use_is_one_line_naming_the_address_and_the_fix(
    tmp_path: Path, workers: int
) -> None:
    port = free_port()
    config = write_config(tmp_path, port, workers=workers)
    with listening(port):
        code, out, err = await run("-m", "mirror", "serve", "-c", str(config))
    assert code == 2, out + err
    line = one_line(err)
    assert f"cannot listen on 127.0.0.1:{port}: address already in use; {LISTEN_HINT}" in line
    assert str(config) in line  # where the address came from
    # refused before anything started: no worker, no services
    assert "worker_started" not in out and "server_starting" not in out


async def test_second_serve_beside_one_whose_workers_share_the_port_is_refused(
    tmp_path: Path,
) -> None:
    """The first ``serve`` listens with ``SO_REUSEPORT`` in each worker: a second one must
    not join it silently (the kernel would spread connections over both)."""
    port = free_port()
    first_config = write_config(tmp_path, port, workers=2)
    first = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mirror",
        "serve",
        "-c",
        str(first_config),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env=child_env(),
        cwd=REPO,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        await asyncio.wait_for(wait_until_up(url, first), 30)
        await wait_for_workers(url, {0, 1})
        (tmp_path / "second").mkdir()
        for workers in (2, 1):
            second = write_config(tmp_path / "second", port, workers=workers)
            code, out, err = await run("-m", "mirror", "serve", "-c", str(second))
            assert code == 2, out + err
            line = one_line(err)
            assert f"cannot listen on 127.0.0.1:{port}: address already in use" in line
        assert first.returncode is None
        first.send_signal(signal.SIGTERM)
        _, first_err = await asyncio.wait_for(first.communicate(), 30)
        assert first.returncode == 0, first_err.decode()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(first.pid, signal.SIGKILL)


# The address is taken after the start-up check passed (another program was faster): the
# bind in the process that serves (the only one, or each worker) fails.
TAKEN_AFTER_CHECK = """
import sys
from mirror.server import run
run.check_address = lambda host, port: port
from mirror.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("workers", [1, 3])
async def test_port_taken_after_the_check_is_one_line_and_no_restarts(
    tmp_path: Path, workers: int
) -> None:
    port = free_port()
    config = write_config(tmp_path, port, workers=workers)
    with listening(port):
        code, out, err = await run("-c", TAKEN_AFTER_CHECK, "serve", "-c", str(config))
    assert code == 2, out + err
    line = one_line(err)  # several workers said it: passed on once
    assert f"cannot listen on 127.0.0.1:{port}: address already in use; {LISTEN_HINT}" in line
    events = [json.loads(line)["event"] for line in out.splitlines()]
    if workers > 1:
        assert "worker_cannot_start" in events
        assert "worker_exited" not in events  # not restarted: it would fail again


# -- a mistyped environment variable -----------------------------------------------------


@pytest.mark.parametrize("command", ["serve", "sync", "status"])
async def test_mistyped_environment_variable_names_it_and_the_closest_key(
    tmp_path: Path, command: str
) -> None:
    env = child_env(
        PYPI_MIRROR_SERVE_INDEX_TLL="5",
        PYPI_MIRROR_STORAGE_PATH=str(tmp_path / "data"),
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path),  # not ours: not checked
    )
    code, out, err = await run("-m", "mirror", command, env=env)
    assert code == 2, out + err
    assert one_line(err) == (
        "pypi-mirror: configuration error: unknown environment variable "
        "PYPI_MIRROR_SERVE_INDEX_TLL (did you mean PYPI_MIRROR_SERVE_INDEX_TTL?); "
        "correct or unset it"
    )
    assert not (tmp_path / "data").exists()  # nothing was started


def test_environment_variables_are_checked_and_the_applied_ones_recorded(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, env={"PYPI_MIRROR_LISTEN": "0.0.0.0:1", "PYPI_MIRROR_FOO": "1"})
    message = str(info.value)
    assert "PYPI_MIRROR_LISTEN (did you mean PYPI_MIRROR_SERVE_LISTEN?)" in message
    assert "PYPI_MIRROR_FOO (names are PYPI_MIRROR_<SECTION>_<KEY>" in message
    with pytest.raises(ConfigError, match="did you mean PYPI_MIRROR_CACHE_MAX_SIZE"):
        load_config(None, env={"pypi_mirror_cache_max_size": "1GB"})
    env = {
        "PYPI_MIRROR_STORAGE_PATH": str(tmp_path),
        "PYPI_MIRROR_SERVE_INDEX_TTL": "5",
        "PROMETHEUS_MULTIPROC_DIR": "/x",
        "PYPI_MIRRORS": "not ours",
    }
    config = load_config(None, env=env)
    assert config.environment == ("PYPI_MIRROR_SERVE_INDEX_TTL", "PYPI_MIRROR_STORAGE_PATH")
    assert config.origin == (
        "embedded defaults + environment PYPI_MIRROR_SERVE_INDEX_TTL, PYPI_MIRROR_STORAGE_PATH"
    )
    assert load_config(None, env={}).origin == "embedded defaults"


# -- an unwritable storage path ----------------------------------------------------------


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory on a read-only bind mount (root is not stopped by permissions)."""
    path = tmp_path / "ro"
    path.mkdir()
    mounted = subprocess.run(["mount", "--bind", str(path), str(path)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot bind-mount here: {mounted.stderr.decode().strip()}")
    try:
        remount = ["mount", "-o", "remount,ro,bind", str(path), str(path)]
        if subprocess.run(remount, capture_output=True).returncode != 0:
            pytest.skip("cannot remount read-only here")
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


@pytest.mark.parametrize("workers", [1, 2])
async def test_storage_path_where_a_file_is_is_one_line_naming_it(
    tmp_path: Path, workers: int
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    config = write_config(tmp_path, free_port(), workers=workers, storage=blocker / "data")
    code, out, err = await run("-m", "mirror", "serve", "-c", str(config))
    assert code == 2, out + err
    line = one_line(err)
    assert f"storage path {blocker / 'data'} is not usable: Not a directory" in line
    assert "set [storage] path to a writable directory" in line


@pytest.mark.parametrize("workers", [1, 2])
async def test_read_only_storage_is_one_line_naming_it(
    tmp_path: Path, read_only_dir: Path, workers: int
) -> None:
    config = write_config(tmp_path, free_port(), workers=workers, storage=read_only_dir)
    code, out, err = await run("-m", "mirror", "serve", "-c", str(config))
    assert code == 2, out + err
    line = one_line(err)
    assert f"storage path {read_only_dir} is not usable: Read-only file system" in line
    assert "set [storage] path to a writable directory" in line


# -- --version and --help ----------------------------------------------------------------


async def test_version() -> None:
    code, out, err = await run("-m", "mirror", "--version")
    assert code == 0, err
    assert out.strip() == f"pypi-mirror {importlib.metadata.version('pypi-mirror')}"


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("no subcommands")


def _undescribed(parser: argparse.ArgumentParser) -> list[str]:
    """Options and arguments shown in ``--help`` without a description."""
    return [
        "/".join(action.option_strings) or action.dest
        for action in parser._actions
        if action.help is None or (action.help != argparse.SUPPRESS and not action.help.strip())
    ]


def squeeze(text: str) -> str:
    """``text`` without whitespace (argparse wraps lines, also at hyphens)."""
    return "".join(text.split())


async def test_every_command_and_option_has_a_description() -> None:
    parser = _parser()
    assert _undescribed(parser) == []
    commands = _commands(parser)
    assert {"serve", "sync", "status"} <= set(commands)
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    listed = {choice.dest: choice.help for choice in subparsers._choices_actions}
    code, top, err = await run("-m", "mirror", "--help")
    assert code == 0, err
    flat_top = squeeze(top)
    for name, sub in commands.items():
        assert listed.get(name), f"{name} has no one-line help in pypi-mirror --help"
        assert squeeze(listed[name]) in flat_top
        assert sub.description, f"{name} --help has no description"
        assert _undescribed(sub) == [], name
        code, out, err = await run("-m", "mirror", name, "--help")
        assert code == 0, err
        assert squeeze(sub.description) in squeeze(out), name
        assert "--config" in out
