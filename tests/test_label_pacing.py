"""Labels that arrive later are paced like inline ones: a stream whose every label is a
separate label event must not stay at the starting (largest) step size.

Real broker, the real daemon in this process; the learner host is wrapped only to record
the step each learn request carries."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stream_learner.benchmarks.delay import encode, produce, run_daemon, schedule, settings
from stream_learner.synth import ensure_topics

from conftest import unique

pytestmark = pytest.mark.timeout(120)
N = 3_000


def test_joined_labels_learn_at_the_paced_step(broker: Any) -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(N, 2)).astype("float32")
    labels = [int(a + b > 0) for a, b in x.tolist()]
    topic = unique("label-pacing")
    ensure_topics(broker.bootstrap_servers, {topic: 1, f"{topic}.dlq": 1, f"{topic}.predictions": 1})
    # Every event label-later, its label 10 events behind: no inline label at all.
    later = np.ones(N, bool)
    produce(broker.bootstrap_servers, topic, encode(schedule(np.full(N, 10), later), x, labels))
    with tempfile.TemporaryDirectory() as tmp:
        s = settings(broker.bootstrap_servers, topic, Path(tmp), N)
        s = s.model_copy(update={"model": s.model.model_copy(update={"worker": "inline"})})
        steps: list[int | None] = []

        def spy(daemon: Any) -> None:
            submit = daemon.learner.submit_learn

            def recording(x: Any, labels: Any, ctx: Any = None, step_size: Any = None) -> None:
                steps.append(step_size)
                submit(x, labels, ctx=ctx, step_size=step_size)
            daemon.learner.submit_learn = recording

        daemon, _ = run_daemon(s, N, N, timeout_s=90, prepare=spy)
    assert daemon.counters.learned == N
    low = s.model.step_size
    # A backlog this small clears in far less than model.catch_up_seconds: every learn
    # request is paced, and the learner ends at the small step, not max_step_size.
    assert steps and None not in steps
    assert steps[-1] == low < s.model.max_step_size
