"""TUF (PEP 458): the upstream's signed metadata decides what the mirror stores and serves.

::

    base.py         the seam the caches use: Trust, TrustedTarget, TrustedPage
    service.py      TufTrust (async): refresh policy, error translation, status, probe
    updater.py      TufCore (blocking, worker thread): ngclient Updater over state/tuf/
    fetcher.py      LoopFetcher: ngclient's downloads done by the mirror's UpstreamClient
    delegations.py  verifying a delegated role by name (for /tuf/ clients)
    publish.py      verified metadata copied verbatim to web/tuf/
    paths.py        pure helpers: hash names, metadata names, path templates

Storage: ``state/tuf/metadata/`` (ngclient's trusted metadata: rollback protection across
restarts), ``state/tuf/lock`` (one user of that directory at a time, across processes),
``web/tuf/`` (what ``/tuf/`` and nginx serve).
"""
