"""The join store: predictions waiting for a label that arrives later (docs/labels.md).

Keyed by event id. Time is Kafka record time (the producer's timestamp, in ms), never
the daemon's wall clock: a replay after ``kill -9`` or a restart after downtime then
decides every join exactly as the first pass did.

>>> s = JoinStore(window_s=10.0, max_pending=2)
>>> s.add("a", np.array([1.0, 2.0], np.float32), at_ms=0, seq=0)
[]
>>> s.take("a", now_ms=5_000)[0], s.take("a", now_ms=6_000)[0], s.take("b", now_ms=6_000)[0]
('joined', 'duplicate_label', 'unknown_id')
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from .arrays import as_numpy
from .events import DUPLICATE_LABEL, LABEL_EXPIRED, UNKNOWN_ID
from .labels import Label

JOINED = "joined"
JOIN_OUTCOMES: tuple[str, ...] = (JOINED, UNKNOWN_ID, DUPLICATE_LABEL, LABEL_EXPIRED)
JOIN_FAILURES: tuple[str, ...] = (UNKNOWN_ID, DUPLICATE_LABEL, LABEL_EXPIRED)

EXPIRED = "expired"        # its label did not come within labels.join_window_seconds
CAPACITY = "capacity"      # labels.max_pending predictions were waiting
REPLACED = "replaced"      # a newer features event came with the same id
EVICTION_REASONS: tuple[str, ...] = (EXPIRED, CAPACITY, REPLACED)

STATE_VERSION = 1


@dataclass
class Pending:
    """A features event waiting for its label."""

    x: np.ndarray               # raw float32 features, as decoded (see docs/labels.md)
    at_ms: int                  # Kafka record timestamp of the features event
    seq: int                    # events this daemon had consumed before it
    pred: Label | None = None   # the served prediction; filled when the worker answers


class JoinStore:
    """Pending predictions by id, plus what became of recent ids (for the DLQ reasons).

    ``_done`` remembers, for one more window, ids that joined (a second label is a
    duplicate) or were evicted (a late label is label_expired, not unknown_id); it is
    bounded by ``max_pending`` too, so memory is at most twice that many ids.
    """

    def __init__(self, window_s: float, max_pending: int) -> None:
        self.window_ms = int(window_s * 1000)
        self.max_pending = max_pending
        self._pending: OrderedDict[str, Pending] = OrderedDict()
        self._done: OrderedDict[str, tuple[str, int]] = OrderedDict()   # id -> (kind, ms)
        self.clock_ms = 0     # the latest record time seen

    def __len__(self) -> int:
        return len(self._pending)

    def __contains__(self, event_id: str) -> bool:
        return event_id in self._pending

    def add(self, event_id: str, x: np.ndarray, at_ms: int, seq: int) -> list[str]:
        """Keep a features event; returns the eviction reasons this caused."""
        evicted = self.advance(at_ms)
        if self._pending.pop(event_id, None) is not None:
            evicted.append(REPLACED)
        self._done.pop(event_id, None)
        self._pending[event_id] = Pending(x, at_ms, seq)
        while len(self._pending) > self.max_pending:
            old, entry = self._pending.popitem(last=False)
            self._remember(old, CAPACITY, entry.at_ms)
            evicted.append(CAPACITY)
        return evicted

    @property
    def width(self) -> int | None:
        """Features per kept event; None while none is kept."""
        return next(iter(self._pending.values())).x.shape[0] if self._pending else None

    def get(self, event_id: str) -> Pending:
        return self._pending[event_id]

    def take(self, event_id: str, now_ms: int) -> tuple[str, Pending | None]:
        """The outcome of a label for ``event_id`` at record time ``now_ms``."""
        entry = self._pending.pop(event_id, None)
        if entry is not None:
            if now_ms - entry.at_ms > self.window_ms:
                self._remember(event_id, EXPIRED, entry.at_ms)
                return LABEL_EXPIRED, None
            self._remember(event_id, JOINED, now_ms)
            return JOINED, entry
        done = self._done.get(event_id)
        if done is None:
            return UNKNOWN_ID, None
        return (DUPLICATE_LABEL if done[0] == JOINED else LABEL_EXPIRED), None

    def advance(self, now_ms: int) -> list[str]:
        """Move the record clock; evict what waited longer than the window."""
        if now_ms > self.clock_ms:
            self.clock_ms = now_ms
        cut = self.clock_ms - self.window_ms
        evicted: list[str] = []
        # Insertion order is record-time order within a partition; across partitions it
        # is nearly so, and take() checks the window itself, so a late sweep is harmless.
        while self._pending:
            event_id, entry = next(iter(self._pending.items()))
            if entry.at_ms >= cut:
                break
            del self._pending[event_id]
            self._remember(event_id, EXPIRED, entry.at_ms)
            evicted.append(EXPIRED)
        while self._done and next(iter(self._done.values()))[1] < cut - self.window_ms:
            self._done.popitem(last=False)
        return evicted

    def _remember(self, event_id: str, kind: str, at_ms: int) -> None:
        self._done.pop(event_id, None)
        self._done[event_id] = (kind, at_ms)
        while len(self._done) > self.max_pending:
            self._done.popitem(last=False)

    # -- checkpoint: plain lists and a numpy array (a tensor on disk), checked on load --
    def state_dict(self) -> dict[str, Any]:
        entries = list(self._pending.values())
        dim = entries[0].x.shape[0] if entries else 0
        x = np.stack([e.x for e in entries]) if entries else np.zeros((0, dim), np.float32)
        return {"version": STATE_VERSION, "clock_ms": self.clock_ms,
                "ids": list(self._pending), "x": x.astype(np.float32),
                "at_ms": [e.at_ms for e in entries], "seq": [e.seq for e in entries],
                "pred": [e.pred for e in entries],
                "done_ids": list(self._done), "done_kind": [k for k, _ in self._done.values()],
                "done_ms": [t for _, t in self._done.values()]}

    def load_state_dict(self, state: Any) -> None:
        """Replace the contents; ValueError naming what is wrong with a malformed state."""
        pending, done, clock = _parse_state(state)
        self._pending, self._done, self.clock_ms = pending, done, clock


def _parse_state(state: Any) -> tuple[OrderedDict[str, Pending],
                                      OrderedDict[str, tuple[str, int]], int]:
    def bad(why: str) -> ValueError:
        return ValueError(f"label join store: {why}")

    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise bad(f"not a version-{STATE_VERSION} store state")
    keys = ("clock_ms", "ids", "x", "at_ms", "seq", "pred", "done_ids", "done_kind", "done_ms")
    missing = [k for k in keys if k not in state]
    if missing:
        raise bad(f"missing {missing}")
    clock = state["clock_ms"]
    if type(clock) is not int:
        raise bad("clock_ms is not an int")
    ids, x = state["ids"], state["x"]
    lists = {k: state[k] for k in ("ids", "at_ms", "seq", "pred")}
    if not all(isinstance(v, list) for v in lists.values()):
        raise bad("ids, at_ms, seq and pred must be lists")
    n = len(ids)
    if any(len(v) != n for v in lists.values()):
        raise bad("ids, at_ms, seq and pred differ in length")
    # An array here, a tensor when read from a checkpoint file: never a list coerced.
    rows = as_numpy(x)
    if not (rows is not None and rows.dtype == np.float32 and rows.ndim == 2
            and rows.shape[0] == n):
        raise bad(f"x is not a float32 [{n}, n_features] tensor")
    if not bool(np.isfinite(rows).all()):
        raise bad("x holds non-finite features")
    if not all(isinstance(i, str) for i in ids) or len(set(ids)) != n:
        raise bad("ids are not unique strings")
    if not all(type(t) is int for t in lists["at_ms"] + lists["seq"]):
        raise bad("at_ms and seq must be ints")
    if not all(p is None or type(p) in (int, str) for p in lists["pred"]):
        raise bad("pred must be int, string or null labels")
    done_ids, kinds, times = state["done_ids"], state["done_kind"], state["done_ms"]
    if not (isinstance(done_ids, list) and isinstance(kinds, list) and isinstance(times, list)
            and len(done_ids) == len(kinds) == len(times)):
        raise bad("done_ids, done_kind and done_ms are not lists of one length")
    if not all(isinstance(i, str) for i in done_ids) or len(set(done_ids)) != len(done_ids):
        raise bad("done_ids are not unique strings")
    if not all(k in (JOINED,) + EVICTION_REASONS for k in kinds):
        raise bad(f"done_kind must be one of {(JOINED,) + EVICTION_REASONS}")
    if not all(type(t) is int for t in times):
        raise bad("done_ms must be ints")
    pending = OrderedDict((i, Pending(rows[k].copy(), lists["at_ms"][k], lists["seq"][k],
                                      lists["pred"][k])) for k, i in enumerate(ids))
    done = OrderedDict((i, (k, t)) for i, k, t in zip(done_ids, kinds, times))
    return pending, done, clock
