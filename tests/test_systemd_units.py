"""systemd/*: the units pass ``systemd-analyze verify``, carry the hardening set, score low on
``systemd-analyze security``, and the real ``serve`` and ``sync`` stay inside that sandbox.

No systemd runs here (a container's PID 1 is not systemd): ``systemd-analyze`` reads the
unit files offline. ``verify`` also checks that ``ExecStart=``'s program exists and is
executable; the shipped path (/opt/pypi-mirror/.venv/bin/pypi-mirror) does not exist here,
so the units are copied to a temporary directory with that path rewritten to this venv's
``pypi-mirror`` — the same entry point ``pip install .`` puts there — and every other line
as shipped. The sandbox itself (seccomp filter, W^X, address families) cannot be applied
without the service manager; instead ``serve`` and ``sync`` run under ``strace`` and every
system call they make is checked against what the units allow.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.conftest import clean_env, free_port
from tests.fakepypi import FakePyPI
from tests.sync_helpers import config_toml
from tests.test_cli_serve import wait_until_up
from tests.test_e2e_clients import pip_install, publish_corpus

REPO = Path(__file__).resolve().parent.parent
UNITS = REPO / "systemd"
SERVICES = ("pypi-mirror.service", "pypi-mirror-sync.service")
SHIPPED_BINARY = "/opt/pypi-mirror/.venv/bin/pypi-mirror"
VENV_BINARY = Path(sys.executable).parent / "pypi-mirror"
EXPOSURE_BOUND = 2.0  # `systemd-analyze security`: 0 is best, 10 worst; 7.9 before hardening

ANALYZE = shutil.which("systemd-analyze")
if ANALYZE is None and os.environ.get("CI"):
    raise RuntimeError(
        "systemd-analyze is missing: `make test` installs it (apt-get install systemd)"
    )
pytestmark = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze not installed (make test installs Debian's systemd)"
)

# Directive → value every service must carry (the hardening set of issue 10).
HARDENING = {
    "CapabilityBoundingSet": "",
    "AmbientCapabilities": "",
    "NoNewPrivileges": "yes",
    "PrivateDevices": "yes",
    "PrivateTmp": "yes",
    "ProtectSystem": "strict",
    "ReadWritePaths": "/var/lib/pypi-mirror",
    "ProtectHome": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "ProtectClock": "yes",
    "ProtectHostname": "yes",
    "ProtectProc": "invisible",
    "ProcSubset": "pid",
    "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    "RestrictNamespaces": "yes",
    "RestrictRealtime": "yes",
    "RestrictSUIDSGID": "yes",
    "LockPersonality": "yes",
    "MemoryDenyWriteExecute": "yes",
    "SystemCallArchitectures": "native",
    "SystemCallErrorNumber": "EPERM",
    "UMask": "0027",
    "DevicePolicy": "closed",
    "LimitNOFILE": "65536",
}
SYSCALL_FILTER = ["@system-service", "~@privileged @resources"]


def directives(unit: Path) -> dict[str, list[str]]:
    """Key → every value it is given (systemd keys may repeat), comments skipped."""
    out: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        out.setdefault(key.strip(), []).append(value.strip())
    return out


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    return subprocess.run([ANALYZE, *args], capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture
def units(tmp_path: Path) -> Iterator[Path]:
    """systemd/* in a temporary directory, ExecStart= pointing at this venv's pypi-mirror."""
    assert VENV_BINARY.is_file() and os.access(VENV_BINARY, os.X_OK), VENV_BINARY
    out = tmp_path / "units"
    out.mkdir()
    for unit in UNITS.iterdir():
        text = unit.read_text()
        if unit.suffix == ".service":
            assert f"ExecStart={SHIPPED_BINARY} " in text, unit.name
            text = text.replace(f"ExecStart={SHIPPED_BINARY} ", f"ExecStart={VENV_BINARY} ")
        (out / unit.name).write_text(text)
    yield out


def test_units_pass_systemd_analyze_verify(units: Path) -> None:
    names = sorted(p.name for p in units.iterdir())
    assert names == ["pypi-mirror-sync.service", "pypi-mirror-sync.timer", "pypi-mirror.service"]
    for name in names:
        result = analyze("verify", str(units / name))
        # verify may talk about the host's own units; nothing it says may be about ours.
        about_ours = [line for line in result.stderr.splitlines() if "pypi-mirror" in line]
        assert result.returncode == 0 and not about_ours, f"{name}:\n{result.stderr}"

    # The check is live: a misspelt key and a missing program are reported.
    broken = units / "broken.service"
    text = (units / "pypi-mirror.service").read_text()
    broken.write_text(text.replace("ProtectSystem=", "ProtectSytem="))
    assert "ProtectSytem" in analyze("verify", str(broken)).stderr
    broken.write_text(text.replace(str(VENV_BINARY), str(units / "no-such-program")))
    result = analyze("verify", str(broken))
    assert result.returncode != 0 and "no-such-program" in result.stderr


def test_exec_start_is_a_command_line_the_cli_accepts() -> None:
    from mirror.cli import _parser

    for name, command in (("pypi-mirror.service", "serve"), ("pypi-mirror-sync.service", "sync")):
        (exec_start,) = directives(UNITS / name)["ExecStart"]
        program, *args = exec_start.split()
        assert program == SHIPPED_BINARY
        parsed = _parser().parse_args(args)
        assert parsed.command == command
        assert parsed.config == Path("/etc/pypi-mirror/config.toml")


def test_services_carry_the_hardening_set() -> None:
    seen: list[dict[str, list[str]]] = []
    for name in SERVICES:
        found = directives(UNITS / name)
        for key, value in HARDENING.items():
            assert found.get(key) == [value], f"{name}: {key}={value} (found {found.get(key)})"
        assert found["SystemCallFilter"] == SYSCALL_FILTER, name
        assert found["User"] == ["pypi-mirror"] and found["StateDirectory"] == ["pypi-mirror"]
        seen.append(found)
    serve, sync = seen
    assert serve["KillMode"] == ["mixed"]
    sandbox = [*HARDENING, "SystemCallFilter", "PrivateIPC", "PrivateMounts", "RemoveIPC"]
    assert {k: serve.get(k) for k in sandbox} == {k: sync.get(k) for k in sandbox}


def exposure(unit: Path) -> float:
    result = analyze("security", "--offline=yes", str(unit))
    if "--offline" in result.stderr and "unrecognized" in result.stderr:
        pytest.skip("this systemd-analyze has no --offline (systemd 250 or newer has)")
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    return float(match.group(1))


def test_exposure_level_is_low(units: Path) -> None:
    for name in SERVICES:
        level = exposure(units / name)
        assert level <= EXPOSURE_BOUND, f"{name}: exposure {level} > {EXPOSURE_BOUND}"
    # The measure is live: the unhardened first version of the unit scored 7.9.
    bare = units / "bare.service"
    bare.write_text(
        "[Service]\nUser=pypi-mirror\nExecStart=" + str(VENV_BINARY) + " serve\n"
        "NoNewPrivileges=true\nPrivateTmp=true\nProtectSystem=strict\nProtectHome=true\n"
    )
    assert exposure(bare) > 5.0


# --- serve and sync under strace, checked against the sandbox ------------------------------

STRACE = shutil.which("strace")
CALL = re.compile(r"^\d+\s+(?:<\.\.\. )?([a-z0-9_]+)[( ]")
PATH_ARG = re.compile(r'"(/[^"]*)"')
WRITING = ("O_WRONLY", "O_RDWR", "O_CREAT")
# System calls that create, change or remove the path they name.
MUTATING = {"mkdir", "mkdirat", "rename", "renameat", "renameat2", "unlink", "unlinkat",
            "rmdir", "symlink", "symlinkat", "link", "linkat", "truncate", "creat", "mknod",
            "mknodat", "chmod", "fchmodat", "utimensat"}  # fmt: skip


def syscall_set(group: str, seen: set[str] | None = None) -> set[str]:
    """The system calls of a systemd filter group, its nested groups expanded."""
    seen = set() if seen is None else seen
    names: set[str] = set()
    for line in analyze("syscall-filter", group).stdout.splitlines()[1:]:
        name = line.strip()
        if name.startswith("@") and name not in seen:
            seen.add(name)
            names |= syscall_set(name, seen)
        elif name and not name.startswith(("#", "@")):
            names.add(name)
    return names


# Reads the units make fail on purpose, known to be handled.
TOLERATED = {
    # prometheus_client's default ProcessCollector reads the boot time at import and
    # catches the OSError (ProcSubset=pid hides /proc/stat); the mirror exports its own
    # registry, which has no process collector.
    "/proc/stat",
}


def whole_calls(trace: Path) -> Iterator[str]:
    """The log's lines, a call interrupted by another process's put back together."""
    pending: dict[str, str] = {}
    for line in trace.read_text(errors="replace").splitlines():
        pid, _, rest = line.partition(" ")
        if line.endswith("<unfinished ...>"):
            pending[pid] = line.removesuffix("<unfinished ...>")
        elif pid in pending and "resumed>" in rest:
            yield pending.pop(pid) + rest.split("resumed>", 1)[1]
        else:
            yield line


def sandbox_violations(trace: Path, storage: Path) -> list[str]:
    """What in an ``strace -f`` log the units' sandbox would refuse."""
    allowed = syscall_set("@system-service") - syscall_set("@privileged")
    allowed -= syscall_set("@resources")
    assert {"fallocate", "syncfs", "fdatasync", "flock", "sendfile", "setsockopt"} <= allowed
    writable = (str(storage), tempfile.gettempdir(), "/dev/", "/proc/self/", "/proc/thread-self/")
    # The interpreter and this checkout may live under /root here (ProtectHome=); under
    # systemd they are in /usr and /opt. Python's probes of its prefix's parents fail or
    # stat a directory; its failed attempts to write __pycache__ are harmless.
    own = tuple(f"{p}/" for p in (sys.base_prefix, sys.prefix, REPO))
    problems: list[str] = []
    for line in whole_calls(trace):
        match = CALL.match(line)
        if match is None:
            continue
        call = match.group(1)
        if call not in allowed:
            problems.append(f"system call outside SystemCallFilter=: {line}")
        elif (
            call in ("mmap", "mprotect", "pkey_mprotect")
            and "PROT_EXEC" in line
            and (call != "mmap" or "PROT_WRITE" in line)
        ):
            problems.append(f"W+X memory (MemoryDenyWriteExecute=): {line}")
        elif call in ("socket", "socketpair") and not re.search(
            r"\((AF_INET|AF_INET6|AF_UNIX),", line
        ):
            problems.append(f"address family outside RestrictAddressFamilies=: {line}")
        failed = " = -1 " in line
        for path in PATH_ARG.findall(line):
            if path in TOLERATED:
                continue
            if path.startswith("/proc/") and not re.match(
                r"/proc/(self|thread-self|\d+)(/|$)", path
            ):
                problems.append(f"/proc beyond the process's own (ProcSubset=pid): {line}")
            home = path.startswith(("/root/", "/home/", "/run/user/"))
            interpreter = path.startswith(own) or any(p.startswith(path + "/") for p in own)
            if home and not interpreter and not failed:
                problems.append(f"home directory (ProtectHome=): {line}")
            written = call in MUTATING or (
                call in ("open", "openat") and any(f in line for f in WRITING)
            )
            if written and not path.startswith(writable) and "/__pycache__/" not in path:
                problems.append(f"write outside ReadWritePaths= and /tmp: {line}")
    return problems


def traced(trace: Path, *args: str) -> list[str]:
    assert STRACE is not None
    return [STRACE, "-f", "-qq", "-s", "256", "-o", str(trace), *args]


def unit_command(name: str, config: Path) -> list[str]:
    """The unit's ExecStart= with this venv's program and ``config`` for the shipped one."""
    (exec_start,) = directives(UNITS / name)["ExecStart"]
    program, *args = exec_start.replace("/etc/pypi-mirror/config.toml", str(config)).split()
    assert program == SHIPPED_BINARY and str(config) in args
    return [str(VENV_BINARY), *args]


def strace_usable() -> bool:
    if STRACE is None:
        return False
    probe = subprocess.run([STRACE, "-f", "-qq", "-o", os.devnull, "true"], check=False)
    return probe.returncode == 0


@pytest.mark.skipif(not strace_usable(), reason="strace missing or not allowed to trace here")
async def test_serve_and_sync_stay_inside_the_sandbox(tmp_path: Path, upstream: FakePyPI) -> None:
    """``serve`` (two workers: supervisor and worker start-up, a pip install through the
    cache, SIGTERM) and ``sync`` (a full mirror of the fake upstream) run the units' own
    command lines under strace; nothing they do may be something the units refuse."""
    publish_corpus(tmp_path, upstream)
    storage = tmp_path / "storage"
    port = free_port()
    config = tmp_path / "serve.toml"
    config.write_text(
        f'[storage]\npath = "{storage}"\n'
        f'[upstream]\nurl = "{upstream.url}"\nfile-hosts = []\n'
        f'[serve]\nlisten = "127.0.0.1:{port}"\nworkers = 2\n'
    )
    trace = tmp_path / "serve.trace"
    proc = await asyncio.create_subprocess_exec(
        *traced(trace, *unit_command("pypi-mirror.service", config)),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env=clean_env(),
        cwd=tmp_path,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        await wait_until_up(url, proc)
        via = SimpleNamespace(url=url, index_url=url + "simple/", root=storage)
        code, out = await pip_install(via, tmp_path / "venv", "e2e-app", "e2e-plain")  # type: ignore[arg-type]
        assert code == 0, out
    finally:
        # strace's child is the supervisor: it gets the SIGTERM, as under systemd.
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        for child in children:
            os.kill(int(child), signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    assert sandbox_violations(trace, storage) == []

    mirror_root = tmp_path / "mirror"
    sync_conf = tmp_path / "sync.toml"
    sync_conf.write_text(config_toml(upstream, mirror_root))
    trace = tmp_path / "sync.trace"
    sync = await asyncio.create_subprocess_exec(
        *traced(trace, *unit_command("pypi-mirror-sync.service", sync_conf)),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env=clean_env(),
        cwd=tmp_path,
    )
    _, err = await asyncio.wait_for(sync.communicate(), 120)
    assert sync.returncode == 0, err.decode()
    assert any((mirror_root / "web" / "packages").rglob("*.whl"))
    assert sandbox_violations(trace, mirror_root) == []


def test_the_sandbox_check_sees_what_the_units_refuse(tmp_path: Path) -> None:
    trace = tmp_path / "fake.trace"
    trace.write_text(
        "10  ptrace(PTRACE_TRACEME) = 0\n"
        "10  mmap(NULL, 4096, PROT_READ|PROT_WRITE|PROT_EXEC, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0)"
        " = 0x7f0000000000\n"
        "10  mprotect(0x7f0000000000, 4096, PROT_READ|PROT_EXEC) = 0\n"
        "10  socket(AF_NETLINK, SOCK_RAW|SOCK_CLOEXEC, NETLINK_ROUTE) = 3\n"
        '10  openat(AT_FDCWD, "/proc/meminfo", O_RDONLY|O_CLOEXEC) = 3\n'
        '10  openat(AT_FDCWD, "/etc/pypi-mirror/state", O_WRONLY|O_CREAT, 0666) = 3\n'
        '10  openat(AT_FDCWD, "/home/someone/.netrc", O_RDONLY|O_CLOEXEC) = 3\n'
        # Allowed: the storage, /tmp, its own /proc, a read-only mapping of code.
        f'10  openat(AT_FDCWD, "{tmp_path}/web/x", O_WRONLY|O_CREAT, 0666) = 3\n'
        '10  openat(AT_FDCWD, "/proc/self/fd/7", O_RDONLY|O_CLOEXEC) = 3\n'
        "10  mmap(NULL, 8192, PROT_READ|PROT_EXEC, MAP_PRIVATE|MAP_DENYWRITE, 3, 0) = 0x7f01\n"
        "10  socket(AF_INET6, SOCK_STREAM|SOCK_CLOEXEC, IPPROTO_TCP) = 4\n"
    )
    problems = sandbox_violations(trace, tmp_path)
    assert [p.split(":")[0] for p in problems] == [
        "system call outside SystemCallFilter=",
        "W+X memory (MemoryDenyWriteExecute=)",
        "W+X memory (MemoryDenyWriteExecute=)",
        "address family outside RestrictAddressFamilies=",
        "/proc beyond the process's own (ProcSubset=pid)",
        "write outside ReadWritePaths= and /tmp",
        "home directory (ProtectHome=)",
    ]
