"""Tests for stream_learner.evaluation.

The vectorised metrics are pinned to river: after every micro-batch they must
agree with RiverPrequentialAccuracy and with a plain per-event river loop
written out here, and checkpoints must survive torch.save/torch.load(weights_only=True).
"""

from __future__ import annotations

import doctest
import io
import math

import numpy as np
import pytest
import torch
from river import metrics, utils

from oracles import RiverPrequentialAccuracy
from stream_learner import evaluation
from stream_learner.checkpoint_codec import to_file, to_loop
from stream_learner.evaluation import PrequentialAccuracy, RollingMean

TOL = 1e-12
WINDOWS = [1, 7, 1000]
SEEDS = [0, 1, 2]


def make_stream(seed: int, window: int, n_batches: int = 60, n_classes: int = 4):
    """Random micro-batches whose sizes cover 0, 1, small, ==window and >window."""
    rng = np.random.default_rng(seed)
    sizes = [0, 1, 2, window - 1, window, window + 1, 2 * window + 3, 3]
    batches = []
    for i in range(n_batches):
        size = int(rng.choice(sizes)) if i % 3 else int(rng.integers(0, 2 * window + 5))
        size = max(size, 0)
        y_true = rng.integers(0, n_classes, size=size)
        # Bias towards correct predictions so accuracies are not all ~1/n_classes.
        y_pred = np.where(rng.random(size) < 0.6, y_true, rng.integers(0, n_classes, size=size))
        batches.append((y_true, y_pred))
    return batches


class DirectRiver:
    """The plainest possible river loop, independent of the module under test."""

    def __init__(self, window: int) -> None:
        self.cum = metrics.Accuracy()
        self.roll = utils.Rolling(metrics.Accuracy, window_size=window)
        self.n = 0

    def update(self, y_true, y_pred) -> None:
        self.n += len(y_true)
        for yt, yp in zip(np.asarray(y_true).tolist(), np.asarray(y_pred).tolist()):
            self.cum.update(yt, yp)
            self.roll.update(yt, yp)


def assert_agree(vec: PrequentialAccuracy, ref: RiverPrequentialAccuracy, direct: DirectRiver | None = None) -> None:
    assert vec.n == ref.n
    assert abs(vec.accuracy - ref.accuracy) < TOL
    assert abs(vec.rolling_accuracy - ref.rolling_accuracy) < TOL
    if direct is not None:
        assert abs(vec.accuracy - direct.cum.get()) < TOL
        assert abs(vec.rolling_accuracy - direct.roll.get()) < TOL
        assert vec.n == direct.n


def roundtrip(state: dict) -> dict:
    """Through a checkpoint file's path: the worker stores the loop's numpy arrays as
    tensors, loads them with ``weights_only`` and hands numpy back (checkpoint_codec)."""
    buf = io.BytesIO()
    torch.save(to_file(state), buf)
    buf.seek(0)
    return to_loop(torch.load(buf, weights_only=True))


@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize("seed", SEEDS)
def test_matches_river_after_every_batch(seed: int, window: int) -> None:
    vec, ref, direct = PrequentialAccuracy(window), RiverPrequentialAccuracy(window), DirectRiver(window)
    assert_agree(vec, ref, direct)  # empty state: all 0.0
    for y_true, y_pred in make_stream(seed, window):
        vec.update(y_true, y_pred)
        ref.update(y_true, y_pred)
        direct.update(y_true, y_pred)
        assert_agree(vec, ref, direct)


@pytest.mark.parametrize("window", WINDOWS)
def test_batch_size_one_stream(window: int) -> None:
    rng = np.random.default_rng(42)
    vec, direct = PrequentialAccuracy(window), DirectRiver(window)
    for _ in range(3 * min(window, 300) + 5):
        yt, yp = rng.integers(0, 2, size=1), rng.integers(0, 2, size=1)
        vec.update(yt, yp)
        direct.update(yt, yp)
        assert abs(vec.rolling_accuracy - direct.roll.get()) < TOL
        assert abs(vec.accuracy - direct.cum.get()) < TOL


def test_empty_metrics_are_zero() -> None:
    for cls in (PrequentialAccuracy, RiverPrequentialAccuracy):
        m = cls(window=5)
        m.update(np.array([], dtype=np.int64), np.array([], dtype=np.int64))
        assert (m.n, m.accuracy, m.rolling_accuracy) == (0, 0.0, 0.0)


def test_torch_and_list_inputs() -> None:
    vec, ref = PrequentialAccuracy(window=3), RiverPrequentialAccuracy(window=3)
    batches = [
        (torch.tensor([0, 1, 2]), torch.tensor([0, 1, 1])),
        ([3, 3], [3, 0]),
        (np.array([1], dtype=np.int32), torch.tensor([1])),
        (torch.tensor([], dtype=torch.long), torch.tensor([], dtype=torch.long)),
    ]
    for y_true, y_pred in batches:
        vec.update(y_true, y_pred)
        ref.update(y_true, y_pred)
        assert_agree(vec, ref)
    assert vec.n == 6 and vec.accuracy == 4 / 6 and vec.rolling_accuracy == 2 / 3


@pytest.mark.parametrize("cls", [PrequentialAccuracy, RiverPrequentialAccuracy])
def test_rejects_bad_input(cls) -> None:
    with pytest.raises(ValueError):
        cls(window=0)
    m = cls(window=4)
    with pytest.raises(ValueError):
        m.update(np.zeros(3, dtype=int), np.zeros(2, dtype=int))
    with pytest.raises(ValueError):
        m.update(np.zeros((2, 2), dtype=int), np.zeros((2, 2), dtype=int))
    with pytest.raises(ValueError):  # window mismatch on restore
        m.load_state_dict(cls(window=5).state_dict())


@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize("seed", SEEDS)
def test_state_dict_roundtrip_continues_identically(seed: int, window: int) -> None:
    batches = make_stream(seed + 100, window, n_batches=40)
    for cut in (0, 1, 5, 17, 39):  # includes "nothing seen yet"
        vec, ref = PrequentialAccuracy(window), RiverPrequentialAccuracy(window)
        for y_true, y_pred in batches[:cut]:
            vec.update(y_true, y_pred)
            ref.update(y_true, y_pred)

        vec_state, ref_state = roundtrip(vec.state_dict()), roundtrip(ref.state_dict())
        vec2, ref2 = PrequentialAccuracy(window), RiverPrequentialAccuracy(window)
        vec2.load_state_dict(vec_state)
        ref2.load_state_dict(ref_state)
        assert_agree(vec2, vec)
        assert_agree(vec2, ref2)

        for y_true, y_pred in batches[cut:]:
            for m in (vec, ref, vec2, ref2):
                m.update(y_true, y_pred)
            assert_agree(vec2, ref2)
            assert (vec2.n, vec2.accuracy, vec2.rolling_accuracy) == (vec.n, vec.accuracy, vec.rolling_accuracy)
            assert (ref2.n, ref2.accuracy, ref2.rolling_accuracy) == (ref.n, ref.accuracy, ref.rolling_accuracy)


def test_state_dict_holds_window_in_order_after_wraparound() -> None:
    vec = PrequentialAccuracy(window=4)
    vec.update(np.array([0, 0, 0]), np.array([0, 0, 0]))  # hits 1 1 1
    vec.update(np.array([0, 0, 0]), np.array([1, 1, 0]))  # hits 0 0 1 -> wraps
    state = vec.state_dict()
    assert state["recent_hits"].tolist() == [True, False, False, True]
    assert state["n"] == 6 and state["correct"] == 4
    ref = RiverPrequentialAccuracy(window=4)
    ref.update([0, 0, 0, 0, 0, 0], [0, 0, 0, 1, 1, 0])
    rstate = ref.state_dict()
    assert rstate["recent_pred"].tolist() == [0, 1, 1, 0] and rstate["correct"] == 4


def test_state_dict_is_a_snapshot() -> None:
    """Updating after state_dict() must not change an already-taken state."""
    vec = PrequentialAccuracy(window=10)
    vec.update(np.arange(3), np.arange(3))
    state = vec.state_dict()
    vec.update(np.arange(3), np.arange(3) + 1)
    assert state["recent_hits"].tolist() == [True, True, True]


def test_rolling_mean_matches_per_event_ema() -> None:
    rng = np.random.default_rng(7)
    half_life = 50.0
    decay = 0.5 ** (1 / half_life)
    rm = RollingMean(half_life=half_life)
    assert math.isnan(rm.value)
    s = norm = 0.0
    for _ in range(200):
        value, weight = float(rng.normal(1.0, 0.3)), int(rng.choice([0, 1, 3, 64, 500]))
        rm.update(value, weight)
        for _ in range(weight):  # per-event, bias-corrected EMA
            s = decay * s + (1 - decay) * value
            norm = decay * norm + (1 - decay)
        if norm:
            assert rm.value == pytest.approx(s / norm, rel=1e-9)
    first = RollingMean(half_life=10)
    first.update(3.5, weight=7)
    assert first.value == pytest.approx(3.5)
    with pytest.raises(ValueError):
        first.update(1.0, weight=-1)


def test_rolling_mean_state_roundtrip() -> None:
    a = RollingMean(half_life=20)
    for v, w in [(1.0, 8), (0.5, 3), (2.0, 40)]:
        a.update(v, w)
    b = RollingMean(half_life=20)
    b.load_state_dict(roundtrip(a.state_dict()))
    for v, w in [(0.1, 5), (0.2, 1)]:
        a.update(v, w)
        b.update(v, w)
        assert (a.value, a.n) == (b.value, b.n)
    with pytest.raises(ValueError):
        RollingMean(half_life=21).load_state_dict(a.state_dict())


def test_doctests() -> None:
    result = doctest.testmod(evaluation, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_vectorised_is_at_least_as_correct_on_a_long_stream() -> None:
    """Long stream, exact ground truth from numpy: the vectorised metric hits it
    exactly (and so does the river reference). Speed is measured elsewhere."""
    window, batch, n = 1000, 1000, 200_000
    rng = np.random.default_rng(123)
    y_true = rng.integers(0, 10, size=n)
    y_pred = np.where(rng.random(n) < 0.7, y_true, rng.integers(0, 10, size=n))
    vec, ref = PrequentialAccuracy(window), RiverPrequentialAccuracy(window)
    # Irregular batch boundaries so the ring buffer wraps at arbitrary offsets.
    bounds = np.unique(np.concatenate(([0, n], rng.integers(0, n, size=n // batch))))
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        vec.update(y_true[lo:hi], y_pred[lo:hi])
        ref.update(y_true[lo:hi], y_pred[lo:hi])
    hits = y_true == y_pred
    exact_cum = int(hits.sum()) / n
    exact_roll = int(hits[-window:].sum()) / window
    assert vec.n == n
    assert vec.accuracy == exact_cum and vec.rolling_accuracy == exact_roll
    assert abs(ref.accuracy - exact_cum) < TOL and abs(ref.rolling_accuracy - exact_roll) < TOL
