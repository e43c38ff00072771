"""A real local upstream that plays PyPI in tests, and builders for tiny real distributions.

Usage::

    async with running_upstream() as pypi:
        wheel = build_wheel(tmp_path, "demo", "1.0")
        pypi.add_file("demo", wheel)
        ...  # point the mirror at pypi.url ("http://127.0.0.1:PORT/")
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from .builders import build_sdist, build_wheel, escape_name, sdist_metadata, wheel_metadata
from .model import STATUSES, ChangelogRow, FileRecord, Project, Release
from .render import negotiate
from .server import FakePyPI

__all__ = [
    "STATUSES",
    "ChangelogRow",
    "FakePyPI",
    "FileRecord",
    "Project",
    "Release",
    "build_sdist",
    "build_wheel",
    "escape_name",
    "negotiate",
    "running_upstream",
    "sdist_metadata",
    "wheel_metadata",
]


@contextlib.asynccontextmanager
async def running_upstream(
    fake: FakePyPI | None = None, *, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[FakePyPI]:
    """Start ``fake`` (or a new, empty FakePyPI) on ``host`` and a free port (or ``port``),
    yield it with ``.url`` set, and stop it on exit."""
    pypi = fake if fake is not None else FakePyPI(host=host, port=port)
    await pypi.start()
    try:
        yield pypi
    finally:
        await pypi.stop()
