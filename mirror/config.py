"""Configuration: TOML parsed once into frozen dataclasses.

Every key of every section can be overridden by an environment variable
``PYPI_MIRROR_<SECTION>_<KEY>`` (upper case, dashes as underscores); one with that prefix
that names no key is an error (naming the closest key), and the names of those applied are
kept (``Config.environment``). With no file the embedded defaults below apply: a
pull-through cache of PyPI in ``./mirror-data`` on ``127.0.0.1:8080``. Errors name the key
and where the value came from.

Keys that pick a mode are :class:`enum.StrEnum` members (:class:`TufMode`,
:class:`TufTargets`, :class:`SyncMode`): they compare equal to their TOML strings.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mirror.errors import ConfigError

ENV_PREFIX = "PYPI_MIRROR_"

_SIZE_UNITS = {
    "": 1,
    "B": 1,
    "K": 1000,
    "KB": 1000,
    "M": 1000**2,
    "MB": 1000**2,
    "G": 1000**3,
    "GB": 1000**3,
    "T": 1000**4,
    "TB": 1000**4,
    "KIB": 1024,
    "MIB": 1024**2,
    "GIB": 1024**3,
    "TIB": 1024**4,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")


def parse_size(value: object) -> int:
    """Bytes from an int or a string like ``"200GB"``, ``"1.5 GiB"``, ``"512"``."""
    if isinstance(value, bool):
        raise ValueError("expected a size in bytes or a string like '200GB', got a boolean")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    if isinstance(value, str):
        match = _SIZE_RE.match(value)
        if match:
            unit = match.group(2).upper()
            if unit in _SIZE_UNITS:
                return int(float(match.group(1)) * _SIZE_UNITS[unit])
    raise ValueError(f"expected a size in bytes or a string like '200GB', got {value!r}")


def _kind(kind: str, **extra: Any) -> dict[str, Any]:
    return {"kind": kind, **extra}


class TufMode(enum.StrEnum):
    """``[tuf] mode``."""

    OFF = "off"
    VERIFY = "verify"


class TufTargets(enum.StrEnum):
    """``[tuf] targets``: what the upstream signs (see :mod:`mirror.trust.paths`)."""

    #: Each distribution file is a target, at its path below ``/packages/``.
    FILES = "files"
    #: Each project's simple page is a target; files are trusted through its sha256.
    INDEX = "index"


class SyncMode(enum.StrEnum):
    """``[sync] mode``."""

    #: Refresh (or drop) only the projects already cached.
    CACHE = "cache"
    #: A full (filtered) mirror: every listed file is kept.
    MIRROR = "mirror"


@dataclass(frozen=True)
class StorageConfig:
    path: Path = field(default=Path("mirror-data"), metadata=_kind("path"))


#: The embedded default upstream: PyPI's Simple API, and the host its files are on.
PYPI_URL = "https://pypi.org/"
PYPI_FILE_HOST = "files.pythonhosted.org"


@dataclass(frozen=True)
class UpstreamConfig:
    url: str = field(default=PYPI_URL, metadata=_kind("url"))
    file_hosts: tuple[str, ...] = field(default=(PYPI_FILE_HOST,), metadata=_kind("strlist"))
    timeout: float = field(default=30.0, metadata=_kind("float", minimum=0.1))
    retries: int = field(default=3, metadata=_kind("int", minimum=0, maximum=20))
    max_page_size: int = field(default=128 * 1024**2, metadata=_kind("size"))
    # Bound for a file whose size neither the index nor the upstream's headers state.
    max_file_size: int = field(default=20 * 1024**3, metadata=_kind("size"))
    connections: int = field(default=64, metadata=_kind("int", minimum=1, maximum=10000))

    @property
    def host(self) -> str:
        return urlsplit(self.url).netloc.lower()

    @property
    def allowed_hosts(self) -> frozenset[str]:
        return frozenset({self.host, *(h.lower() for h in self.file_hosts)})


@dataclass(frozen=True)
class ServeConfig:
    listen: str = field(default="127.0.0.1:8080", metadata=_kind("listen"))
    index_ttl: int = field(default=600, metadata=_kind("int", minimum=0))
    negative_ttl: int = field(default=60, metadata=_kind("int", minimum=0))
    # Seconds a request for a stale cached page (JSON API answer, root list) waits on its
    # revalidation before the stored copy is served; the revalidation goes on.
    revalidate_timeout: float = field(default=2.0, metadata=_kind("float", minimum=0))
    # Upstream failures in a row after which stored copies are served at once (the
    # circuit breaker opens), and the seconds before its first probe (doubling); 0 = never.
    breaker_failures: int = field(default=3, metadata=_kind("int", minimum=0, maximum=1000))
    breaker_backoff: float = field(default=10.0, metadata=_kind("float", minimum=0.1))
    offline: bool = field(default=False, metadata=_kind("bool"))
    # Project pages held in memory, ready to send (bytes; 0 = always read from disk).
    page_memory: int = field(default=64 * 1024**2, metadata=_kind("size"))
    # Small distribution files (up to 1 MB each) held in memory (bytes; 0 = none).
    file_memory: int = field(default=64 * 1024**2, metadata=_kind("size"))
    # Processes sharing the listening port (SO_REUSEPORT); 0 = one per core.
    workers: int = field(default=0, metadata=_kind("int", minimum=0, maximum=256))
    # Seconds SIGTERM leaves requests and downloads in progress to finish; then the rest
    # is answered 503 (or cut off, if its answer had begun) and the process exits.
    shutdown_grace: float = field(default=10.0, metadata=_kind("float", minimum=0, maximum=3600))
    # Client authentication (HTTP Basic): a file of "user:hash" lines (bcrypt or argon2id,
    # as `htpasswd -nbB` makes them), re-read on SIGHUP; None ("" in TOML) = every client
    # is let in.
    auth_file: Path | None = field(default=None, metadata=_kind("optional_path"))

    @property
    def host(self) -> str:
        return split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return split_listen(self.listen)[1]


@dataclass(frozen=True)
class CacheConfig:
    max_size: int = field(default=0, metadata=_kind("size"))
    evict_interval: int = field(default=60, metadata=_kind("int", minimum=1))


PLATFORMS = ("windows", "macos", "freebsd", "linux")
#: ``[sync] interval`` when not set in ``mode = "cache"``: one changelog call a minute.
CACHE_FOLLOW_INTERVAL = 60


@dataclass(frozen=True)
class SyncConfig:
    # Seconds between changelog polls inside `serve`; 0 = off. Not set: 60 in mode =
    # "cache" (a pull-through cache follows the changelog out of the box), 0 in "mirror".
    interval: int = field(default=-1, metadata=_kind("int", minimum=0))
    # "cache": refresh/drop only projects already cached; "mirror": full (filtered) mirror.
    mode: SyncMode = field(default=SyncMode.CACHE, metadata=_kind("enum", enum=SyncMode))
    workers: int = field(default=8, metadata=_kind("int", minimum=1, maximum=256))
    file_workers: int = field(default=4, metadata=_kind("int", minimum=1, maximum=64))
    allow: tuple[str, ...] = field(default=(), metadata=_kind("strlist"))
    block: tuple[str, ...] = field(default=(), metadata=_kind("strlist"))
    exclude_platforms: tuple[str, ...] = field(
        default=(), metadata=_kind("strlist", choices=PLATFORMS)
    )
    python_versions: tuple[str, ...] = field(default=(), metadata=_kind("strlist"))
    prereleases: bool = field(default=True, metadata=_kind("bool"))
    keep_latest: int = field(default=0, metadata=_kind("int", minimum=0))
    max_file_size: int = field(default=0, metadata=_kind("size"))
    # Retries of a page whose X-PyPI-Last-Serial lags the changelog, before deferring it.
    stale_retries: int = field(default=3, metadata=_kind("int", minimum=0, maximum=20))
    # After each `sync`: the web-root paths it wrote or removed, one absolute path a line.
    diff_file: Path | None = field(default=None, metadata=_kind("optional_path"))
    # ... named <diff-file>-<unix time>, one list per run, instead of replacing one file.
    diff_append_epoch: bool = field(default=False, metadata=_kind("bool"))

    def __post_init__(self) -> None:
        if self.interval < 0:  # not set: the mode's default
            default = CACHE_FOLLOW_INTERVAL if self.mode is SyncMode.CACHE else 0
            object.__setattr__(self, "interval", default)


@dataclass(frozen=True)
class TufConfig:
    mode: TufMode = field(default=TufMode.OFF, metadata=_kind("enum", enum=TufMode))
    # Pinned bootstrap root.json (required when mode = "verify").
    root: Path | None = field(default=None, metadata=_kind("path"))
    # Where the upstream publishes its TUF metadata; "" = <upstream url>/tuf/.
    metadata_url: str = field(default="", metadata=_kind("optional_url"))
    targets: TufTargets = field(default=TufTargets.FILES, metadata=_kind("enum", enum=TufTargets))
    # Seconds between refreshes of timestamp/snapshot/targets (also on a missing target).
    refresh_interval: int = field(default=300, metadata=_kind("int", minimum=0))
    # targets = "index": the TUF target path of a project's page ({name}: normalised name).
    index_target: str = field(default="{name}", metadata=_kind("str"))
    # targets = "index": where that page is fetched, below index-url ({hash}: its digest).
    index_page: str = field(default="{name}/{hash}.{name}.html", metadata=_kind("str"))
    # targets = "index": base URL of the pages; "" = <upstream url>/simple/.
    index_url: str = field(default="", metadata=_kind("optional_url"))


def _check_tuf(tuf: TufConfig, source: str) -> None:
    """Cross-key checks of [tuf]: verify mode needs a readable, parseable pinned root."""
    from mirror.trust.paths import check_template

    try:
        check_template(tuf.index_target, allowed=("name",), required=("name",))
    except ValueError as exc:
        raise ConfigError(str(exc), source=source, key="tuf.index-target") from exc
    try:
        check_template(tuf.index_page, allowed=("name", "hash"), required=("name",))
    except ValueError as exc:
        raise ConfigError(str(exc), source=source, key="tuf.index-page") from exc
    if tuf.mode != TufMode.VERIFY:
        return
    if tuf.root is None:
        raise ConfigError(
            'required when mode = "verify": the path of the pinned bootstrap root.json',
            source=source,
            key="tuf.root",
        )
    from tuf.api.exceptions import RepositoryError
    from tuf.api.metadata import Metadata, Root

    try:
        data = tuf.root.read_bytes()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(
            f"cannot read the pinned root {tuf.root}: {reason}", source=source, key="tuf.root"
        ) from exc
    try:
        root = Metadata[Root].from_bytes(data)
        if root.signed.type != Root.type:
            raise ValueError(f"it is {root.signed.type} metadata")
        root.signed.verify_delegate(Root.type, root.signed_bytes, root.signatures)
    except (RepositoryError, ValueError) as exc:  # DeserializationError is a RepositoryError
        raise ConfigError(
            f"{tuf.root} is not a valid, self-signed TUF root.json: {exc}",
            source=source,
            key="tuf.root",
        ) from exc


@dataclass(frozen=True)
class BundleConfig:
    """``[bundle]``: air-gap bundles (``export``, ``import``)."""

    #: The Ed25519 private key ``export`` signs with (``pypi-mirror keygen``).
    signing_key: Path | None = field(default=None, metadata=_kind("optional_path"))
    #: The Ed25519 public keys ``import`` accepts a bundle from.
    trusted_keys: tuple[Path, ...] = field(default=(), metadata=_kind("pathlist"))


@dataclass(frozen=True)
class LogConfig:
    level: str = field(
        default="info", metadata=_kind("choice", choices=("debug", "info", "warning", "error"))
    )
    format: str = field(
        default="auto", metadata=_kind("choice", choices=("auto", "json", "console"))
    )


@dataclass(frozen=True)
class Config:
    storage: StorageConfig = StorageConfig()
    upstream: UpstreamConfig = UpstreamConfig()
    serve: ServeConfig = ServeConfig()
    cache: CacheConfig = CacheConfig()
    sync: SyncConfig = SyncConfig()
    tuf: TufConfig = TufConfig()
    log: LogConfig = LogConfig()
    bundle: BundleConfig = BundleConfig()
    source: str = "embedded defaults"
    #: The file it was read from (None: the embedded defaults).
    source_path: Path | None = None
    #: The ``PYPI_MIRROR_*`` environment variables that were applied (names only).
    environment: tuple[str, ...] = ()

    @property
    def origin(self) -> str:
        """Where this configuration came from: the file (or the embedded defaults) and the
        environment variables applied over it, by name (never their values)."""
        if not self.environment:
            return self.source
        return f"{self.source} + environment {', '.join(self.environment)}"


_SECTIONS: dict[str, type[Any]] = {
    "storage": StorageConfig,
    "upstream": UpstreamConfig,
    "serve": ServeConfig,
    "cache": CacheConfig,
    "sync": SyncConfig,
    "tuf": TufConfig,
    "log": LogConfig,
    "bundle": BundleConfig,
}


def split_listen(listen: str) -> tuple[str, int]:
    host, sep, port_text = listen.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"expected 'host:port', got {listen!r}")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} is out of range 0-65535")
    return host.strip("[]"), port


def _toml_key(field_name: str) -> str:
    return field_name.replace("_", "-")


def _convert(kind: str, value: object, meta: Mapping[str, Any], from_env: bool) -> object:
    if from_env and isinstance(value, str):
        value = _env_value(kind, value)
    if kind == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {value!r}")
        return value
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected an integer, got {value!r}")
        _check_range(value, meta)
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"expected a number, got {value!r}")
        _check_range(value, meta)
        return float(value)
    if kind == "size":
        return parse_size(value)
    if kind == "path":
        if not isinstance(value, str) or not value:
            raise ValueError(f"expected a path, got {value!r}")
        return Path(value).expanduser()
    if kind == "optional_path":  # "" = not set
        if not isinstance(value, str):
            raise ValueError(f'expected a path or "", got {value!r}')
        return Path(value).expanduser() if value else None
    if kind == "pathlist":
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ValueError(f"expected a list of paths, got {value!r}")
        return tuple(Path(v).expanduser() for v in value)
    if kind == "strlist":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"expected a list of strings, got {value!r}")
        allowed = meta.get("choices")
        if allowed is not None:
            for item in value:
                if item not in allowed:
                    raise ValueError(f"expected any of {', '.join(allowed)}, got {item!r}")
        return tuple(value)
    if kind == "url":
        return _check_url(value)
    if kind == "optional_url":
        return "" if value == "" else _check_url(value)
    if kind == "listen":
        if not isinstance(value, str):
            raise ValueError(f"expected 'host:port', got {value!r}")
        split_listen(value)
        return value
    if kind == "choice":
        choices: tuple[str, ...] = meta["choices"]
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {value!r}")
        return value
    if kind == "enum":
        return _enum_member(meta["enum"], value)
    if kind == "str":
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {value!r}")
        return value
    raise AssertionError(f"unknown config kind {kind}")


def _enum_member(cls: type[enum.StrEnum], value: object) -> enum.StrEnum:
    """The member of ``cls`` whose value is the string ``value`` (exactly: no other case)."""
    if isinstance(value, str):
        for member in cls:
            if member.value == value:
                return member
    choices = ", ".join(member.value for member in cls)
    raise ValueError(f"expected one of {choices}, got {value!r}")


def _check_range(value: float, meta: Mapping[str, Any]) -> None:
    minimum = meta.get("minimum")
    maximum = meta.get("maximum")
    if minimum is not None and value < minimum:
        raise ValueError(f"must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"must be at most {maximum}, got {value}")


def _check_url(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a URL, got {value!r}")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"the URL must not have a query or fragment, got {value!r}")
    return value if value.endswith("/") else value + "/"


def _env_value(kind: str, text: str) -> object:
    """Turn an environment variable's text into the type its key expects."""
    stripped = text.strip()
    if kind == "bool":
        lowered = stripped.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        return text
    if kind == "int":
        return int(stripped) if re.fullmatch(r"-?\d+", stripped) else text
    if kind == "float":
        try:
            return float(stripped)
        except ValueError:
            return text
    if kind == "size" and stripped.isdigit():
        return int(stripped)
    if kind in ("strlist", "pathlist"):
        if stripped.startswith("["):
            try:
                parsed: object = tomllib.loads(f"v = {stripped}")["v"]
            except tomllib.TOMLDecodeError:
                return text
            return parsed
        return [item.strip() for item in stripped.split(",") if item.strip()]
    return text


def _build_section(
    cls: type[Any],
    section: str,
    values: Mapping[str, object],
    source: str,
    env: Mapping[str, str],
) -> Any:
    fields = {_toml_key(f.name): f for f in dataclasses.fields(cls)}
    for key in values:
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(
                f"unknown key (known keys in [{section}]: {known})",
                source=source,
                key=f"{section}.{key}",
            )
    kwargs: dict[str, object] = {}
    for key, fld in fields.items():
        variable = env_name(section, key)
        if variable in env:
            raw: object = env[variable]
            where, from_env = f"environment variable {variable}", True
        elif key in values:
            raw, where, from_env = values[key], source, False
        else:
            continue
        try:
            kwargs[fld.name] = _convert(fld.metadata["kind"], raw, fld.metadata, from_env)
        except ValueError as exc:
            raise ConfigError(str(exc), source=where, key=f"{section}.{key}") from exc
    return cls(**kwargs)


def env_name(section: str, key: str) -> str:
    """``PYPI_MIRROR_<SECTION>_<KEY>`` of ``[section] key``."""
    return f"{ENV_PREFIX}{section.upper()}_{key.upper().replace('-', '_')}"


def known_env_names() -> list[str]:
    return [
        env_name(section, _toml_key(f.name))
        for section, cls in _SECTIONS.items()
        for f in dataclasses.fields(cls)
    ]


def _check_environment(env: Mapping[str, str]) -> tuple[str, ...]:
    """The ``PYPI_MIRROR_*`` variables of ``env`` that name a key, sorted; a ConfigError
    naming any other (with the closest known name): a typo must not be ignored."""
    known = known_env_names()
    unknown = []
    for name in sorted(env):
        if not name.upper().startswith(ENV_PREFIX) or name in known:
            continue
        # Compared without the prefix, which every name shares.
        tails = [k.removeprefix(ENV_PREFIX) for k in known]
        close = difflib.get_close_matches(name.upper()[len(ENV_PREFIX) :], tails, n=1)
        hint = (
            f"did you mean {ENV_PREFIX}{close[0]}?"
            if close
            else f"names are {ENV_PREFIX}<SECTION>_<KEY> for the keys of config.example.toml"
        )
        unknown.append(f"{name} ({hint})")
    if unknown:
        plural = "s" if len(unknown) > 1 else ""
        raise ConfigError(
            f"unknown environment variable{plural} {', '.join(unknown)}; correct or unset it"
        )
    return tuple(name for name in sorted(env) if name in known)


def config_from_mapping(
    data: Mapping[str, object], *, source: str, env: Mapping[str, str] | None = None
) -> Config:
    env = dict(os.environ) if env is None else env
    applied = _check_environment(env)
    for section, body in data.items():
        if section not in _SECTIONS:
            known = ", ".join(sorted(_SECTIONS))
            raise ConfigError(
                f"unknown section (known sections: {known})", source=source, key=section
            )
        if not isinstance(body, dict):
            raise ConfigError("expected a [section] table", source=source, key=section)
    sections = {
        name: _build_section(cls, name, _as_mapping(data.get(name, {})), source, env)
        for name, cls in _SECTIONS.items()
    }
    _check_tuf(sections["tuf"], source)
    if sections["sync"].mode == SyncMode.MIRROR and sections["cache"].max_size:
        raise ConfigError(
            'evicting files contradicts [sync] mode = "mirror", which must keep every file '
            'it lists; set [cache] max-size = 0 or use the default mode = "cache"',
            source=source,
            key="cache.max-size",
        )
    return Config(source=source, environment=applied, **sections)


def _as_mapping(value: object) -> Mapping[str, object]:
    assert isinstance(value, dict)
    return value


def load_config(path: Path | None, env: Mapping[str, str] | None = None) -> Config:
    """Read ``path`` (or the embedded defaults when None), then apply the environment."""
    if path is None:
        return config_from_mapping({}, source="embedded defaults", env=env)
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError("configuration file not found", source=source) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read configuration file: {exc}", source=source) from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}", source=source) from exc
    return dataclasses.replace(
        config_from_mapping(data, source=source, env=env), source_path=path.absolute()
    )
