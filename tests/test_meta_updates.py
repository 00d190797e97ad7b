"""ClassBalancedBuffer, MER and La-MAML: behaviour beyond the conformance suite.

* the class-balanced memory splits its capacity evenly (re-balancing when a class
  appears), stores every event of a class with the same probability (chi-square over
  many seeded runs), samples about evenly over classes, and round-trips its state;
* MER and La-MAML, with a replay memory, keep most of a first task's accuracy after a
  second task with new classes, where naive fine-tuning forgets it;
* results are deterministic; La-MAML's learned learning rates stay finite, move, and
  follow the class head when it grows.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from scipy import stats

from stream_learner.config import Settings
from stream_learner.learner import Learner
from stream_learner.memory_balanced import ClassBalancedBuffer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CPU = torch.device("cpu")


def _stored_counts(buf: ClassBalancedBuffer) -> dict[int, int]:
    """Per-class counts read from the stored labels themselves."""
    y = buf.state_dict()["y"]
    return {int(c): int((y == c).sum()) for c in torch.unique(y)}


# -- ClassBalancedBuffer ---------------------------------------------------------------
def test_class_balanced_splits_capacity_evenly_and_rebalances():
    rng = np.random.default_rng(0)
    buf = ClassBalancedBuffer(60, CPU, seed=0)
    # Very unequal frequencies: 70% / 25% / 5% of 3000 events.
    y = torch.from_numpy(rng.choice(3, size=3000, p=[0.7, 0.25, 0.05]))
    x = torch.arange(3000, dtype=torch.float32)[:, None]
    for i in range(0, 3000, 50):
        buf.add(x[i:i + 50], y[i:i + 50])
    assert _stored_counts(buf) == {0: 20, 1: 20, 2: 20} == buf.class_counts()
    assert len(buf) == 60 and buf.seen == 3000

    buf.add(torch.zeros(3, 1), torch.tensor([3, 3, 4]))       # two new classes
    assert _stored_counts(buf) == {0: 12, 1: 12, 2: 12, 3: 2, 4: 1}
    buf.add(torch.zeros(100, 1), torch.full((100,), 4))
    assert _stored_counts(buf) == {0: 12, 1: 12, 2: 12, 3: 2, 4: 12}
    # Stored events are real events of their class (x was the event index).
    state = buf.state_dict()
    idx = state["x"][:36, 0].long()
    assert torch.equal(y[idx], state["y"][:36])
    assert len(set(idx.tolist())) == 36

    # Replay draws about evenly over the (full) classes.
    ys = torch.cat([buf.sample(50)[1] for _ in range(400)])
    freq = torch.bincount(ys, minlength=5).float() / len(ys)
    assert torch.allclose(freq[[0, 1, 2, 4]], torch.full((4,), 12 / 50), atol=0.015)


def test_class_balanced_is_uniform_within_a_class():
    """Each of class 0's 120 events is kept with probability quota/120 (chi-square).

    Class 0 arrives interleaved with class 1, in batches of 40 (so two events of one
    batch often draw the same slot), and class 2 appears half-way, shrinking every
    quota from 15 to 10: both the reservoir and the re-balancing must stay uniform.
    """
    runs, n0 = 300, 120
    hits = np.zeros(n0)
    for seed in range(runs):
        rng = np.random.default_rng(seed)
        y = rng.permutation(np.repeat([0, 1], [n0, 120]))
        ids = np.where(y == 0, np.cumsum(y == 0) - 1, -1)      # class-0 event index
        buf = ClassBalancedBuffer(30, CPU, seed=seed)
        for i in range(0, len(y), 40):
            if i == 120:
                buf.add(torch.zeros(1, 1), torch.tensor([2]))
            buf.add(torch.from_numpy(ids[i:i + 40, None].astype(np.float32)),
                    torch.from_numpy(y[i:i + 40]))
        state = buf.state_dict()
        kept = state["x"][state["y"] == 0, 0].long().numpy()
        assert len(kept) == 10 and len(set(kept)) == 10 and (kept >= 0).all()
        hits[kept] += 1
    expected = runs * 10 / n0
    chi2 = ((hits - expected) ** 2 / expected).sum()
    assert stats.chi2.sf(chi2, n0 - 1) > 1e-3, (chi2, hits.min(), hits.max())
    # Early and late events alike (a biased reservoir favours one end).
    assert abs(hits[:60].mean() - hits[60:].mean()) < 0.1 * expected


def test_class_balanced_state_round_trips(tmp_path):
    a = ClassBalancedBuffer(40, CPU, seed=3)
    g = torch.Generator().manual_seed(0)
    for i in range(6):
        a.add(torch.randn(30, 3, generator=g), torch.randint(0, 2 + i // 2, (30,), generator=g))
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b = ClassBalancedBuffer(40, CPU, seed=99)
    b.load_state_dict(torch.load(buf, weights_only=True))
    assert len(a) == len(b) and a.class_counts() == b.class_counts()
    for _ in range(4):
        x, y = torch.randn(25, 3, generator=g), torch.randint(0, 6, (25,), generator=g)
        a.add(x, y)
        b.add(x, y)
        for ta, tb in zip(a.sample(16), b.sample(16)):
            assert torch.equal(ta, tb)
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) if torch.is_tensor(sa[k]) else sa[k] == sb[k]
               for k in sa)

    # Empty state, and a checkpoint loaded under a smaller configured capacity.
    e = ClassBalancedBuffer(40, CPU)
    e.load_state_dict(ClassBalancedBuffer(40, CPU).state_dict())
    assert len(e) == 0
    small = ClassBalancedBuffer(12, CPU)
    small.load_state_dict(a.state_dict())
    counts = small.class_counts()
    assert len(small) <= 12 and max(counts.values()) - min(counts.values()) <= 1
    small.add(torch.randn(50, 3, generator=g), torch.randint(0, 6, (50,), generator=g))
    assert len(small) == 12


# -- MER / La-MAML on a two-task stream ------------------------------------------------
def _settings(strategy: dict, **extra) -> Settings:
    return Settings(strategy=strategy,
                    model={"device": "cpu", "hidden": (32,), "step_size": 32,
                           "max_step_size": 32, "seed": 0,
                           "warmup_events": 0},
                    replay={"capacity": 200, "batch_size": 32}, **extra)


def _two_tasks(seed: int = 0, n: int = 1200):
    """Task A: classes 0/1, then task B: classes 2/3 (Gaussian blobs in 8-d)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(4, 8)) * 2.0

    def draw(classes, size):
        y = rng.choice(classes, size=size)
        return (centers[y] + rng.normal(size=(size, 8))).astype(np.float32), y.tolist()

    return draw([0, 1], n), draw([2, 3], n), draw([0, 1], 400)


def _run(strategy: dict, n: int = 1200, **extra) -> tuple[float, float, Learner]:
    (xa, ya), (xb, yb), (xt, yt) = _two_tasks(n=n)
    lrn = Learner(_settings(strategy, **extra))

    def acc() -> float:
        return float(np.mean([p == t for p, t in zip(lrn.predict(xt)[0], yt)]))

    for i in range(0, len(xa), 100):
        lrn.learn(xa[i:i + 100], ya[i:i + 100])
    after_a = acc()
    for i in range(0, len(xb), 100):
        lrn.learn(xb[i:i + 100], yb[i:i + 100])
    return after_a, acc(), lrn


@pytest.fixture(scope="module")
def naive_result() -> tuple[float, float]:
    after_a, after_b, _ = _run({"name": "naive"})
    return after_a, after_b


@pytest.mark.parametrize("meta", ["mer", "lamaml"])
def test_meta_update_retains_the_old_task(meta, naive_result):
    naive_a, naive_b = naive_result
    after_a, after_b, lrn = _run({"name": "continual", "plugins": (), "meta": meta,
                                  "memory": "reservoir"})
    print(f"{meta}: task A acc {after_a:.3f} -> {after_b:.3f} after task B; "
          f"naive {naive_a:.3f} -> {naive_b:.3f}")
    assert naive_a > 0.9 and naive_b < 0.2            # the stream does cause forgetting
    assert after_a > 0.75                              # the meta-update learns at all
    assert after_b > naive_b + 0.5                     # ...and keeps task A
    assert lrn.skipped_steps == 0
    assert all(torch.isfinite(p).all() for p in lrn.model.parameters())


@pytest.mark.parametrize("meta", ["mer", "lamaml"])
def test_meta_update_is_deterministic(meta):
    runs = []
    for _ in range(2):
        _, acc, lrn = _run({"name": "continual", "plugins": (), "meta": meta,
                            "memory": "class_balanced"}, n=300)
        runs.append((acc, [p.detach().clone() for p in lrn.model.parameters()],
                     lrn.strategy.state_dict()))
    (acc1, p1, s1), (acc2, p2, s2) = runs
    assert acc1 == acc2
    assert all(torch.equal(a, b) for a, b in zip(p1, p2))
    if meta == "lamaml":
        a1, a2 = s1["meta"]["alpha"], s2["meta"]["alpha"]
        assert a1.keys() == a2.keys() and all(torch.equal(a1[k], a2[k]) for k in a1)


def test_lamaml_learning_rates_stay_finite_move_and_follow_the_head():
    lrn = Learner(_settings({"name": "continual", "plugins": (), "meta": "lamaml"},
                            lamaml={"alpha_init": 0.1}))
    rng = np.random.default_rng(1)
    w = rng.normal(size=(6, 12))
    # 12 classes, introduced progressively: the head (capacity 8) grows mid-stream.
    for k in range(4, 13, 4):
        for _ in range(3):
            x = rng.normal(size=(100, 6)).astype(np.float32)
            lrn.learn(x, (x @ w[:, :k]).argmax(1).tolist())
    meta = lrn.strategy.meta
    assert lrn.model.head_capacity > 8
    params = dict(lrn.model.named_parameters())
    assert meta.alpha.keys() == params.keys()
    for name, a in meta.alpha.items():
        assert a.shape == params[name].shape, name
        assert torch.isfinite(a).all(), name
    moved = torch.cat([(a - 0.1).abs().flatten() for a in meta.alpha.values()])
    assert moved.max() > 1e-3                          # learned, not frozen at init
    # Head rows of classes never seen keep their initial learning rate.
    head = meta.alpha["head.weight"]
    assert torch.all(head[lrn.model.n_classes:] == 0.1)
    assert lrn.skipped_steps == 0


def test_mer_inner_steps_skip_non_finite_and_keep_weights():
    lrn = Learner(_settings({"name": "continual", "plugins": (), "meta": "mer"}))
    (xa, ya), _, _ = _two_tasks(n=200)
    lrn.learn(xa[:100], ya[:100])
    before = [p.detach().clone() for p in lrn.model.parameters()]
    real = lrn.loss_fn
    lrn.loss_fn = lambda logits, y: real(logits, y) * float("inf")
    lrn.learn(xa[100:], ya[100:])
    # 4 chunks of 32/32/32/4 events, inner_steps inner batches of 4 mini-batches each:
    # every mini-batch skipped.
    settings = lrn.settings.mer
    assert lrn.skipped_steps == 4 * settings.inner_steps * 4
    assert all(torch.equal(a, p) for a, p in zip(before, lrn.model.parameters()))
