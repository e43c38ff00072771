"""Pure helpers of the TUF layer: hash names, target paths and published metadata names.

No I/O here: these take strings and return strings.

* ``files`` scheme: a distribution file's target path is its path below ``/packages/``
  (``aa/bb/<60 hex>/<filename>``), exactly as PEP 458 and pip's prototype sign it.
* ``index`` scheme: a project's simple page is the target ``index-target`` (default
  ``{name}``, what Warehouse sends to RSTUF) and is fetched from ``index-url`` +
  ``index-page`` (default ``{name}/{hash}.{name}.html``, where Warehouse stores it), with
  ``{hash}`` the first digest the target lists (Warehouse lists only ``blake2b-256``).
* Metadata is flat with consistent snapshots: ``timestamp.json``, ``N.root.json``,
  ``N.snapshot.json``, ``N.targets.json``, ``N.<role>.json`` (role names URL-quoted, as
  ngclient requests them).
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Mapping
from urllib.parse import quote

#: TUF hash algorithm names (as they appear in targets metadata) → our names.
_HASH_NAMES = {
    "sha256": "sha256",
    "sha384": "sha384",
    "sha512": "sha512",
    "blake2b-256": "blake2b_256",
    "blake2b_256": "blake2b_256",
}
_HEX = re.compile(r"^[0-9a-f]+$")
_DIGEST_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128, "blake2b_256": 64}
_ROLE = r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}"
_METADATA_NAME = re.compile(rf"^(?:([1-9][0-9]{{0,18}})\.)?({_ROLE})\.json$")
_TOP_LEVEL = ("root", "timestamp", "snapshot", "targets")


def normalise_hashes(hashes: Mapping[str, str]) -> dict[str, str]:
    """The digests we can check, under our names; unknown algorithms are dropped.

    Raises ValueError when a known digest is malformed or none is left to check.
    """
    out: dict[str, str] = {}
    for algorithm, value in hashes.items():
        ours = _HASH_NAMES.get(algorithm.lower())
        if ours is None:
            continue
        value = value.lower()
        if len(value) != _DIGEST_LENGTHS[ours] or not _HEX.match(value):
            raise ValueError(f"malformed {algorithm} digest {value[:130]!r}")
        out[ours] = value
    if not out:
        known = ", ".join(sorted(set(_HASH_NAMES) - {"blake2b_256"}))
        raise ValueError(
            f"no digest this mirror can check (target lists {', '.join(hashes) or 'none'}; "
            f"supported: {known})"
        )
    return out


def template_fields(template: str) -> list[str]:
    """The ``{field}`` names used by a path template; ValueError for anything fancier."""
    names: list[str] = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"malformed template {template!r}: {exc}") from exc
    for _, field, spec, conversion in parsed:
        if field is None:
            continue
        if spec or conversion or not field.isidentifier():
            raise ValueError(f"template {template!r}: only plain {{name}} fields are allowed")
        names.append(field)
    return names


def check_template(template: str, allowed: Iterable[str], required: Iterable[str]) -> None:
    """ValueError unless ``template`` uses only ``allowed`` fields and all ``required`` ones."""
    fields = template_fields(template)
    allowed = set(allowed)
    for field in fields:
        if field not in allowed:
            raise ValueError(
                f"template {template!r} uses {{{field}}}; allowed: "
                + ", ".join(f"{{{a}}}" for a in sorted(allowed))
            )
    for field in required:
        if field not in fields:
            raise ValueError(f"template {template!r} must contain {{{field}}}")
    if template.startswith("/") or ".." in template.split("/"):
        raise ValueError(f"template {template!r} must be a relative path without '..'")


def fill(template: str, **values: str) -> str:
    """``template`` with its fields replaced (templates are checked at config load)."""
    return template.format(**values)


def metadata_name(role: str, version: int | None) -> str:
    """The file name of a role's metadata: ``N.<role>.json``, or ``<role>.json`` unversioned."""
    encoded = quote(role, "")
    return f"{encoded}.json" if version is None else f"{version}.{encoded}.json"


def parse_metadata_name(name: str) -> tuple[int | None, str] | None:
    """``(version, role)`` for a name a TUF client may request, or None.

    Accepted: ``timestamp.json`` and ``N.<role>.json`` for any other role (role names of
    letters, digits, ``.``, ``_`` and ``-``).
    """
    match = _METADATA_NAME.match(name)
    if match is None:
        return None
    version = int(match.group(1)) if match.group(1) else None
    role = match.group(2)
    if (version is None) != (role == "timestamp"):
        return None
    return version, role


def is_top_level(role: str) -> bool:
    return role in _TOP_LEVEL
