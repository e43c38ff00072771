"""``make bench``: ours measured against peers in the same run — pull-through, cold installs,
sync against bandersnatch, and a scale phase.

Run ``python bench/run.py --help`` for the knobs; :mod:`bench.main` has the overview.
"""
