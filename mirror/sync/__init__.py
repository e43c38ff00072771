"""The changelog sync: ``pypi-mirror sync`` and ``serve``'s changelog follower.

changelog/project list → plan (``core.changelog``) → per project: fetch, filter
(``core.filters``), download and verify (``cache.files``), render (``cache.pages``),
prune → root pages. Progress is journalled in ``state/sync/`` so a killed run resumes.
"""
