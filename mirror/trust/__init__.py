"""TUF (PEP 458): the upstream's signed metadata decides what the mirror stores and serves.

::

    base.py         the seam the caches use: Trust, TrustedTarget, TrustedPage, TrustState
    service.py      TufTrust (async): refresh policy, status, probe; writes to the store
    translate.py    python-tuf's exceptions as the mirror's (known types only)
    updater.py      TufCore (blocking, worker thread): ngclient Updater over state/tuf/
    fetcher.py      LoopFetcher: ngclient's downloads done by the mirror's UpstreamClient
    delegations.py  verifying a delegated role by name (for /tuf/ clients)
    publish.py      verified metadata copied verbatim to web/tuf/ (through the Storage seam)
    paths.py        pure helpers: hash names, metadata names, path templates

Storage (paths from :mod:`mirror.core.layout`): ``TUF_METADATA_DIR`` (ngclient's trusted
metadata, rollback protection across restarts; a real directory from
``Storage.local_path``, so verify mode needs a filesystem store), ``TUF_LOCK`` (one user of
that directory at a time, across processes: ``Storage.lock``), ``TUF_STATUS`` (the last
``status()``, for ``pypi-mirror status``), ``WEB_TUF`` (what ``/tuf/`` and nginx serve,
written only with ``Storage.write_bytes``).
"""
