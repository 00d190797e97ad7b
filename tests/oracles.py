"""Test oracles: slow, obviously right references the tests pin the fast code to."""

from __future__ import annotations

from river import metrics, utils
import torch

from stream_learner.evaluation import (_STATE_VERSION, ArrayLike, _as_1d, _check_common_state,
                                       _check_window)


class RiverPrequentialAccuracy:
    """Reference implementation of :class:`PrequentialAccuracy` on top of river.

    Uses ``river.metrics.Accuracy`` for the cumulative value and
    ``river.utils.Rolling(river.metrics.Accuracy, window_size=window)`` for the
    rolling one, feeding them one event at a time. Slow, but obviously right;
    the tests use it to pin the vectorised class down.

    >>> m = RiverPrequentialAccuracy(window=2)
    >>> m.update([1, 1, 0], [1, 0, 0])
    >>> m.n, round(m.accuracy, 4), m.rolling_accuracy
    (3, 0.6667, 0.5)
    """

    def __init__(self, window: int = 1000) -> None:
        self.window = _check_window(window)
        self._reset()

    def _reset(self) -> None:
        self._n = 0
        self._cumulative = metrics.Accuracy()
        # Pass the class, not an instance: river 0.26 deprecates instances here.
        self._rolling = utils.Rolling(metrics.Accuracy, window_size=self.window)

    def update(self, y_true: ArrayLike, y_pred: ArrayLike) -> None:
        """Add one micro-batch (same contract as :meth:`PrequentialAccuracy.update`)."""
        t = _as_1d(y_true, "y_true")
        p = _as_1d(y_pred, "y_pred")
        if t.shape != p.shape:
            raise ValueError(f"y_true and y_pred differ in length: {t.shape[0]} != {p.shape[0]}")
        # tolist(): plain Python ints, so the river window holds picklable scalars.
        for yt, yp in zip(t.tolist(), p.tolist()):
            self._cumulative.update(yt, yp)
            self._rolling.update(yt, yp)
        self._n += t.shape[0]

    @property
    def accuracy(self) -> float:
        """Cumulative accuracy; 0.0 if nothing seen."""
        return float(self._cumulative.get())

    @property
    def rolling_accuracy(self) -> float:
        """Accuracy over the last ``window`` events; 0.0 if nothing seen."""
        return float(self._rolling.get())

    @property
    def n(self) -> int:
        """Number of events seen in total."""
        return self._n

    def state_dict(self) -> dict:
        """Checkpointable state: counts plus the last ``window`` (y_true, y_pred) pairs."""
        # Rolling.window is a deque of ((y_true, y_pred), kwargs) in arrival order.
        pairs = [args for args, _ in self._rolling.window]
        return {
            "version": _STATE_VERSION,
            "window": self.window,
            "n": self._n,
            "correct": int(round(self._cumulative.cm.total_true_positives)),
            "recent_true": torch.tensor([yt for yt, _ in pairs], dtype=torch.int64),
            "recent_pred": torch.tensor([yp for _, yp in pairs], dtype=torch.int64),
        }

    def load_state_dict(self, state: dict) -> None:
        """Rebuild the river metrics from a state produced by :meth:`state_dict`."""
        n, correct = _check_common_state(state, self.window)
        recent_true = _as_1d(state["recent_true"], "recent_true").tolist()
        recent_pred = _as_1d(state["recent_pred"], "recent_pred").tolist()
        if len(recent_true) != len(recent_pred) or len(recent_true) != min(n, self.window):
            raise ValueError("recent_true/recent_pred do not hold the last min(n, window) events")
        self._reset()
        self._n = n
        # Accuracy.get() is total_true_positives / total_weight, so two weighted
        # updates reproduce the cumulative value exactly (the weights are exact
        # integer floats) without replaying the whole history.
        if correct:
            self._cumulative.update(0, 0, w=float(correct))
        if n - correct:
            self._cumulative.update(0, 1, w=float(n - correct))
        # The rolling metric is rebuilt by replaying the stored window.
        for yt, yp in zip(recent_true, recent_pred):
            self._rolling.update(yt, yp)
