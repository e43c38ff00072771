"""Prometheus metrics, one registry per app (no module-level singletons)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


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
        self.cache_bytes = Gauge(
            "pypi_mirror_cache_bytes", "Bytes held under web/packages", registry=self.registry
        )
        self.request_seconds = Histogram(
            "pypi_mirror_request_seconds", "Request duration", ["route"], registry=self.registry
        )
