"""``make bench``: the pull-through cache measured against peers in the same run.

Run ``python bench/run.py --help`` for the knobs; :mod:`bench.main` has the overview.
"""
