"""Tests for stream_learner.learner.Learner: class-incremental growth, labels, state."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from stream_learner.config import Settings
from stream_learner.learner import Learner
from stream_learner.strategies import STRATEGIES

RADIUS = 6.0


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _settings(strategy: str = "replay", **model) -> Settings:
    return Settings(strategy={"name": strategy},
                    model={"device": "cpu", "hidden": (32, 32), "step_size": 64,
                           "max_step_size": 64, "seed": 0,
                           **model},
                    replay={"capacity": 4000, "batch_size": 64})


def _centers(n: int) -> np.ndarray:
    """n well-separated blob centres on a circle (2-D features)."""
    angles = np.arange(n) * (2 * np.pi / max(n, 1))
    return np.stack([np.cos(angles), np.sin(angles)], axis=1) * RADIUS


def _blobs(rng: np.random.Generator, centers: np.ndarray, which: list[int], n: int
           ) -> tuple[np.ndarray, np.ndarray]:
    cls = rng.choice(which, size=n)
    x = centers[cls] + rng.normal(scale=0.5, size=(n, centers.shape[1]))
    return x.astype(np.float32), cls


def _accuracy(learner: Learner, x: np.ndarray, labels: list) -> float:
    pred, _ = learner.predict(x)
    return float(np.mean([type(p) is type(t) and p == t for p, t in zip(pred, labels)]))


def _logits(learner: Learner, x: np.ndarray) -> torch.Tensor:
    assert learner.model is not None
    learner.model.eval()
    with torch.no_grad():
        return learner.model(torch.from_numpy(x)).clone()


def _grow_to(learner: Learner, new_labels: list) -> None:
    """Make the learner meet new labels without learning anything yet."""
    learner.encode_labels(new_labels)
    learner._grow(len(learner.labels))


def test_predict_before_any_learning_is_none():
    lrn = Learner(_settings())
    labels, proba = lrn.predict(np.zeros((3, 2), dtype=np.float32))
    assert labels == [None, None, None] and proba == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("strategy", ["replay", "naive"])
def test_class_incremental_growth_keeps_old_logits_and_replay_keeps_old_accuracy(strategy):
    """Naive runs the same scenario as a control: it must forget, else the test is void."""
    rng = np.random.default_rng(0)
    centers = _centers(3)
    names = [0, 1, "c"]
    lrn = Learner(_settings(strategy))

    # Phase 1: labels {0, 1} only.
    for _ in range(12):
        x, cls = _blobs(rng, centers, [0, 1], 256)
        lrn.learn(x, [names[c] for c in cls])
    x_old, cls_old = _blobs(rng, centers, [0, 1], 1000)
    y_old = [names[c] for c in cls_old]
    assert _accuracy(lrn, x_old, y_old) > 0.95
    assert lrn.model is not None and lrn.model.n_classes == 2
    before = _logits(lrn, x_old)

    # A new label appears: the head grows, old logits are untouched bit for bit.
    _grow_to(lrn, ["c"])
    assert lrn.model.n_classes == 3 and lrn.labels.labels[2] == "c"
    assert lrn.model.head_capacity == 8          # room was left: the head is not replaced
    after = _logits(lrn, x_old)
    assert after.shape == (1000, 3)
    assert torch.equal(after[:, :2], before)
    assert torch.equal(after[:, :2].argmax(1), before.argmax(1))

    # Phase 2: the stream now only carries "c"; replay keeps the old classes alive.
    for _ in range(12):
        x, cls = _blobs(rng, centers, [2], 256)
        lrn.learn(x, [names[c] for c in cls])
    if strategy == "replay":
        assert _accuracy(lrn, x_old, y_old) > 0.8
    else:
        assert _accuracy(lrn, x_old, y_old) < 0.5      # catastrophic forgetting
    x_new, cls_new = _blobs(rng, centers, [2], 500)
    assert _accuracy(lrn, x_new, [names[c] for c in cls_new]) > 0.8


def test_head_grows_beyond_initial_capacity():
    rng = np.random.default_rng(1)
    n_classes = 14
    centers = _centers(n_classes)
    names = [f"class-{i}" for i in range(n_classes)]
    lrn = Learner(_settings("replay"))
    for _ in range(10):
        x, cls = _blobs(rng, centers, [0, 1, 2], 256)
        lrn.learn(x, [names[c] for c in cls])
    assert lrn.model is not None
    assert lrn.model.head_capacity == 8
    x_old, _ = _blobs(rng, centers, [0, 1, 2], 500)
    before = _logits(lrn, x_old)
    old_head = (lrn.model.head.weight.detach().clone(), lrn.model.head.bias.detach().clone())
    body = {k: v.clone() for k, v in lrn.model.state_dict().items()
            if k.startswith(("body", "scaler"))}

    _grow_to(lrn, names[3:])           # 11 new labels: 14 > capacity 8
    assert lrn.model.n_classes == n_classes
    assert lrn.model.head_capacity >= n_classes
    # Every old parameter is carried over bit for bit...
    assert torch.equal(lrn.model.head.weight[:8], old_head[0])
    assert torch.equal(lrn.model.head.bias[:8], old_head[1])
    for k, v in body.items():
        assert torch.equal(lrn.model.state_dict()[k], v), k
    # ...so old-class logits are the same up to GEMM rounding (the matmul now has 16
    # output rows instead of 8 and MKL blocks it differently: ~1 ulp, not bitwise),
    # and the old-class decision is identical.
    after = _logits(lrn, x_old)
    assert after.shape == (500, n_classes)
    torch.testing.assert_close(after[:, :3], before, rtol=0, atol=1e-5)
    assert torch.equal(after[:, :3].argmax(1), before.argmax(1))

    # The optimiser follows the new head, and learning still works for every class.
    opt_params = {id(p) for g in lrn.optimizer.param_groups for p in g["params"]}
    assert {id(p) for p in lrn.model.parameters()} == opt_params
    for _ in range(40):
        x, cls = _blobs(rng, centers, list(range(n_classes)), 256)
        stats = lrn.learn(x, [names[c] for c in cls])
        assert np.isfinite(stats.loss)
    x_all, cls_all = _blobs(rng, centers, list(range(n_classes)), 1400)
    assert _accuracy(lrn, x_all, [names[c] for c in cls_all]) > 0.8


def test_learn_grows_head_past_capacity_in_one_batch():
    rng = np.random.default_rng(2)
    centers = _centers(20)
    lrn = Learner(_settings("naive"))
    x, cls = _blobs(rng, centers, list(range(20)), 400)
    stats = lrn.learn(x, cls.tolist())
    assert np.isfinite(stats.loss) and stats.steps == 400 // 64 + 1
    assert lrn.model is not None and lrn.model.n_classes == 20 and lrn.model.head_capacity >= 20


def test_int_and_str_labels_are_distinct_classes():
    rng = np.random.default_rng(3)
    centers = _centers(3)
    names = [1, "1", "one"]
    lrn = Learner(_settings("replay"))
    for _ in range(25):
        x, cls = _blobs(rng, centers, [0, 1, 2], 256)
        lrn.learn(x, [names[c] for c in cls])
    assert sorted(map(repr, lrn.labels.labels)) == sorted(map(repr, names))
    assert len(lrn.labels) == 3
    assert lrn.labels.encode([1, "1"]) != lrn.labels.encode(["1", 1])
    x, cls = _blobs(rng, centers, [0, 1, 2], 900)
    truth = [names[c] for c in cls]
    pred, proba = lrn.predict(x)
    assert {type(p) for p in pred} == {int, str}
    assert _accuracy(lrn, x, truth) > 0.95           # type-exact comparison
    assert all(0.0 <= p <= 1.0 for p in proba)


def _train(lrn: Learner, seed: int, batches: int, classes: list) -> list[float]:
    rng = np.random.default_rng(seed)
    centers = _centers(len(classes))
    losses = []
    for _ in range(batches):
        x, cls = _blobs(rng, centers, list(range(len(classes))), 200)
        losses.append(lrn.learn(x, [classes[c] for c in cls]).loss)
    return losses


def _round_trip(state: dict) -> dict:
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, map_location="cpu", weights_only=True)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_state_dict_round_trip_predicts_and_trains_identically(strategy, optimizer):
    classes = ["a", 2, "c"]
    settings = _settings(strategy, optimizer=optimizer)
    a = Learner(settings)
    _train(a, seed=10, batches=6, classes=classes[:2])
    _train(a, seed=11, batches=4, classes=classes)
    state = _round_trip(a.state_dict())
    x, _ = _blobs(np.random.default_rng(12), _centers(3), [0, 1, 2], 300)
    pa, qa = a.predict(x)
    labels_a = a.labels.labels
    # The original goes on first, then the restored copy (as after a restart): the
    # torch RNG is process-global, and the checkpoint carries its state.
    losses_a = _train(a, seed=13, batches=5, classes=classes + ["new"])

    b = Learner(settings)
    b.load_state_dict(state)
    assert b.labels.labels == labels_a and len(labels_a) == 3
    pb, qb = b.predict(x)
    assert pa == pb and qa == qb
    losses_b = _train(b, seed=13, batches=5, classes=classes + ["new"])
    assert losses_a == losses_b
    for (na, ta), (nb, tb) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert na == nb and torch.equal(ta, tb), na


def test_state_dict_before_any_event_round_trips():
    settings = _settings("replay")
    a = Learner(settings)
    state = _round_trip(a.state_dict())
    losses_a = _train(a, 5, 3, [0, 1])       # builds the model from the global torch RNG
    b = Learner(settings)
    b.load_state_dict(state)
    assert b.model is None and len(b.labels) == 0
    assert _train(b, 5, 3, [0, 1]) == losses_a
    for (na, ta), (nb, tb) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert na == nb and torch.equal(ta, tb), na


def test_load_state_dict_rejects_other_strategy():
    a = Learner(_settings("naive"))
    _train(a, 1, 1, [0, 1])
    with pytest.raises(ValueError, match="strategy"):
        Learner(_settings("replay")).load_state_dict(a.state_dict())


def test_a_young_replay_model_takes_warmup_passes_steps_per_chunk_then_one():
    """Each chunk gets ``model.warmup_passes`` steps (a fresh replay sample each) until
    ``model.warmup_events`` are learned; a chunk with nothing to replay gets one."""
    rng = np.random.default_rng(0)
    x, y = _blobs(rng, _centers(3), [0, 1, 2], 72)
    steps = {}
    for passes in (1, 3):
        lrn = Learner(Settings(strategy={"name": "replay"},
                               model={"device": "cpu", "hidden": (8,), "step_size": 8,
                                      "max_step_size": 8, "warmup_events": 64,
                                      "warmup_passes": passes}))
        lrn.step_size = 8
        # 8 events: the buffer is empty, one step; 16 more (24 seen, young): 2 chunks;
        # 48 more (72 seen, no longer young): 6 chunks of one step each.
        steps[passes] = [lrn.learn(x[a:b], list(y[a:b])).steps
                         for a, b in ((0, 8), (8, 24), (24, 72))]
    assert steps == {1: [1, 2, 6], 3: [1, 6, 6]}


def _observe_all(block: int, sizes: list[int], x: np.ndarray, y: np.ndarray
                 ) -> tuple[torch.Tensor, Learner]:
    lrn = Learner(Settings(probes={"per_class": 0},
                           model={"device": "cpu", "hidden": (8,), "seed": 3,
                                  "warmup_events": 0, "predict_block": block}))
    lrn.step_size = 8
    preds, i = [], 0
    for size in sizes:
        xb = lrn.to_tensor(x[i:i + size])
        yb, _ = lrn.admit_labels(list(y[i:i + size]))
        preds.append(lrn.observe(xb, yb)[1])
        i += size
    return torch.cat(preds), lrn


def test_a_micro_batch_is_tested_then_trained_in_predict_block_blocks():
    """One batch of 256 with predict_block 64 is exactly four batches of 64: each block
    is predicted by the model that learned the blocks before it (bit for bit:
    torch.equal on predictions and weights); predicted whole, it is not."""
    rng = np.random.default_rng(1)
    x, y = _blobs(rng, _centers(3), [0, 1, 2], 256)
    blocked, a = _observe_all(64, [256], x, y)
    separate, b = _observe_all(0, [64, 64, 64, 64], x, y)
    whole, _ = _observe_all(0, [256], x, y)
    assert torch.equal(blocked, separate)
    for pa, pb in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(pa, pb)
    assert not torch.equal(blocked, whole)


def test_a_block_is_never_smaller_than_the_step():
    """At full rate (step 256) blocks of predict_block 64 would quadruple the steps and
    cut the learner's rate: 512 events are two steps of 256."""
    rng = np.random.default_rng(2)
    x, y = _blobs(rng, _centers(3), [0, 1, 2], 512)
    lrn = Learner(Settings(probes={"per_class": 0},
                           model={"device": "cpu", "hidden": (8,), "warmup_events": 0,
                                  "predict_block": 64}))
    lrn.step_size = 256
    yb, _ = lrn.admit_labels(list(y))
    assert lrn.observe(lrn.to_tensor(x), yb)[2].steps == 2
