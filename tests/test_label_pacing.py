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
from stream_learner.consumer_side import COLD_BATCH_SIZE
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
