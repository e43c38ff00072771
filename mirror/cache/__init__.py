"""Pull-through: what a cache adds in front of the ``ProjectKeeper`` — TTLs, the negative
cache, single flight, stale-if-error, eviction, and the upstream's root list."""
