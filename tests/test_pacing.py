"""The step size follows the stream: big steps to catch up, small ones with time to spare.

Unit tests drive :class:`StepPacer` with a fake clock; the daemon test watches
``stream_learner_step_size_events`` on a real broker while a backlog drains and then
while events trickle in."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from kafka import KafkaProducer

from stream_learner.pacing import WINDOW_S, StepPacer
from stream_learner.synth import encode_event, ensure_topics

from conftest import DaemonProcess, unique, wait_for


def test_backlog_doubles_up_to_the_largest_size() -> None:
    pacer = StepPacer(8, 256, budget=0.5)
    pacer.value = 8
    sizes = [pacer.update(backlogged=True, now=0.01 * i) for i in range(7)]
    assert sizes == [16, 32, 64, 128, 256, 256, 256]


def test_an_idle_learner_halves_down_to_the_smallest_size_once_a_window() -> None:
    pacer = StepPacer(8, 256, budget=0.5)
    sizes = []
    for i in range(1, 40):                     # batches every 0.25 s, learner busy 1%
        pacer.learned(0.0025)
        sizes.append(pacer.update(backlogged=False, now=0.25 * i))
    assert sizes[:3] == [256, 256, 256]         # no decision inside the first window
    assert sizes[3] == 128 and sizes[7] == 64   # one halving per window
    assert sizes[-1] == 8


@pytest.mark.parametrize("busy, expected", [(0.7, 128), (0.3, 64), (0.1, 32)])
def test_the_budget_grows_keeps_or_shrinks_the_size(busy: float, expected: int) -> None:
    # Over budget (0.5): grow; between budget/2.5 and the budget: keep; below: shrink.
    pacer = StepPacer(8, 256, budget=0.5)
    pacer.value = 64
    pacer.learned(busy * WINDOW_S)
    assert pacer.update(backlogged=False, now=WINDOW_S) == expected


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(ValueError):
        StepPacer(64, 32)


def _send(producer: KafkaProducer, topic: str, rng: np.random.Generator, n: int, start: int) -> None:
    x = rng.normal(size=(n, 3))
    for i, row in enumerate(x.tolist()):
        label = "yes" if row[0] + row[1] > 0 else "no"
        producer.send(topic, encode_event(row, label, event_id=str(start + i)))


def test_the_daemon_catches_up_with_big_steps_then_learns_with_small_ones(
        broker, daemons, tmp_path: Path) -> None:
    bs = broker.bootstrap_servers
    topic = unique("pace")
    ensure_topics(bs, {topic: 1, f"{topic}.dlq": 1, f"{topic}.predictions": 1})
    rng = np.random.default_rng(0)
    producer = KafkaProducer(bootstrap_servers=bs, linger_ms=5)
    backlog = 60_000
    _send(producer, topic, rng, backlog, 0)
    producer.flush()
    d = DaemonProcess(bs, tmp_path / "ckpt", topic, unique("g"), extra_env={
        "STREAM_LEARNER_PROBES__PER_CLASS": "0"})
    daemons.append(d)
    seen: set[float] = set()

    def catching_up() -> bool:
        d.assert_alive()
        m = d.metrics()
        seen.add(m.get("stream_learner_step_size_events", -1.0))
        return m.get("stream_learner_events_consumed_total", 0) >= backlog

    wait_for(catching_up, 120, "backlog consumed", every=0.05)
    assert 256.0 in seen, seen                    # full batches: the largest steps

    stop = threading.Event()

    def trickle() -> None:                        # ~400 events/s: the learner idles
        sent = backlog
        while not stop.is_set():
            _send(producer, topic, rng, 20, sent)
            producer.flush()
            sent += 20
            time.sleep(0.05)

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        wait_for(lambda: d.metric("stream_learner_step_size_events") == 8.0, 30,
                 "step size down to model.step_size (8)")
        learned = d.metric("stream_learner_events_learned_total")
        wait_for(lambda: d.metric("stream_learner_events_learned_total") > learned + 200, 10,
                 "learning goes on at the small step size")
    finally:
        stop.set()
        thread.join(5)
        producer.close()
    assert d.terminate() == 0
