"""Per-shard books of one epoch: which staged rows arrived, and which are lost.

The client does not keep the URL list.  It knows each staged shard's number
of rows, and every element carries its ``(shard, row)`` in its tag
(:mod:`tfeed.service.staging`).  A shard is *open* from its first arrival
until all its rows arrived; only open shards hold a bitmap (one byte per row,
at most 32 KB each; how many are open at once depends on the workers' read
interleave and shuffle buffer, not on the list).  A URL is **lost** when its
shard's job ended (or stalled) without its row: the shard file is then read
back to name each missing URL.  Memory: O(open shards x rows per shard).
"""

from __future__ import annotations

import logging
from typing import Dict, Iterator, List, Tuple

import numpy as np

from tfeed.service.staging import read_shard

_log = logging.getLogger("tfeed.service")


class ShardLedger:
    """Arrivals of one epoch's rows, shard by shard."""

    def __init__(self):
        self._open: Dict[int, np.ndarray] = {}
        self._counts: Dict[int, int] = {}
        self._complete: set = set()
        self._lengths: Dict[int, int] = {}

    def expect(self, shard: int, rows: int) -> None:
        """Shard ``shard`` was staged with ``rows`` rows (call before its job starts)."""
        self._lengths[shard] = rows

    def arrived(self, shards: np.ndarray, rows: np.ndarray) -> int:
        """Record arrivals; returns how many were duplicates (already arrived)."""
        duplicates = 0
        for shard, row in zip(shards.tolist(), rows.tolist()):
            if shard in self._complete:
                duplicates += 1
                continue
            seen = self._open.get(shard)
            if seen is None:
                seen = self._open[shard] = np.zeros(self._lengths.get(shard, row + 1), np.bool_)
                self._counts[shard] = 0
            if row >= len(seen) or seen[row]:
                duplicates += 1
                continue
            seen[row] = True
            self._counts[shard] += 1
            if self._counts[shard] == len(seen):
                self._complete.add(shard)
                del self._open[shard], self._counts[shard]
        return duplicates

    def missing(self, shards: List[Tuple[int, str]]) -> int:
        """How many rows of ``[(shard, path)]`` have not arrived."""
        return sum(self._lengths[shard] - self._counts.get(shard, 0)
                   for shard, _ in shards if shard not in self._complete)

    def missing_urls(self, shards: List[Tuple[int, str]]) -> Iterator[str]:
        """The URLs of ``[(shard, path)]`` that did not arrive (reads those shard files back)."""
        for shard, path in shards:
            if shard in self._complete:
                continue
            seen = self._open.get(shard)
            for row, url in read_shard(path):
                if seen is None or not seen[row]:
                    yield url

    def open_shards(self) -> int:
        return len(self._open)
