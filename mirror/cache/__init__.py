"""Pull-through: what a cache adds in front of the ``ProjectKeeper`` — TTLs, the negative
cache, single flight with bounded waits (``flights``), stale-if-error and
stale-while-revalidate, the upstream circuit breaker (``breaker``), eviction, and the
upstream's root list."""
