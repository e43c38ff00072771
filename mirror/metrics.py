"""Prometheus metrics, one registry per app (no module-level singletons).

With several ``serve`` workers, prometheus-client runs in its multiprocess mode (the
supervisor sets ``PROMETHEUS_MULTIPROC_DIR`` for them): every process writes its values to
files there, and ``exposition`` sums them whichever worker is asked.
"""

from __future__ import annotations

import glob
import os
import struct
from collections.abc import Iterable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.metrics_core import Metric

MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "pypi_mirror_requests",
            "HTTP requests served",
            ["route", "status"],
            registry=self.registry,
        )
        self.cache_results = Counter(
            "pypi_mirror_cache_results", "Cache results", ["kind", "result"], registry=self.registry
        )
        self.bytes_served = Counter(
            "pypi_mirror_served_bytes", "Response body bytes sent", registry=self.registry
        )
        self.upstream_downloads = Counter(
            "pypi_mirror_upstream_downloads",
            "Files downloaded from upstream",
            ["outcome"],
            registry=self.registry,
        )
        self.upstream_bytes = Counter(
            "pypi_mirror_upstream_bytes", "Bytes downloaded from upstream", registry=self.registry
        )
        self.integrity_failures = Counter(
            "pypi_mirror_integrity_failures",
            "Downloads rejected because length, digest or trust did not match",
            ["kind"],
            registry=self.registry,
        )
        self.evicted_files = Counter(
            "pypi_mirror_evicted_files",
            "Files evicted to keep the cache under max-size",
            registry=self.registry,
        )
        # Each process's share of the cache's size (mirror.cache.usage): the primary's walk
        # plus what each process committed and deleted since; their sum is the total.
        self.cache_bytes = Gauge(
            "pypi_mirror_cache_bytes",
            "Bytes held under web/packages (distribution files and their .metadata)",
            registry=self.registry,
            multiprocess_mode="sum",  # dead workers' shares stay: their files are still held
        )
        self.cache_files = Gauge(
            "pypi_mirror_cache_files",
            "Distribution files held (their .metadata not counted)",
            registry=self.registry,
            multiprocess_mode="sum",
        )
        self.cache_measured = Gauge(
            "pypi_mirror_cache_measured_timestamp_seconds",
            "When the last walk of the stored files finished (0: the size is not known yet)",
            registry=self.registry,
            multiprocess_mode="max",
        )
        self.breaker_open = Gauge(
            "pypi_mirror_upstream_breaker_open",
            "1 while the upstream circuit breaker is open (or probing): stored copies are "
            "served without asking upstream",
            registry=self.registry,
            multiprocess_mode="livemax",  # open in any live worker
        )
        self.breaker_openings = Counter(
            "pypi_mirror_upstream_breaker_openings",
            "Times the upstream circuit breaker opened after repeated upstream failures",
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "pypi_mirror_request_seconds", "Request duration", ["route"], registry=self.registry
        )
        # Label children by their labels: ``labels()`` locks and hashes on every call.
        self._children: dict[tuple[str, ...], Any] = {}

    def observe_request(self, route: str, status: int, seconds: float, sent: int) -> None:
        """The metrics of one answered request (the hot path: cached label children)."""
        key = (route, str(status))
        counter = self._children.get(key)
        if counter is None:
            counter = self._children[key] = self.requests.labels(route, str(status))
        counter.inc()
        timer = self._children.get((route,))
        if timer is None:
            timer = self._children[(route,)] = self.request_seconds.labels(route)
        timer.observe(seconds)
        if sent:
            self.bytes_served.inc(sent)

    def values(self, *file_prefixes: str) -> dict[str, float]:
        """Every sample as ``name{label="value",...}`` → value, summed over the workers
        as ``/metrics`` shows them. In multiprocess mode ``file_prefixes`` (e.g.
        ``"gauge_sum_"``) limit the read to those files of the metrics directory."""
        directory = os.environ.get(MULTIPROC_DIR_ENV)
        if directory:
            patterns = [f"{prefix}*.db" for prefix in file_prefixes] or ["*.db"]
            files = sorted({f for p in patterns for f in glob.glob(os.path.join(directory, p))})
            collected: Iterable[Metric] = merge_files(files)
        else:
            collected = self.registry.collect()
        out: dict[str, float] = {}
        for metric in collected:
            for sample in metric.samples:
                out[sample_key(sample.name, sample.labels)] = sample.value
        return out

    def exposition(self) -> bytes:
        """The text format of every metric, of all workers when there are several."""
        if os.environ.get(MULTIPROC_DIR_ENV):
            registry = CollectorRegistry()
            registry.register(_AllWorkers(os.environ[MULTIPROC_DIR_ENV]))
            return generate_latest(registry)
        return generate_latest(self.registry)


#: Bytes a metrics file has once its header is written (prometheus-client's mmap format).
_HEADER = 8


def merge_files(files: list[str]) -> list[Metric]:
    """The workers' metrics files summed, as prometheus-client's ``MultiProcessCollector``
    does — leaving out a file a worker is creating this instant (still empty) or one
    removed since it was listed (a worker that stopped), which would make it raise."""
    for _ in range(2):
        try:
            return list(multiprocess.MultiProcessCollector.merge(files))  # type: ignore[no-untyped-call]
        except (struct.error, FileNotFoundError):
            files = [f for f in files if _readable(f)]
    return list(multiprocess.MultiProcessCollector.merge(files))  # type: ignore[no-untyped-call]


def _readable(path: str) -> bool:
    try:
        return os.path.getsize(path) >= _HEADER
    except OSError:
        return False


class _AllWorkers:
    """A collector of every worker's metrics files in ``directory``."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def collect(self) -> Iterable[Metric]:
        return merge_files(glob.glob(os.path.join(self.directory, "*.db")))


def sample_key(name: str, labels: dict[str, str] | None = None) -> str:
    """``name{a="x",b="y"}`` (labels sorted), the keys of ``Metrics.values``."""
    if not labels:
        return name
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{name}{{{inner}}}"
