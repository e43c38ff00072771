"""Air-gap bundles: ``export`` on a connected mirror, ``import`` on an offline one.

::

    sign.py       Ed25519 keys (``keygen``), signing and checking a manifest's digest
    manifest.py   the manifest: a header, then one JSON line per entry, project, removal,
                  volume; parsed with every path checked
    volumes.py    tar volumes written in one pass (size-capped), read back member by member
    state.py      what ``state/bundle/`` remembers (identity, last export, last import,
                  the import journal)
    export.py     ``export``: what changed since a serial (or the last export), streamed
    tufcheck.py   the bundle's TUF metadata verified with this host's pinned root
    importer.py   ``import``: check everything, then apply project by project
    commands.py   the CLI
"""
