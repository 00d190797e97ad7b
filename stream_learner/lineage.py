"""Which offsets this model has processed: per partition, merged ``[start, end)`` ranges.

Counters say *how many* events a checkpoint covers; a skip on one partition and a
duplicate on another cancel out in them.  The lineage says *which*: it travels in the
checkpoint with the model, so a restarted daemon holds exactly the ranges its restored
model learned, and a test (or an operator) can check that every offset of a partition
was processed once across the replicas' final checkpoints.  A range that overlaps what
the lineage holds means an event processed twice by the same model: it is logged.

>>> lin = Lineage()
>>> lin.add("t", 0, 0, 100), lin.add("t", 0, 100, 250), lin.add("t", 1, 40, 60)
(True, True, True)
>>> lin.ranges("t", 0), lin.add("t", 0, 200, 300), lin.ranges("t", 0)
([(0, 250)], False, [(0, 300)])
>>> lin.add("t", 1, 0, 100), lin.overlapping_events     # 50 (200-249) + 20 (40-59)
(False, 70)
"""

from __future__ import annotations

import bisect
import logging
from typing import Any, Iterable

log = logging.getLogger(__name__)

MAX_RANGES = 1024   # per partition; beyond it the two oldest merge (a gap is forgotten)


class Lineage:
    def __init__(self) -> None:
        self._ranges: dict[tuple[str, int], list[tuple[int, int]]] = {}
        self.overlapping_events = 0          # processed again by this model (should be 0)

    def add(self, topic: str, partition: int, start: int, end: int) -> bool:
        """Record ``[start, end)``; False when part of it was already in the lineage."""
        ranges = self._ranges.setdefault((topic, partition), [])
        i = bisect.bisect_left(ranges, (start, end))
        overlap = 0
        for s, e in ranges[max(i - 1, 0):]:       # disjoint and sorted
            if s >= end:
                break
            overlap += max(0, min(e, end) - max(s, start))
        ranges.insert(i, (start, end))
        self._merge(ranges)
        if overlap:
            self.overlapping_events += overlap
            log.warning("%s[%d] offsets %d-%d: %d already processed by this model (replayed "
                        "behind its own checkpoint)", topic, partition, start, end - 1, overlap)
        return overlap == 0

    def add_offsets(self, topic: str, partition: int, offsets: Iterable[int]) -> None:
        """Record a batch's offsets of one partition (consecutive runs become ranges)."""
        ordered = sorted(offsets)
        if ordered[-1] - ordered[0] + 1 == len(ordered):    # the usual case: no gaps
            self.add(topic, partition, ordered[0], ordered[-1] + 1)
            return
        start = prev = ordered[0]
        for off in ordered[1:]:
            if off != prev + 1:
                self.add(topic, partition, start, prev + 1)
                start = off
            prev = off
        self.add(topic, partition, start, prev + 1)

    @staticmethod
    def _merge(ranges: list[tuple[int, int]]) -> None:
        merged: list[tuple[int, int]] = []
        for s, e in ranges:
            if merged and s <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], e))
            else:
                merged.append((s, e))
        while len(merged) > MAX_RANGES:
            (s0, _), (_, e1) = merged[0], merged[1]
            merged[0:2] = [(s0, e1)]
        ranges[:] = merged

    def ranges(self, topic: str, partition: int) -> list[tuple[int, int]]:
        return list(self._ranges.get((topic, partition), []))

    def state_dict(self) -> dict[str, Any]:
        out: dict[str, dict[int, list[list[int]]]] = {}
        for (topic, partition), ranges in sorted(self._ranges.items()):
            out.setdefault(topic, {})[partition] = [[s, e] for s, e in ranges]
        return {"ranges": out, "overlapping_events": self.overlapping_events}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._ranges = {(str(topic), int(p)): [(int(s), int(e)) for s, e in ranges]
                        for topic, parts in state["ranges"].items()
                        for p, ranges in parts.items()}
        self.overlapping_events = int(state.get("overlapping_events", 0))
