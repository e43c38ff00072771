"""pip and uv install cached packages while the upstream is hung or refuses connections
and every cached page is past its ``index-ttl``: each page is answered within a few
seconds (``revalidate-timeout``, then the circuit breaker serves the rest at once), so the
install succeeds well inside the clients' own timeouts.

Before: a hung upstream cost 4 x ``[upstream] timeout`` per page (pip gave up after its
own 15 s), a refusing one three retries with backoff per page.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from mirror.cache.breaker import BreakerState
from mirror.server.keys import METRICS
from tests.conftest import MirrorFactory, RunningMirror
from tests.fakepypi import FakePyPI
from tests.test_e2e_clients import installed_version, pip_install, publish_corpus, uv_install

PAGE_ROUTE = "/simple/{project}/"


def page_answers(mirror: RunningMirror, within: float) -> tuple[float, float]:
    """How many project pages were answered, and how many of them within ``within`` s
    (a bucket bound of the request histogram)."""
    assert mirror.app is not None
    registry = mirror.app[METRICS].registry
    labels = {"route": PAGE_ROUTE}
    total = registry.get_sample_value("pypi_mirror_request_seconds_count", labels) or 0.0
    inside = registry.get_sample_value(
        "pypi_mirror_request_seconds_bucket", {**labels, "le": str(within)}
    )
    return total, inside or 0.0


@pytest.mark.parametrize("fault", ["hung", "refused"])
@pytest.mark.parametrize("client", ["pip", "uv"])
async def test_client_installs_cached_packages_with_stale_pages_and_a_broken_upstream(
    client: str, fault: str, tmp_path: Path, upstream: FakePyPI, make_mirror: MirrorFactory
) -> None:
    publish_corpus(tmp_path, upstream)
    install = pip_install if client == "pip" else uv_install
    # The set-up: pages always past their TTL, a long upstream timeout, retries.
    mirror = await make_mirror(
        {"serve": {"index-ttl": 0}, "upstream": {"timeout": 20.0, "retries": 3}}
    )
    code, out = await install(mirror, tmp_path / "warm", "e2e-app", "e2e-plain")
    assert code == 0, out
    # Hung: each page waits revalidate-timeout (2 s) until the breaker opens; refused: the
    # first failed attempt serves the stored page (the retries go on in the background).
    bound = 2.5 if fault == "hung" else 1.0
    before, _ = page_answers(mirror, bound)

    if fault == "hung":
        upstream.hang = True
    else:
        await upstream.stop()
    started = time.monotonic()
    code, out = await install(mirror, tmp_path / "venv", "e2e-app", "e2e-plain")
    took = time.monotonic() - started
    assert code == 0, out
    assert await installed_version(tmp_path / "venv", "e2e_dep") == "1.0"
    assert await installed_version(tmp_path / "venv", "e2e_plain") == "0.3"
    total, within = page_answers(mirror, bound)
    assert total > before, "the pages were asked for"
    assert within == total, f"every page answered within {bound} s"
    assert took < 15, took
    assert mirror.services.breaker.state is not BreakerState.CLOSED  # 3 failures in a row
