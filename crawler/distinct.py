"""A compact set of 64-bit work hashes: how many distinct works a scroll has delivered.

A window's scroll may repeat works (across pages and within one page), and only the distinct
ones count against its `total-results`. A Python set costs ~70 bytes per work, 150 MB for a
2-million-work scroll (a busy index day); this costs 8 bytes per work: sorted arrays of
doubling sizes (a log-structured merge), each page's hashes sorted and merged in.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections.abc import Iterable
from heapq import merge


class DistinctSet:
    def __init__(self) -> None:
        self._runs: list[array] = []  # sorted, disjoint, sizes decreasing
        self.count = 0

    def __len__(self) -> int:
        return self.count

    def __contains__(self, value: int) -> bool:
        for run in self._runs:
            i = bisect_left(run, value)
            if i < len(run) and run[i] == value:
                return True
        return False

    def add_new(self, values: Iterable[int]) -> list[int]:
        """Add values; returns those that were not in the set before, each once, in order."""
        new: list[int] = []
        batch: set[int] = set()
        for value in values:
            if value not in batch and value not in self:
                batch.add(value)
                new.append(value)
        if new:
            run = array("q", sorted(new))
            while self._runs and len(self._runs[-1]) <= len(run):
                run = array("q", merge(self._runs.pop(), run))
            self._runs.append(run)
            self.count += len(new)
        return new
