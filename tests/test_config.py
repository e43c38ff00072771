"""Configuration: defaults, TOML, environment overrides, and errors that name key and file."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from mirror.config import (
    PYPI_FILE_HOST,
    PYPI_URL,
    Config,
    SyncMode,
    TufMode,
    TufTargets,
    load_config,
    parse_size,
)
from mirror.errors import ConfigError, StorageError
from mirror.storage import FileSystemStorage

REPO = Path(__file__).resolve().parent.parent


def test_embedded_defaults_are_a_pull_through_cache_of_pypi() -> None:
    config = load_config(None, env={})
    assert config.upstream.url == PYPI_URL
    assert config.upstream.file_hosts == (PYPI_FILE_HOST,)
    assert config.storage.path == Path("mirror-data")
    assert config.serve.listen == "127.0.0.1:8080"
    assert (config.serve.host, config.serve.port) == ("127.0.0.1", 8080)
    assert config.serve.offline is False
    assert config.cache.max_size == 0


def test_example_config_parses_and_documents_every_key() -> None:
    example = REPO / "config.example.toml"
    config = load_config(example, env={})
    assert isinstance(config, Config)
    text = example.read_text()
    documented = tomllib.loads(text)
    for section in ("storage", "upstream", "serve", "cache", "sync", "tuf", "log"):
        assert section in documented, section
        for key in getattr(config, section).__dataclass_fields__:
            assert key.replace("_", "-") in documented[section], f"[{section}] {key}"


def test_file_values_and_sizes(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        """
[storage]
path = "/srv/mirror"
[upstream]
url = "http://127.0.0.1:9999"
file-hosts = ["files.example"]
timeout = 3
retries = 0
[serve]
listen = "0.0.0.0:3141"
index-ttl = 60
offline = true
[cache]
max-size = "200GB"
"""
    )
    config = load_config(path, env={})
    assert config.upstream.url == "http://127.0.0.1:9999/"
    assert config.upstream.allowed_hosts == {"127.0.0.1:9999", "files.example"}
    assert config.upstream.timeout == 3.0
    assert config.serve.port == 3141 and config.serve.offline is True
    assert config.cache.max_size == 200 * 1000**3
    assert parse_size("1.5GiB") == int(1.5 * 1024**3)
    assert parse_size(0) == 0


def test_environment_overrides_every_kind_of_key(tmp_path: Path) -> None:
    env = {
        "PYPI_MIRROR_SERVE_INDEX_TTL": "5",
        "PYPI_MIRROR_SERVE_OFFLINE": "true",
        "PYPI_MIRROR_CACHE_MAX_SIZE": "10MB",
        "PYPI_MIRROR_UPSTREAM_FILE_HOSTS": "a.example, b.example",
        "PYPI_MIRROR_STORAGE_PATH": str(tmp_path),
        "PYPI_MIRROR_SYNC_ALLOW": '["django>=4", "requests"]',
    }
    config = load_config(None, env=env)
    assert config.serve.index_ttl == 5
    assert config.serve.offline is True
    assert config.cache.max_size == 10_000_000
    assert config.upstream.file_hosts == ("a.example", "b.example")
    assert config.storage.path == tmp_path
    assert config.sync.allow == ("django>=4", "requests")


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[serve]\nlistn = '1'\n", "serve.listn"),
        ("[serve]\nindex-ttl = 'soon'\n", "serve.index-ttl"),
        ("[serve]\nlisten = 'nowhere'\n", "serve.listen"),
        ("[upstream]\nurl = 'ftp://x'\n", "upstream.url"),
        ("[cache]\nmax-size = 'lots'\n", "cache.max-size"),
        ("[serve]\noffline = 'yes'\n", "serve.offline"),
        ("[nonsense]\n", "nonsense"),
        ("[serve\n", "invalid TOML"),
    ],
)
def test_bad_config_names_key_and_file(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert needle in str(info.value)
    assert str(path) in str(info.value)


def test_modes_are_enum_members_that_compare_equal_to_their_strings(tmp_path: Path) -> None:
    defaults = load_config(None, env={})
    assert defaults.tuf.mode is TufMode.OFF and defaults.tuf.targets is TufTargets.FILES
    assert defaults.sync.mode is SyncMode.CACHE
    path = tmp_path / "c.toml"
    path.write_text('[sync]\nmode = "mirror"\n[tuf]\ntargets = "index"\n')
    config = load_config(path, env={"PYPI_MIRROR_TUF_MODE": "off"})
    assert config.sync.mode is SyncMode.MIRROR and config.sync.mode == "mirror"
    assert config.tuf.targets is TufTargets.INDEX and config.tuf.targets == "index"
    assert config.tuf.mode is TufMode.OFF and f"{config.tuf.mode}" == "off"


@pytest.mark.parametrize(
    ("section", "key", "value", "allowed"),
    [
        ("tuf", "mode", '"maybe"', "off, verify"),
        ("tuf", "targets", '"Files"', "files, index"),
        ("sync", "mode", "1", "cache, mirror"),
    ],
)
def test_bad_mode_names_key_file_and_allowed_values(
    tmp_path: Path, section: str, key: str, value: str, allowed: str
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f"[{section}]\n{key} = {value}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    message = str(info.value)
    assert f"{section}.{key}" in message and str(path) in message
    assert f"expected one of {allowed}, got {value.replace(chr(34), chr(39))}" in message

    variable = f"PYPI_MIRROR_{section.upper()}_{key.upper()}"
    with pytest.raises(ConfigError) as info:
        load_config(None, env={variable: "nonsense"})
    assert variable in str(info.value) and f"expected one of {allowed}" in str(info.value)


def test_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, env={"PYPI_MIRROR_SERVE_INDEX_TTL": "soon"})
    assert "PYPI_MIRROR_SERVE_INDEX_TTL" in str(info.value)


def test_missing_config_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.toml", env={})


def test_unusable_storage_path_stops_start_up(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StorageError, match=r"\[storage\] path"):
        FileSystemStorage.open(blocker / "sub")


def test_eviction_is_refused_for_a_full_mirror(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[sync]\nmode = "mirror"\n[cache]\nmax-size = "10GB"\n')
    with pytest.raises(ConfigError, match=r"cache\.max-size"):
        load_config(path, env={})


def test_start_up_removes_temp_files_of_dead_processes_only(tmp_path: Path) -> None:
    storage = FileSystemStorage.open(tmp_path)
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        live_part = tmp_path / "tmp" / f"{alive.pid}.abc.x.whl.part"
        dead_part = tmp_path / "tmp" / f"{dead.pid}.abc.x.whl.part"
        old_part = tmp_path / "tmp" / f"{alive.pid}.def.y.whl.part"
        for part in (live_part, dead_part, old_part):
            part.write_bytes(b"x")
        os.utime(old_part, (1, 1))
        FileSystemStorage.open(tmp_path)
        assert live_part.exists()
        assert not dead_part.exists() and not old_part.exists()
    finally:
        alive.kill()
        alive.wait()
    assert storage.root == tmp_path.resolve()
