"""``make bench``: ``python bench/run.py [--quick] [--phases pull,install,sync,scale]``.

Run from anywhere; the repository root is put on ``sys.path`` so that ``bench`` and
``tests.fakepypi`` import. See :mod:`bench.main`.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.main import main

if __name__ == "__main__":
    sys.exit(main())
