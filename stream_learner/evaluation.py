"""Streaming prequential ("test-then-train") metrics for micro-batches.

The learner sees events in micro-batches of predicted and true class indices.
At ~100k events/s a per-event Python loop such as river's ``metric.update`` is
the bottleneck, so :class:`PrequentialAccuracy` does the same bookkeeping with a
handful of numpy operations per *batch*.  The tests check it, bit for bit, against
a reference built directly on river (``tests/oracles.py``: both end up dividing two
exact integer counts).

:class:`RollingMean` is a tiny event-weighted exponential moving average for
per-batch losses.

All ``state_dict()`` results hold only ints, floats, lists and numpy arrays: the Kafka
loop imports this module and never torch. A checkpoint file stores the arrays as
tensors (:mod:`stream_learner.checkpoint_codec`), read back with
``torch.load(..., weights_only=True)``; ``load_state_dict`` takes either.

>>> import numpy as np
>>> acc = PrequentialAccuracy(window=3)
>>> acc.update(np.array([0, 1, 2, 2]), np.array([0, 1, 0, 0]))
>>> acc.accuracy, acc.rolling_accuracy, acc.n
(0.5, 0.3333333333333333, 4)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .arrays import as_numpy

__all__ = ["PrequentialAccuracy", "RollingMean"]

# Bumped if the layout of the state dicts below ever changes.
_STATE_VERSION = 1

ArrayLike = Any  # np.ndarray | torch.Tensor | Sequence[int]


def _as_1d(values: ArrayLike, name: str) -> np.ndarray:
    """Return ``values`` as a 1-D numpy array (torch tensors are moved to CPU)."""
    arr = as_numpy(values)
    if arr is None:
        arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    return arr


def _correctness(y_true: ArrayLike, y_pred: ArrayLike) -> np.ndarray:
    """Validate a batch and return its per-event hit vector (bool, 1-D)."""
    t = _as_1d(y_true, "y_true")
    p = _as_1d(y_pred, "y_pred")
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length: {t.shape[0]} != {p.shape[0]}")
    return np.asarray(t == p, dtype=bool)


def _check_window(window: int) -> int:
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 1:
        raise ValueError(f"window must be a positive int, got {window!r}")
    return int(window)


def _check_common_state(state: dict, window: int) -> tuple[int, int]:
    """Validate the fields both accuracy classes share; return ``(n, correct)``."""
    version = int(state.get("version", _STATE_VERSION))
    if version != _STATE_VERSION:
        raise ValueError(f"unsupported state version {version} (expected {_STATE_VERSION})")
    if int(state["window"]) != window:
        # Resizing would silently change what rolling_accuracy means, so refuse.
        raise ValueError(f"state was saved with window={int(state['window'])}, this metric has window={window}")
    n, correct = int(state["n"]), int(state["correct"])
    if not 0 <= correct <= n:
        raise ValueError(f"inconsistent counts: correct={correct}, n={n}")
    return n, correct


class PrequentialAccuracy:
    """Vectorised cumulative and rolling accuracy over a stream of micro-batches.

    ``rolling_accuracy`` has exactly the semantics of river's
    ``utils.Rolling(metrics.Accuracy, window_size=window)``: the accuracy over the
    last ``window`` events (over all events while fewer than ``window`` were seen).

    The last ``window`` hits (1 = correct) live in a boolean ring buffer alongside
    a running count of the ones in it, so each batch costs O(min(batch, window))
    numpy work and no per-event Python code.

    Args:
        window: Number of most recent events ``rolling_accuracy`` covers (>= 1).

    >>> import numpy as np
    >>> acc = PrequentialAccuracy(window=2)
    >>> acc.accuracy                       # nothing seen yet
    0.0
    >>> acc.update(np.array([1, 1, 0]), np.array([1, 0, 0]))
    >>> acc.update(np.array([], dtype=int), np.array([], dtype=int))   # empty batches are fine
    >>> acc.n, round(acc.accuracy, 4), acc.rolling_accuracy
    (3, 0.6667, 0.5)
    >>> restored = PrequentialAccuracy(window=2)
    >>> restored.load_state_dict(acc.state_dict())
    >>> restored.rolling_accuracy == acc.rolling_accuracy
    True
    """

    def __init__(self, window: int = 1000) -> None:
        self.window = _check_window(window)
        self._reset()

    def _reset(self) -> None:
        self._n = 0  # events seen in total
        self._correct = 0  # correct events seen in total
        # Ring buffer of the last `window` hits. Slots not yet written are False,
        # so the "subtract what gets overwritten" bookkeeping needs no special
        # case while the buffer is still filling up.
        self._ring = np.zeros(self.window, dtype=bool)
        self._pos = 0  # next slot to write == oldest slot once the buffer is full
        self._filled = 0  # min(n, window)
        self._ring_correct = 0  # number of True entries in _ring

    def update(self, y_true: ArrayLike, y_pred: ArrayLike) -> None:
        """Add one micro-batch of true and predicted class indices.

        Args:
            y_true: 1-D integer array (numpy or torch) of true labels.
            y_pred: 1-D integer array of predicted labels, same length; may be empty.
        """
        hits = _correctness(y_true, y_pred)
        m = hits.shape[0]
        if m == 0:
            return
        # Python ints: no overflow, and true division later is correctly rounded.
        self._n += m
        self._correct += int(np.count_nonzero(hits))

        w = self.window
        if m >= w:
            # Only the last `window` events survive; store them oldest-first from
            # slot 0 so that _pos == 0 again points at the oldest entry.
            tail = hits[m - w :]
            self._ring[:] = tail
            self._pos = 0
            self._filled = w
            self._ring_correct = int(np.count_nonzero(tail))
            return

        # m < w: overwrite m slots starting at _pos, wrapping at most once, i.e.
        # at most two slice assignments. Keep the running count exact by removing
        # the hits that are overwritten before adding the new ones.
        ring, pos = self._ring, self._pos
        end = pos + m
        if end <= w:
            self._ring_correct -= int(np.count_nonzero(ring[pos:end]))
            ring[pos:end] = hits
        else:
            first = w - pos
            rest = m - first
            self._ring_correct -= int(np.count_nonzero(ring[pos:])) + int(np.count_nonzero(ring[:rest]))
            ring[pos:] = hits[:first]
            ring[:rest] = hits[first:]
        self._ring_correct += int(np.count_nonzero(hits))
        self._pos = end % w
        self._filled = min(self._filled + m, w)

    @property
    def accuracy(self) -> float:
        """Fraction of correct events since the start (or the restored state); 0.0 if none."""
        return self._correct / self._n if self._n else 0.0

    @property
    def rolling_accuracy(self) -> float:
        """Fraction of correct events among the last ``window`` events; 0.0 if none."""
        return self._ring_correct / self._filled if self._filled else 0.0

    @property
    def n(self) -> int:
        """Number of events seen in total."""
        return self._n

    def _recent_hits(self) -> np.ndarray:
        """The last ``min(n, window)`` hits, oldest first (always a fresh copy)."""
        if self._filled < self.window:
            # Still filling: writes started at slot 0 and never wrapped.
            return self._ring[: self._filled].copy()
        return np.concatenate((self._ring[self._pos :], self._ring[: self._pos]))

    def state_dict(self) -> dict:
        """Checkpointable state (plain data; see the module docstring).

        ``recent_hits`` is a bool array of the last ``min(n, window)`` hits in
        chronological order, so the layout does not depend on the ring position.
        """
        return {
            "version": _STATE_VERSION,
            "window": self.window,
            "n": self._n,
            "correct": self._correct,
            "recent_hits": self._recent_hits(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a state produced by :meth:`state_dict` (same ``window`` required)."""
        n, correct = _check_common_state(state, self.window)
        hits = _as_1d(state["recent_hits"], "recent_hits").astype(bool)
        if hits.shape[0] != min(n, self.window):
            raise ValueError(f"recent_hits has {hits.shape[0]} entries, expected {min(n, self.window)}")
        self._reset()
        self._n, self._correct = n, correct
        # Lay the hits out from slot 0, exactly as a fresh buffer would hold them.
        k = hits.shape[0]
        self._ring[:k] = hits
        self._filled = k
        self._pos = k % self.window
        self._ring_correct = int(np.count_nonzero(hits))


class RollingMean:
    """Event-weighted exponential moving average of per-batch values (e.g. losses).

    ``update(value, weight)`` counts as ``weight`` events that all had ``value``,
    i.e. it is the same as ``weight`` per-event EMA steps with decay
    ``0.5 ** (1 / half_life)``, done in O(1). The average is bias-corrected
    (normalised by the total decayed weight), so the first batch is reported as-is
    instead of being pulled towards an arbitrary starting value.

    Args:
        half_life: Number of events after which an observation's weight halves.

    >>> loss = RollingMean(half_life=100)
    >>> loss.update(2.0, weight=32)
    >>> loss.value
    2.0
    >>> loss.update(1.0, weight=100)       # 100 newer events: old batch weighs less
    >>> 1.0 < loss.value < 1.5
    True
    """

    def __init__(self, half_life: float = 1000.0) -> None:
        if not half_life > 0:
            raise ValueError(f"half_life must be > 0, got {half_life!r}")
        self.half_life = float(half_life)
        self._decay = 0.5 ** (1.0 / self.half_life)  # per-event decay factor
        self._sum = 0.0  # decayed sum of weight * value
        self._norm = 0.0  # decayed sum of weights (bias correction)
        self._n = 0

    def update(self, value: float, weight: int = 1) -> None:
        """Add a batch whose mean is ``value`` and that contained ``weight`` events."""
        if weight < 0:
            raise ValueError(f"weight must be >= 0, got {weight!r}")
        if weight == 0:
            return
        d = self._decay**weight
        # (1 - d) is the total fresh weight of `weight` events under the per-event
        # EMA: sum_{i<weight} (1 - decay) * decay**i.
        self._sum = d * self._sum + (1.0 - d) * float(value)
        self._norm = d * self._norm + (1.0 - d)
        self._n += int(weight)

    @property
    def value(self) -> float:
        """Current average; ``nan`` before any update (0.0 would look like a perfect loss)."""
        return self._sum / self._norm if self._norm > 0.0 else math.nan

    @property
    def n(self) -> int:
        """Total weight (events) seen."""
        return self._n

    def state_dict(self) -> dict:
        """Checkpointable state (plain floats/ints)."""
        return {"version": _STATE_VERSION, "half_life": self.half_life, "sum": self._sum, "norm": self._norm, "n": self._n}

    def load_state_dict(self, state: dict) -> None:
        """Restore a state produced by :meth:`state_dict` (same ``half_life`` required)."""
        if float(state["half_life"]) != self.half_life:
            raise ValueError(f"state was saved with half_life={state['half_life']}, this has {self.half_life}")
        self._sum, self._norm, self._n = float(state["sum"]), float(state["norm"]), int(state["n"])
