"""``avalanche:<Name>`` strategies: they learn, survive a checkpoint, and take new classes.

Each supported Avalanche strategy runs inside a real :class:`Learner` on a separable
stream: three classes first, then ten (the class head outgrows its 8 rows, so the model's
head and the optimiser are replaced under the strategy). Its state goes through
:class:`CheckpointStore` (``torch.load(weights_only=True)``) into a fresh learner, which
must predict identically and continue bit-identically on the same data.

The properties every strategy shares (protocol, plain-data state, checkpoint and
empty-state restore, determinism, non-finite steps skipped and counted) are checked for
every ``avalanche:<Name>`` by ``test_strategies_conformance.py``, not repeated here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from stream_learner.checkpoint import CheckpointStore
from stream_learner.config import Settings
from stream_learner.learner import Learner
from stream_learner.strategies import Strategy
from stream_learner.strategies.avalanche_backend import SUPPORTED, build

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ATOMS = (torch.Tensor, bool, int, float, str, type(None))
D, N_CLASSES = 6, 10
CENTERS = np.random.default_rng(11).normal(scale=4.0, size=(N_CLASSES, D)).astype("float32")


def _settings(name: str) -> Settings:
    # MER takes one optimiser step per event per inner step: keep it small.
    mer = name == "MER"
    return Settings(strategy={"name": "replay"},
                    model={"device": "cpu", "hidden": (32, 32), "step_size": 16 if mer else 32,
                           "max_step_size": 16 if mer else 32,
                           "warmup_events": 0, "seed": 5},
                    replay={"capacity": 120, "batch_size": 4 if mer else 16},
                    mer={"inner_steps": 1})


def _learner(name: str) -> Learner:
    settings = _settings(name)
    learner = Learner(settings)
    learner.strategy = build(settings, learner, name)
    return learner


def _batch(rng: np.random.Generator, classes: int, n: int) -> tuple[np.ndarray, list[str]]:
    y = rng.integers(0, classes, n)
    x = CENTERS[y] + rng.normal(scale=0.7, size=(n, D)).astype("float32")
    return x, [f"c{c}" for c in y]


def _accuracy(learner: Learner, x: np.ndarray, y: list[str]) -> float:
    return float(np.mean([p == t for p, t in zip(learner.predict(x)[0], y)]))


def _assert_plain(obj: object, path: str = "state") -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            assert isinstance(k, (str, int)), f"{path}: key {k!r}"
            _assert_plain(v, f"{path}.{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _assert_plain(v, f"{path}[{i}]")
    else:
        assert isinstance(obj, ATOMS), f"{path} is a {type(obj).__name__}"


@pytest.mark.parametrize("name", SUPPORTED)
def test_learns_checkpoints_and_grows(name: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    learner = _learner(name)
    assert isinstance(learner.strategy, Strategy) and learner.strategy.name == f"avalanche:{name}"
    n = 128

    # Phase 1: three classes.
    for _ in range(6):
        stats = learner.learn(*_batch(rng, 3, n))
        assert stats.steps >= 1 and np.isfinite(stats.loss)
    x3, y3 = _batch(np.random.default_rng(1), 3, 300)
    assert _accuracy(learner, x3, y3) > 0.8

    # Phase 2: seven new classes mid-stream (the head outgrows its capacity of 8).
    head_before = learner.model.head
    for _ in range(8):
        learner.learn(*_batch(rng, N_CLASSES, n))
    assert learner.model.head is not head_before and learner.model.n_classes == N_CLASSES
    x, y = _batch(np.random.default_rng(2), N_CLASSES, 400)
    acc = _accuracy(learner, x, y)
    assert acc > 0.5, f"{name}: accuracy {acc:.2f} on 10 classes (chance 0.1)"

    # Checkpoint: plain data, through the store, into a fresh learner.
    state = learner.state_dict()
    _assert_plain(state)
    store = CheckpointStore(tmp_path)
    store.save(state)
    restored = _learner(name)
    restored.load_state_dict(store.load_latest())
    xt = torch.from_numpy(x)
    assert torch.equal(learner.predict_indices(xt)[1], restored.predict_indices(xt)[1])

    # Both continue identically on the same data (the torch RNG is part of the state).
    more = _batch(rng, N_CLASSES, n)
    torch.set_rng_state(state["torch_rng"])
    a = learner.learn(*more)
    torch.set_rng_state(state["torch_rng"])
    b = restored.learn(*more)
    assert a == b
    for pa, pb in zip(learner.model.parameters(), restored.model.parameters()):
        assert torch.equal(pa, pb)


def test_unknown_name_and_mismatched_checkpoint() -> None:
    settings = _settings("Naive")
    learner = Learner(settings)
    with pytest.raises(ValueError, match="unsupported avalanche strategy 'Nope'"):
        build(settings, learner, "Nope")
    naive = build(settings, learner, "Naive")
    with pytest.raises(ValueError, match="avalanche strategy"):
        naive.load_state_dict(build(settings, learner, "EWC").state_dict())


@pytest.mark.parametrize("name, step, mem", [("ER_ACE", 32, 16), ("MER", 16, 4)])
def test_self_replaying_templates_count_their_replayed_rows(name: str, step: int,
                                                            mem: int) -> None:
    """ER_ACE and MER draw replay rows inside the template, not through a plugin: the
    recorder must count them by the template's class.  64 events in steps of ``step``:
    nothing to replay on the first micro-batch, then ``mem`` rows (replay.batch_size) per
    iteration (MER: per inner step, one here)."""
    rng = np.random.default_rng(0)
    learner = _learner(name)
    got = []
    for _ in range(3):
        x, y = _batch(rng, 3, 64)
        stats = learner.learn(x, y)
        got.append((stats.steps, stats.replayed))
    iterations = 64 // step
    assert got == [(iterations, 0), (iterations, iterations * mem), (iterations, iterations * mem)]
