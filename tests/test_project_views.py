"""Every view of a project agrees: the simple pages (PEP 503 HTML, ``index.v1_html``, PEP 691
JSON), the JSON API (``/pypi/<p>/json``, ``/pypi/<p>/<v>/json``), the files and their
``.metadata`` obey the same ``[sync]`` filters, whichever path wrote them: a pull-through
miss in cache mode, a miss in mirror mode, the changelog follower of ``serve``, or
``pypi-mirror sync``. And the simple-page data kept for a project stays within 2x the
upstream's own pages."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp
import pytest

from tests.conftest import MirrorFactory, RunningMirror
from tests.fakepypi import FakePyPI, build_sdist, build_wheel
from tests.sync_helpers import run_sync, sync_config

JSON = "application/vnd.pypi.simple.v1+json"
HTML_V1 = "application/vnd.pypi.simple.v1+html"
SIMPLE_FORMATS = {"html": "text/html", "v1_html": HTML_V1, "json": JSON}
LINUX = "manylinux_2_17_x86_64"

# -- scenarios: one [sync] filter each, what upstream publishes, what the mirror keeps ------

#: (project, version, python tag, platform tag); "sdist" as python tag: an sdist.
Dist = tuple[str, str, str, str]


@dataclass(frozen=True)
class Scenario:
    """One ``[sync]`` filter, the projects published upstream, and what the mirror keeps."""

    name: str
    sync: dict[str, Any]
    dists: tuple[Dist, ...]
    excluded: tuple[str, ...]  #: projects the filter leaves out entirely
    kept: dict[str, frozenset[str]] = field(default_factory=dict)  #: project → filenames

    def publish(self, dist: Path, upstream: FakePyPI) -> None:
        """Build every distribution into ``dist`` and register it upstream."""
        for project, version, python_tag, platform in self.dists:
            if python_tag == "sdist":
                path = build_sdist(dist, project, version)
            else:
                abi = "none" if platform == "any" else python_tag
                path = build_wheel(
                    dist,
                    project,
                    version,
                    python_tag=python_tag,
                    abi_tag=abi,
                    platform_tag=platform,
                )
            upstream.add_file(project, path)


def pure(project: str, *versions: str, sdist: bool = False) -> tuple[Dist, ...]:
    """``py3-none-any`` wheels (and sdists) of ``project`` at ``versions``."""
    out = [(project, v, "py3", "any") for v in versions]
    out += [(project, v, "sdist", "") for v in versions if sdist]
    return tuple(out)


BLOCK = Scenario(
    name="block",
    sync={"block": ["blocked"]},
    dists=pure("blocked", "1.0", sdist=True) + pure("neighbour", "1.0"),
    excluded=("blocked",),
    kept={"neighbour": frozenset({"neighbour-1.0-py3-none-any.whl"})},
)
ALLOW = Scenario(
    name="allow",
    sync={"allow": ["keep-me", "pkg>=2"]},
    dists=(
        *pure("keep-me", "1.0"),
        *pure("other", "1.0"),
        *pure("pkg", "1.0", "2.0", "3.0", sdist=True),
    ),
    excluded=("other",),
    kept={
        "keep-me": frozenset({"keep_me-1.0-py3-none-any.whl"}),
        "pkg": frozenset(
            {
                "pkg-2.0-py3-none-any.whl",
                "pkg-2.0.tar.gz",
                "pkg-3.0-py3-none-any.whl",
                "pkg-3.0.tar.gz",
            }
        ),
    },
)
EXCLUDE_PLATFORMS = Scenario(
    name="exclude-platforms",
    sync={"exclude-platforms": ["windows"]},
    dists=(
        ("native", "1.0", "cp312", "win_amd64"),
        ("native", "1.0", "cp312", LINUX),
        ("native", "1.0", "sdist", ""),
        ("native", "2.0", "cp312", "win_amd64"),
        ("native", "2.0", "py3", "any"),
    ),
    excluded=(),
    kept={
        "native": frozenset(
            {
                f"native-1.0-cp312-cp312-{LINUX}.whl",
                "native-1.0.tar.gz",
                "native-2.0-py3-none-any.whl",
            }
        )
    },
)
KEEP_LATEST = Scenario(
    name="keep-latest",
    sync={"keep-latest": 1},
    dists=pure("many", "1.0", "2.0", "3.0", sdist=True),
    excluded=(),
    kept={"many": frozenset({"many-3.0-py3-none-any.whl", "many-3.0.tar.gz"})},
)


# -- modes: which path writes what the mirror serves --------------------------------------


async def start_mirror(
    mode: str, scenario: Scenario, tmp_path: Path, upstream: FakePyPI, make_mirror: MirrorFactory
) -> RunningMirror:
    """Publish the scenario upstream and start the mirror so that ``mode``'s path writes.

    - ``cache``: pull-through cache (``[sync] mode = "cache"``), no sync ever;
    - ``mirror-miss``: ``mode = "mirror"``, every view fetched through on a miss;
    - ``mirror-follower``: ``mode = "mirror"`` with ``interval``: ``serve`` syncs once;
    - ``mirror-synced``: ``pypi-mirror sync`` (in process), then ``serve`` in mirror mode.
    """
    scenario.publish(tmp_path / "dist", upstream)
    root = tmp_path / "mirror-data"
    if mode == "cache":
        return await make_mirror({"sync": scenario.sync})
    mirror_sync = {"mode": "mirror", **scenario.sync}
    if mode == "mirror-miss":
        return await make_mirror({"sync": mirror_sync})
    if mode == "mirror-synced":
        result = await run_sync(sync_config(upstream, root, sync=scenario.sync))
        assert result.ok, result
        return await make_mirror({"sync": mirror_sync}, storage=root)
    assert mode == "mirror-follower"
    mirror = await make_mirror({"sync": {**mirror_sync, "interval": 3600}})
    follower = mirror.services.follower
    assert follower is not None
    await asyncio.wait_for(follower.wait_rounds(1), 30)
    for project in scenario.kept:  # written by the follower's sync, not by a later miss
        assert (root / "web" / "simple" / project / "index.v1_json").is_file(), project
    return mirror


MODES = ("cache", "mirror-miss", "mirror-follower", "mirror-synced")


def cases(*scenarios: Scenario) -> pytest.MarkDecorator:
    """Parametrize over ``scenarios`` x every mode, with ids like ``block-cache``."""
    return pytest.mark.parametrize(
        ("mode", "scenario"),
        [pytest.param(m, s, id=f"{s.name}-{m}") for s in scenarios for m in MODES],
    )


# -- reading the views ---------------------------------------------------------------------


@dataclass
class View:
    """One answer of the mirror about a project: its status and the files it lists."""

    label: str
    status: int
    files: dict[str, tuple[str, str]] = field(default_factory=dict)  #: name → (path, sha256)
    versions: list[str] | None = None  #: PEP 700 ``versions``, or ``releases`` keys


class _Anchors(HTMLParser):
    """The (href, text) of every ``<a>`` of a PEP 503 page."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str]] = []  # (href, text)
        self._href: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._href = dict(attrs).get("href") or ""

    def handle_data(self, data: str) -> None:
        if self._href is not None and data.strip():
            self.links.append((self._href, data.strip()))
            self._href = None


def url_path(base: str, url: str) -> str:
    """The path on the mirror a (possibly relative) file URL points at."""
    return urlsplit(urljoin(base, url)).path


async def simple_view(mirror: RunningMirror, project: str, fmt: str) -> View:
    """``/simple/<project>/`` in ``fmt`` (a key of SIMPLE_FORMATS)."""
    label = f"/simple/{project}/ as {SIMPLE_FORMATS[fmt]}"
    path = f"/simple/{project}/"
    status, _headers, body = await mirror.get(path, headers={"Accept": SIMPLE_FORMATS[fmt]})
    view = View(label, status)
    if status != 200:
        return view
    base = mirror.url + path.lstrip("/")
    if fmt == "json":
        data = json.loads(body)
        view.versions = list(data.get("versions") or [])
        for f in data["files"]:
            view.files[f["filename"]] = (url_path(base, f["url"]), f["hashes"]["sha256"])
        return view
    parser = _Anchors()
    parser.feed(body.decode())
    for href, text in parser.links:
        url, _, fragment = href.partition("#")
        view.files[text] = (url_path(base, url), fragment.removeprefix("sha256="))
    return view


def _api_files(mirror: RunningMirror, files: list[dict[str, Any]]) -> dict[str, tuple[str, str]]:
    """JSON API file entries as filename → (path on the mirror, sha256)."""
    return {f["filename"]: (url_path(mirror.url, f["url"]), f["digests"]["sha256"]) for f in files}


async def api_views(mirror: RunningMirror, project: str, version: str | None = None) -> list[View]:
    """``/pypi/<p>/json`` as two views (``urls``, ``releases``) or ``/pypi/<p>/<v>/json``."""
    path = f"/pypi/{project}/json" if version is None else f"/pypi/{project}/{version}/json"
    status, _headers, body = await mirror.get(path)
    if status != 200:
        return [View(path, status)]
    data = json.loads(body)
    urls = View(f"{path} urls", status, _api_files(mirror, data["urls"]))
    if version is not None:
        return [urls]
    releases = View(f"{path} releases", status, versions=list(data["releases"]))
    for files in data["releases"].values():
        releases.files.update(_api_files(mirror, files))
    return [urls, releases]


@dataclass
class ProjectViews:
    """Every view of one project, read in one pass."""

    simple: list[View]
    api: list[View]  #: ``/pypi/<p>/json``: urls, releases (or one 404 view)
    by_version: dict[str, View]  #: ``/pypi/<p>/<v>/json`` urls, per upstream version

    def all(self) -> list[View]:
        return [*self.simple, *self.api, *self.by_version.values()]

    def listing(self) -> list[View]:
        """The views that list all of the project's files."""
        return [*self.simple, *(v for v in self.api if v.label.endswith("releases"))]


async def read_views(mirror: RunningMirror, upstream: FakePyPI, project: str) -> ProjectViews:
    """The JSON API first (cold, nothing else asked yet), then the simple pages."""
    versions = list(upstream.project(project).releases)
    api = await api_views(mirror, project)
    by_version = {v: (await api_views(mirror, project, v))[0] for v in versions}
    simple = [await simple_view(mirror, project, fmt) for fmt in SIMPLE_FORMATS]
    return ProjectViews(simple, api, by_version)


def version_of(upstream: FakePyPI, project: str, filename: str) -> str:
    """The release ``filename`` belongs to upstream."""
    return upstream.file(project, filename).version


def kept_versions(upstream: FakePyPI, scenario: Scenario, project: str) -> set[str]:
    """The versions that still have files once the scenario's filter applied."""
    return {version_of(upstream, project, name) for name in scenario.kept[project]}


async def status_of(mirror: RunningMirror, path: str) -> int:
    """The mirror's status for a GET of ``path``."""
    status, _headers, _body = await mirror.get(path)
    return status


# -- agreement of the views ----------------------------------------------------------------


@cases(BLOCK, ALLOW)
async def test_a_project_the_filters_exclude_is_404_on_every_view(
    mode: str, scenario: Scenario, tmp_path: Path, upstream: FakePyPI, make_mirror: MirrorFactory
) -> None:
    """An excluded project is 404 on every simple page, the JSON API (whole and per
    version), and its files and ``.metadata``: read cold (JSON API first), then again."""
    mirror = await start_mirror(mode, scenario, tmp_path, upstream, make_mirror)
    wrong: list[str] = []
    for project in scenario.excluded:
        for attempt in ("cold", "again"):
            views = await read_views(mirror, upstream, project)
            wrong += [f"{attempt}: {v.label} -> {v.status}" for v in views.all() if v.status != 404]
        for record in upstream.project(project).files():
            for path in (record.url_path, record.metadata_url_path):
                if (status := await status_of(mirror, path)) != 404:
                    wrong.append(f"{path} -> {status}")
    assert not wrong, f"[{mode}] excluded project served:\n" + "\n".join(wrong)


@cases(ALLOW, EXCLUDE_PLATFORMS, KEEP_LATEST)
async def test_every_view_lists_exactly_the_kept_files_and_dropped_files_are_404(
    mode: str, scenario: Scenario, tmp_path: Path, upstream: FakePyPI, make_mirror: MirrorFactory
) -> None:
    """Simple HTML, v1_html and JSON, the JSON API's ``releases`` list exactly the files the
    filters keep; ``urls`` (latest and per version) exactly those of their version; a
    dropped file's URL and its ``.metadata`` URL are 404."""
    mirror = await start_mirror(mode, scenario, tmp_path, upstream, make_mirror)
    wrong: list[str] = []
    for project, kept in scenario.kept.items():
        latest = max(kept_versions(upstream, scenario, project), key=_version_key)
        views = await read_views(mirror, upstream, project)
        expected: list[tuple[View, set[str]]] = [(v, set(kept)) for v in views.listing()]
        expected += [(v, _of_version(upstream, project, kept, latest)) for v in views.api[:1]]
        expected += [
            (v, _of_version(upstream, project, kept, version))
            for version, v in views.by_version.items()
            if version in kept_versions(upstream, scenario, project)
        ]
        for view, want in expected:
            if view.status != 200:
                wrong.append(f"{view.label} -> {view.status}")
            elif set(view.files) != want:
                extra, missing = sorted(set(view.files) - want), sorted(want - set(view.files))
                wrong.append(f"{view.label}: lists dropped {extra}, misses kept {missing}")
        for record in upstream.project(project).files():
            if record.filename in kept:
                continue
            paths = [record.url_path]
            if record.serve_metadata:
                paths.append(record.metadata_url_path)
            for path in paths:
                if (status := await status_of(mirror, path)) != 404:
                    wrong.append(f"dropped {path.rsplit('/', 1)[1]} -> {status}")
    assert not wrong, f"[{mode}] views disagree with the filters:\n" + "\n".join(wrong)


@cases(ALLOW, KEEP_LATEST)
async def test_a_dropped_version_is_absent_from_versions_and_releases_and_its_json_is_404(
    mode: str, scenario: Scenario, tmp_path: Path, upstream: FakePyPI, make_mirror: MirrorFactory
) -> None:
    """A version the filters drop is not in PEP 700 ``versions`` nor in ``releases``, and
    ``/pypi/<p>/<version>/json`` is 404; the kept versions are all there."""
    mirror = await start_mirror(mode, scenario, tmp_path, upstream, make_mirror)
    wrong: list[str] = []
    dropping = {
        project: set(upstream.project(project).releases)
        - kept_versions(upstream, scenario, project)
        for project in scenario.kept
    }
    assert any(dropping.values()), "the scenario must drop a version"
    for project, dropped in dropping.items():
        keep = kept_versions(upstream, scenario, project)
        views = await read_views(mirror, upstream, project)
        json_page = views.simple[-1]
        releases = next((v for v in views.api if v.label.endswith("releases")), views.api[0])
        for view in (json_page, releases):
            if view.status != 200 or view.versions is None:
                wrong.append(f"{view.label} -> {view.status}")
            elif set(view.versions) & dropped or not keep <= set(view.versions):
                wrong.append(f"{view.label}: versions {sorted(view.versions)}, kept {sorted(keep)}")
        for version in sorted(dropped):
            if (view := views.by_version[version]).status != 404:
                wrong.append(f"{view.label} -> {view.status} (version {version} is dropped)")
    assert not wrong, f"[{mode}] dropped versions still shown:\n" + "\n".join(wrong)


@cases(BLOCK, ALLOW, EXCLUDE_PLATFORMS, KEEP_LATEST)
async def test_every_file_any_view_lists_downloads_with_the_sha256_it_states(
    mode: str, scenario: Scenario, tmp_path: Path, upstream: FakePyPI, make_mirror: MirrorFactory
) -> None:
    """Each file URL a simple page or the JSON API lists answers 200 with the bytes whose
    sha256 that view states, and each wheel's ``.metadata`` answers 200."""
    mirror = await start_mirror(mode, scenario, tmp_path, upstream, make_mirror)
    stated: dict[str, set[tuple[str, str]]] = {}  # path → {(view, sha256)}
    for project in scenario.kept:
        views = await read_views(mirror, upstream, project)
        for view in views.all():
            for path, sha256 in view.files.values():
                stated.setdefault(path, set()).add((view.label, sha256))
    assert stated, "no view listed any file"
    wrong: list[str] = []
    for path, claims in sorted(stated.items()):
        status, _headers, body = await mirror.get(path)
        actual = hashlib.sha256(body).hexdigest()
        name = path.rsplit("/", 1)[1]
        for label, sha256 in sorted(claims):
            if status != 200:
                wrong.append(f"{label} lists {name}, which answers {status}")
            elif actual != sha256:
                wrong.append(f"{label} lists {name} with sha256 {sha256}, got {actual}")
        if path.endswith(".whl") and status == 200:
            meta_status = await status_of(mirror, path + ".metadata")
            if meta_status != 200:
                wrong.append(f"{name}.metadata -> {meta_status}")
    assert not wrong, f"[{mode}] listed files do not download as stated:\n" + "\n".join(wrong)


def _version_key(version: str) -> tuple[int, ...]:
    """Order of the scenarios' plain ``X.Y`` versions."""
    return tuple(int(part) for part in version.split("."))


def _of_version(upstream: FakePyPI, project: str, kept: frozenset[str], version: str) -> set[str]:
    """The kept filenames of one release."""
    return {name for name in kept if version_of(upstream, project, name) == version}


# -- page data size ------------------------------------------------------------------------

SIZE_PROJECT = "sizeable"
SIZE_VERSIONS = 150


@pytest.fixture(scope="module")
def sizeable_dists(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """150 versions x (wheel + sdist) of one project, built once for the module."""
    dist = tmp_path_factory.mktemp("sizeable")
    out: list[Path] = []
    for minor in range(SIZE_VERSIONS):
        version = f"1.{minor}"
        out.append(build_wheel(dist, SIZE_PROJECT, version))
        out.append(build_sdist(dist, SIZE_PROJECT, version))
    return out


def kept_page_bytes(root: Path, project: str) -> tuple[int, list[str]]:
    """Bytes of the simple-page data kept for ``project``: ``web/simple/<p>/`` and every
    file under ``state/`` (but ``state/pypi/``, the JSON API's) with a path component equal
    to ``<p>`` or starting with ``<p>.``; a hard-linked file counts once."""
    candidates = sorted((root / "web" / "simple" / project).rglob("*"))
    state = root / "state"
    for path in sorted(state.rglob("*")):
        parts = path.relative_to(state).parts
        if parts[0] != "pypi" and any(p == project or p.startswith(project + ".") for p in parts):
            candidates.append(path)
    seen: set[tuple[int, int]] = set()
    total, listing = 0, []
    for path in candidates:
        if not path.is_file():
            continue
        info = os.stat(path)
        if (info.st_dev, info.st_ino) in seen:
            continue
        seen.add((info.st_dev, info.st_ino))
        total += info.st_size
        listing.append(f"{path.relative_to(root)}: {info.st_size}")
    return total, listing


async def upstream_page_bytes(upstream: FakePyPI, project: str) -> int:
    """The upstream's own HTML plus JSON simple page for ``project``, uncompressed."""
    total = 0
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        for accept in ("text/html", JSON):
            headers = {"Accept": accept, "Accept-Encoding": "identity"}
            async with session.get(f"{upstream.url}simple/{project}/", headers=headers) as resp:
                assert resp.status == 200 and resp.content_type == accept
                total += len(await resp.read())
    return total


async def _pull_through(tmp_path: Path, upstream: FakePyPI, make_mirror: MirrorFactory) -> Path:
    """The cache-mode mirror's root after its page was asked for in every format."""
    mirror = await make_mirror()
    for accept in SIMPLE_FORMATS.values():
        status, _headers, body = await mirror.get(
            f"/simple/{SIZE_PROJECT}/", headers={"Accept": accept}
        )
        assert status == 200, body
    return mirror.root


async def _synced(tmp_path: Path, upstream: FakePyPI, make_mirror: MirrorFactory) -> Path:
    """A root written by one full sync (every file downloaded)."""
    root = tmp_path / "synced"
    config = sync_config(upstream, root, sync={"workers": 1, "file-workers": 16})
    result = await run_sync(config)
    assert result.ok and result.files == 2 * SIZE_VERSIONS, result
    return root


Writer = Callable[[Path, FakePyPI, MirrorFactory], Awaitable[Path]]


@pytest.mark.parametrize(
    ("label", "writer"),
    [
        pytest.param(name, fn, id=name)
        for name, fn in (("pull-through", _pull_through), ("sync", _synced))
    ],
)
async def test_simple_page_data_kept_is_at_most_twice_the_upstream_pages(
    label: str,
    writer: Writer,
    sizeable_dists: list[Path],
    tmp_path: Path,
    upstream: FakePyPI,
    make_mirror: MirrorFactory,
) -> None:
    """For a project with 300 files, every form of its simple page the mirror keeps (with
    ``.gz`` siblings and state copies, the JSON API apart) is at most 2x the bytes of the
    upstream's own HTML + JSON pages."""
    for path in sizeable_dists:
        upstream.add_file(SIZE_PROJECT, path)
    root = await writer(tmp_path, upstream, make_mirror)
    kept, listing = kept_page_bytes(root, SIZE_PROJECT)
    reference = await upstream_page_bytes(upstream, SIZE_PROJECT)
    ratio = kept / reference
    summary = (
        f"{label}: kept {kept} bytes, upstream HTML + JSON {reference} "
        f"bytes, ratio {ratio:.2f}x (limit 2x)"
    )
    print(summary)
    assert kept <= 2 * reference, summary + "\n" + "\n".join(listing)
