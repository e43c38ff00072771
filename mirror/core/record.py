"""The small state records kept beside the web root (pure: values to and from bytes).

- ``PageMeta``: when a page (the root list, a JSON API answer) was fetched, its ETag and
  serial.
- ``ProjectRecord``: the same for a project page, plus the one thing its rendered page
  cannot give back: where upstream serves each file. A PyPI-shaped URL is
  ``<file_prefix><aa/bb/<60 hex>/<filename>>``, so only files whose URL is not of that
  shape are listed in ``urls``; for PyPI that list is empty and the record is a few
  hundred bytes whatever the size of the project.

Everything here is derived data: losing a record costs a page fetch, never a file.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from mirror.core.layout import PackagePath


@dataclass(frozen=True)
class PageMeta:
    fetched_at: float
    etag: str | None = None
    last_serial: int | None = None

    def dump(self) -> bytes:
        return json.dumps(dataclasses.asdict(self)).encode()

    @classmethod
    def load(cls, data: bytes) -> PageMeta | None:
        try:
            raw = json.loads(data)
            return cls(
                fetched_at=float(raw["fetched_at"]),
                etag=_opt_str(raw.get("etag")),
                last_serial=opt_int(raw.get("last_serial")),
            )
        except (ValueError, KeyError, TypeError):
            return None


@dataclass(frozen=True)
class JsonApiMeta:
    """A JSON API answer's freshness: it follows its project page's, so it records the
    ``fetched_at`` of the page it was cut to (None: fetch again at the next request), and
    the fingerprint of the filters that cut it."""

    etag: str | None
    page_fetched_at: float | None
    filters: str | None = None

    def dump(self) -> bytes:
        return json.dumps(dataclasses.asdict(self)).encode()

    @classmethod
    def load(cls, data: bytes) -> JsonApiMeta | None:
        try:
            raw = json.loads(data)
            made_for = raw["page_fetched_at"]
            return cls(
                etag=_opt_str(raw.get("etag")),
                page_fetched_at=None if made_for is None else float(made_for),
                filters=_opt_str(raw.get("filters")),
            )
        except (ValueError, KeyError, TypeError):
            return None


@dataclass(frozen=True)
class ProjectRecord:
    meta: PageMeta
    file_prefix: str | None = None
    urls: Mapping[str, str] = field(default_factory=dict)
    #: Fingerprint of the filters the page was cut with (another one: fetch it anew).
    filters: str | None = None

    @classmethod
    def for_files(
        cls, meta: PageMeta, files: Iterable[tuple[PackagePath, str]], *, filters: str | None
    ) -> ProjectRecord:
        """The record of a page whose kept files are ``(path, upstream URL)``."""
        pairs = list(files)
        prefixes = Counter(
            url[: -len(path.rel)] for path, url in pairs if url.endswith("/" + path.rel)
        )
        prefix = prefixes.most_common(1)[0][0] if prefixes else None
        urls = {path.rel: url for path, url in pairs if prefix is None or url != prefix + path.rel}
        return cls(meta, prefix, urls, filters)

    def upstream_url(self, path: PackagePath) -> str | None:
        url = self.urls.get(path.rel)
        if url is not None:
            return url
        return None if self.file_prefix is None else self.file_prefix + path.rel

    def refreshed(self, fetched_at: float) -> ProjectRecord:
        return dataclasses.replace(self, meta=dataclasses.replace(self.meta, fetched_at=fetched_at))

    def dump(self) -> bytes:
        doc = {
            **dataclasses.asdict(self.meta),
            "file_prefix": self.file_prefix,
            "filters": self.filters,
        }
        if self.urls:
            doc["urls"] = dict(self.urls)
        return json.dumps(doc, separators=(",", ":")).encode()

    @classmethod
    def load(cls, data: bytes) -> ProjectRecord | None:
        meta = PageMeta.load(data)
        if meta is None:
            return None
        try:
            raw = json.loads(data)
            urls = raw.get("urls", {})
            if not isinstance(urls, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in urls.items()
            ):
                return None
            return cls(meta, _opt_str(raw.get("file_prefix")), urls, _opt_str(raw.get("filters")))
        except (ValueError, TypeError):
            return None


def _opt_str(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"expected a string, got {value!r:.40}")


def opt_int(value: object) -> int | None:
    """An integer or None from decoded JSON (TypeError for anything else, bools too)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {value!r:.40}")
    return value
