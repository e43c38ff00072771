"""The changelog sync: ``pypi-mirror sync`` and ``serve``'s changelog follower.

changelog/project list → plan (``core.changelog``, ``sync.plan``) → journal → per project
``ProjectKeeper.update`` in ``FULL`` mode (fetch, filter, download and verify, render,
prune) → root pages. Progress is journalled in ``state/sync/`` so a killed run resumes.
"""
