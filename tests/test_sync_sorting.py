"""The external sort behind the sync's plan and root rebuild: ordered output, bounded buffer,
whatever the names look like (PyPI has tens of thousands of names starting with "py")."""

from __future__ import annotations

import random
from pathlib import Path

from mirror.sorting import ExternalSorter


async def test_shared_prefix_names_sort_through_small_runs(tmp_path: Path) -> None:
    rng = random.Random(7)
    names = [f"py-project-{rng.randrange(10**6):06d}" for _ in range(5000)]
    records = [(name, None if i % 7 == 0 else i) for i, name in enumerate(names)]
    async with ExternalSorter(tmp_path, flush_at=100, fan_in=4) as sorter:
        for start in range(0, len(records), 333):
            await sorter.add(records[start : start + 333])
            assert len(sorter._buffer) < 100  # never more than one run's worth in memory
        out = [record async for batch in sorter.sorted() for record in batch]
        batch_sizes = [len(batch) async for batch in sorter.sorted()]
    assert [name for name, _ in out] == sorted(names)
    assert sorted(out, key=str) == sorted(records, key=str)
    assert max(batch_sizes, default=0) <= 1000
    assert list(tmp_path.iterdir()) == []  # runs removed
