"""A fresh daemon on a backlog of label-later events (every label a separate label
event): its joined labels are paced like inline ones, and its cold start serves
``"label": null`` for a few dozen events, not a whole micro-batch.

Real broker, the real daemon in this process (its learner in a worker process, as
deployed); the learner host is wrapped only to record the step each learn request
carries."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stream_learner.benchmarks.delay import (encode, produce, read_predictions, run_daemon,
                                             schedule, settings)
from stream_learner.warm_start import COLD_BATCH_SIZE
from stream_learner.synth import ensure_topics

from conftest import unique

pytestmark = pytest.mark.timeout(120)
N = 3_000
DELAY = 10          # events between a features event and its label event


def test_joined_labels_are_paced_and_a_cold_start_serves_few_nulls(broker: Any) -> None:
    bs = broker.bootstrap_servers
    rng = np.random.default_rng(3)
    x = rng.normal(size=(N, 2)).astype("float32")
    labels = [int(a + b > 0) for a, b in x.tolist()]
    topic = unique("label-pacing")
    ensure_topics(bs, {topic: 1, f"{topic}.dlq": 1, f"{topic}.predictions": 1})
    produce(bs, topic, encode(schedule(np.full(N, DELAY), np.ones(N, bool)), x, labels))
    steps: list[int | None] = []

    def record_steps(daemon: Any) -> None:
        submit = daemon.learner.submit_learn

        def recording(x: Any, labels: Any, ctx: Any = None, step_size: Any = None) -> None:
            steps.append(step_size)
            submit(x, labels, ctx=ctx, step_size=step_size)
        daemon.learner.submit_learn = recording

    with tempfile.TemporaryDirectory() as tmp:
        s = settings(bs, topic, Path(tmp), N)
        daemon, _ = run_daemon(s, N, N, timeout_s=90, prepare=record_steps)
    assert daemon.counters.learned == N

    # A backlog this small clears in far less than model.catch_up_seconds: every learn
    # request is paced, and the learner ends at the small step, not max_step_size.
    assert steps and None not in steps
    assert steps[-1] == s.model.step_size < s.model.max_step_size

    # Every event predicted once, by id; the nulls are the cold start's: the events read
    # before the first learned batch came back, in batches of COLD_BATCH_SIZE records
    # (half of them features events here), not one full batch.size batch (~512 here).
    served = read_predictions(bs, f"{topic}.predictions", N)
    assert sorted(int(p["id"]) for p in served) == list(range(N))
    nulls = sorted(int(p["id"]) for p in served if p["label"] is None)
    assert nulls == list(range(len(nulls)))            # only the first events, in order
    assert 0 < len(nulls) <= 4 * COLD_BATCH_SIZE < s.batch.size // 2


def test_a_young_model_is_served_small_batches(broker: Any) -> None:
    """Every event of a micro-batch is predicted by the model as it was at the batch's
    start, so while the model is young the batches stay small: at most COLD_BATCH_SIZE
    records until it knows two classes, then at most what it has learned, until
    model.warmup_events (then full), counting what the loop handed the learner (requests
    run in order, so that is what the model has learned when the batch is predicted).
    The first 300 events are all one class: the old rule (small only until the first
    class) read a full batch next, served by a model that could name nothing else."""
    n = 6_000
    bs = broker.bootstrap_servers
    rng = np.random.default_rng(5)
    x = rng.normal(size=(n, 2)).astype("float32")
    x[:300, 0] = np.abs(x[:300, 0]) + 0.1
    labels = [int(a > 0) for a in x[:, 0].tolist()]
    topic = unique("young-batches")
    ensure_topics(bs, {topic: 1, f"{topic}.dlq": 1, f"{topic}.predictions": 1})
    produce(bs, topic, encode(schedule(np.zeros(n, np.int64), np.zeros(n, bool)), x, labels))
    seen: list[tuple[int, int, int]] = []       # (records, classes handed, events handed)

    def record_batches(daemon: Any) -> None:
        process = daemon.process

        def recording(records: Any) -> None:
            seen.append((len(records), len(daemon.warm.classes), daemon.warm.handed_events))
            process(records)
        daemon.process = recording

    with tempfile.TemporaryDirectory() as tmp:
        s = settings(bs, topic, Path(tmp), n)
        daemon, _ = run_daemon(s, n, 0, timeout_s=90, prepare=record_batches)
    assert daemon.counters.learned == n
    assert sum(size for size, _, _ in seen) == n
    warmup = s.model.warmup_events
    for size, classes, learned in seen:
        if learned >= warmup:
            continue
        assert size <= (COLD_BATCH_SIZE if classes < 2 else max(COLD_BATCH_SIZE, learned))
    # It does grow: a backlog this size is read in full batches once the model is warm.
    assert any(size == s.batch.size for size, _, _ in seen)
    assert any(classes < 2 for _, classes, _ in seen[1:])   # the one-class phase happened
