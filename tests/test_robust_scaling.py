"""One legal-but-absurd feature value must not ruin the model (the standardiser is robust).

Against the plain running moments the landed daemon had, one 5e8 among unit-scale
values inflates that feature's variance for good: it is a constant to the model from
then on, and prequential accuracy drops by ~3.5 points on the stream below.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from kafka import KafkaProducer

from stream_learner.config import Settings
from stream_learner.learner import Learner
from stream_learner.model import ROBUST_START_EVENTS, Standardizer
from stream_learner.synth import ensure_topics

from conftest import DaemonProcess, unique

OUTLIER = 5e8          # finite in float32 and below model.max_abs_feature (1e9): accepted
SCALES = np.array([1.0, 10.0, 0.1, 1000.0, 1.0])


def _stream(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A linear concept over features of very different scales (hence the standardiser)."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=SCALES.size)
    z = rng.normal(size=(n, SCALES.size))
    return (z * SCALES).astype(np.float32), (z @ w > 0).astype(np.int64)


def _outlier_row(x: np.ndarray) -> np.ndarray:
    row = x[:1].copy()
    row[0, 0] = OUTLIER
    return row


def _accuracy_after(x: np.ndarray, y: np.ndarray, prefix: np.ndarray | None) -> float:
    """Learner core, test-then-train in batches of 256; accuracy on (x, y) only."""
    lrn = Learner(Settings(model={"device": "cpu"}, probes={"per_class": 0}))
    if prefix is not None:
        lrn.learn(prefix, [int(y[0])])
    correct = 0
    for i in range(0, len(x), 256):
        pred, _ = lrn.predict(x[i:i + 256])
        correct += int((np.asarray(pred) == y[i:i + 256]).sum())
        lrn.learn(x[i:i + 256], y[i:i + 256].tolist())
    return correct / len(x)


def test_one_outlier_first_leaves_learner_accuracy_within_a_point() -> None:
    x, y = _stream(20_000)
    clean = _accuracy_after(x, y, None)
    dirty = _accuracy_after(x, y, _outlier_row(x))
    assert abs(clean - dirty) < 0.01, (clean, dirty)


def test_an_outlier_after_the_start_is_clipped_to_the_bound() -> None:
    gen = torch.Generator().manual_seed(0)
    s = Standardizer(2, clip_sigmas=6.0)
    s.update(torch.randn(ROBUST_START_EVENTS, 2, generator=gen, dtype=torch.float64))
    before_std = (s.m2 / s.count).sqrt().clone()
    s.update(torch.tensor([[OUTLIER, 0.0]], dtype=torch.float64))
    std = (s.m2 / s.count).sqrt()
    # Counted as mean + 6 sd: the spread grows by a few percent, not by 1e8.
    assert 1.0 < float(std[0] / before_std[0]) < 1.1


def test_a_feature_constant_so_far_still_gets_a_scale() -> None:
    s = Standardizer(1, clip_sigmas=6.0)
    s.update(torch.zeros(ROBUST_START_EVENTS * 2, 1))
    s.update(torch.randn(1000, 1) * 3)
    assert 2.0 < float((s.m2 / s.count).sqrt()) < 3.0


def test_the_start_rows_survive_a_checkpoint() -> None:
    x, y = _stream(300)
    a = Learner(Settings(model={"device": "cpu"}, probes={"per_class": 0}))
    a.learn(x[:100], y[:100].tolist())
    b = Learner(Settings(model={"device": "cpu"}, probes={"per_class": 0}))
    b.load_state_dict(a.state_dict())
    assert b.model is not None and a.model is not None
    assert torch.equal(b.model.scaler.start_rows, a.model.scaler.start_rows)
    for lrn in (a, b):
        lrn.learn(x[100:], y[100:].tolist())
    assert torch.equal(a.model.scaler.mean, b.model.scaler.mean)
    assert torch.equal(a.model.scaler.m2, b.model.scaler.m2)


def _daemon_accuracy(bs: str, tmp: Path, x: np.ndarray, y: np.ndarray, daemons: list) -> float:
    topic = unique("robust")
    ensure_topics(bs, {topic: 1, f"{topic}.dlq": 1, f"{topic}.predictions": 1})
    producer = KafkaProducer(bootstrap_servers=bs, linger_ms=20, batch_size=256 * 1024)
    for i, (row, label) in enumerate(zip(x.tolist(), y.tolist())):
        producer.send(topic, json.dumps({"id": str(i), "features": row, "label": label}).encode())
    producer.flush()
    producer.close()
    d = DaemonProcess(bs, tmp / topic, topic, unique("g"))
    daemons.append(d)
    d.wait_consumed(len(x), timeout=240)
    metrics = d.metrics()
    assert metrics["stream_learner_events_rejected_total{reason=\"non_finite\"}"] == 0
    assert d.terminate() == 0
    return metrics["stream_learner_prequential_accuracy"]


def test_one_outlier_then_50000_events_through_the_daemon(broker, daemons, tmp_path) -> None:
    # 1,000 events first: the first events of each class are held out as forgetting
    # probes (never learned), and the outlier must reach the model.
    x, y = _stream(51_000, seed=1)
    head, tail = slice(0, 1000), slice(1000, None)
    clean = _daemon_accuracy(broker.bootstrap_servers, tmp_path, x, y, daemons)
    dirty = _daemon_accuracy(broker.bootstrap_servers, tmp_path,
                             np.concatenate([x[head], _outlier_row(x[tail]), x[tail]]),
                             np.concatenate([y[head], y[tail][:1], y[tail]]), daemons)
    # The first 1,000 events score the same in both; the outlier is 1 of 51,001.
    assert abs(clean - dirty) < 0.01, (clean, dirty)
