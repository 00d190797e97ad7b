"""The step size follows the stream: small steps unless a backlog cannot clear in time.

Unit tests drive :class:`StepPacer` with a fake clock; the daemon test watches
``stream_learner_step_size_events`` on a real broker while a backlog drains and then
while events trickle in."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from kafka import KafkaProducer

from stream_learner.pacing import WINDOW_S, StepPacer, catch_up_step
from stream_learner.synth import encode_event, ensure_topics

from conftest import DaemonProcess, unique, wait_for


@pytest.mark.parametrize("lag, expected", [
    (0, 8),
    (3_000_000, 8),          # exactly catch_up_seconds at the small step: keep it
    (3_000_001, 16),         # just over: the next power of two
    (6_000_000, 16),         # needs 2x
    (6_000_001, 32),
    (12_000_000, 32),        # needs 4x
    (24_000_001, 128),       # needs a bit over 8x
    (10**9, 256),            # hopeless: the largest, no more
])
def test_catch_up_step_grows_just_enough(lag: int, expected: int) -> None:
    # 10,000 events/s at step 8 clears 3,000,000 events in the 300 s allowed.
    assert catch_up_step(lag, rate_small=10_000.0, low=8, high=256,
                         catch_up_seconds=300.0) == expected


def test_catch_up_step_without_a_measured_rate_is_the_small_step() -> None:
    assert catch_up_step(10**9, rate_small=0.0, low=8, high=256,
                         catch_up_seconds=300.0) == 8


def test_a_backlog_that_clears_in_time_keeps_the_small_step() -> None:
    # The old rule doubled on every full micro-batch: 16, 32, ... 256 here.
    pacer = StepPacer(8, 256, budget=0.5, catch_up_seconds=300.0)
    assert pacer.value == 256
    sizes = []
    for i in range(10):
        sizes.append(pacer.update(backlogged=True, now=0.01 * i, lag=1_000_000 - 1024 * i))
        pacer.learned(0.1, events=1024)           # 10,240 events/s at step 8
    assert sizes == [8] * 10                       # first batch: measure the small step
    assert pacer.rate_small == pytest.approx(10_240.0)


def test_a_backlog_too_big_for_the_deadline_grows_and_shrinks_with_the_lag() -> None:
    pacer = StepPacer(8, 256, budget=0.5, catch_up_seconds=10.0)
    pacer.update(backlogged=True, now=0.0, lag=50_000)
    pacer.learned(1.0, events=1000)                # 1,000 events/s at step 8
    assert pacer.rate_small == 1000.0
    # 50,000 in 10 s needs 5,000 events/s: 5x, so 8 * 8.
    assert pacer.update(backlogged=True, now=0.1, lag=50_000) == 64
    pacer.learned(1.0, events=20_000)              # at step 64: not the small-step rate
    assert pacer.rate_small == 1000.0
    assert pacer.update(backlogged=True, now=0.2, lag=15_000) == 16
    assert pacer.update(backlogged=True, now=0.3, lag=9_000) == 8


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


def distinct(trace: list[float]) -> list[float]:
    """The trace with repeats collapsed: the sizes in the order the daemon took them.

    >>> distinct([256.0, 256.0, 128.0, 128.0, 64.0])
    [256.0, 128.0, 64.0]
    """
    out: list[float] = []
    for v in trace:
        if not out or out[-1] != v:
            out.append(v)
    return out


class Trickle:
    """~400 events/s from a thread: the learner idles at the smallest step size."""

    def __init__(self, producer: KafkaProducer, topic: str, rng: np.random.Generator,
                 start: int) -> None:
        self.producer, self.topic, self.rng, self.sent = producer, topic, rng, start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            _send(self.producer, self.topic, self.rng, 20, self.sent)
            self.producer.flush()
            self.sent += 20
            time.sleep(0.05)

    def stop(self) -> int:
        """Stop sending; the number of events sent so far, all flushed."""
        self._stop.set()
        self._thread.join(10)
        return self.sent


HALVINGS = [256.0, 128.0, 64.0, 32.0, 16.0, 8.0]   # one per WINDOW_S while idle


def test_the_daemon_halves_its_step_when_idle_and_doubles_it_under_backlog(
        broker, daemons, tmp_path: Path) -> None:
    bs = broker.bootstrap_servers
    topic = unique("pace")
    ensure_topics(bs, {topic: 1, f"{topic}.dlq": 1, f"{topic}.predictions": 1})
    rng = np.random.default_rng(0)
    producer = KafkaProducer(bootstrap_servers=bs, linger_ms=5)
    d = DaemonProcess(bs, tmp_path / "ckpt", topic, unique("g"), extra_env={
        "STREAM_LEARNER_PROBES__PER_CLASS": "0",
        # The daemon is SIGSTOPped while a backlog is written: long enough a session
        # that it keeps its partition meanwhile.
        "STREAM_LEARNER_KAFKA__SESSION_TIMEOUT_MS": "30000",
        # A deadline no backlog below can meet at step 8, so it must grow (the default
        # 300 s keeps step 8 for this one: tested on StepPacer above).
        "STREAM_LEARNER_MODEL__CATCH_UP_SECONDS": "0.01",
        # The pacer from the first event: a young model's cap at model.step_size (tested
        # above, test_a_young_model_learns_at_the_small_step) would hide its halvings.
        "STREAM_LEARNER_MODEL__WARMUP_EVENTS": "0"})
    daemons.append(d)
    trace: list[float] = []

    def sample(done: Callable[[dict[str, float]], bool]) -> Callable[[], bool]:
        def probe() -> bool:
            d.assert_alive()
            m = d.metrics()
            if "stream_learner_step_size_events" in m:
                trace.append(m["stream_learner_step_size_events"])
            return bool(m) and done(m)
        return probe

    def at_step(size: float) -> Callable[[dict[str, float]], bool]:
        return lambda m: m["stream_learner_step_size_events"] == size

    # 1. A slow stream from the start: from the largest size, halved once a window. It
    # starts once the daemon consumes: events piled up during start-up would make a full
    # micro-batch, a backlog, which goes straight to the small step to measure it.
    wait_for(lambda: d.metric("stream_learner_ready") == 1, 60, "daemon consuming")
    trickle = Trickle(producer, topic, rng, 0)
    wait_for(sample(at_step(8.0)), 60, "step size down to model.step_size (8)", every=0.05)
    assert distinct(trace) == HALVINGS, trace

    # 2. A backlog: the consumer lag the loop feeds the pacer grows the step size.
    sent = trickle.stop()
    d.wait_consumed(sent)
    assert d.metric("stream_learner_step_size_events") == 8.0
    trace.clear()
    backlog = 30_000
    d.proc.send_signal(signal.SIGSTOP)          # the backlog waits in the log, unread
    try:
        _send(producer, topic, rng, backlog, sent)
        producer.flush()
    finally:
        d.proc.send_signal(signal.SIGCONT)
    sent += backlog
    wait_for(sample(lambda m: m["stream_learner_events_consumed_total"] == sent), 120,
             f"backlog of {backlog} consumed", every=0.02)
    grown = distinct(trace)
    # 30,000 events in 0.01 s: the largest; it may come down as the lag drains.
    assert grown[0] == 8.0 and 256.0 in grown, grown
    assert set(grown) <= set(HALVINGS), grown

    # 3. Slow again: back down to the smallest size, one halving per window.
    trace.clear()
    trickle = Trickle(producer, topic, rng, sent)
    try:
        wait_for(sample(at_step(8.0)), 60, "step size back down to 8", every=0.05)
        assert distinct(trace) == HALVINGS[HALVINGS.index(trace[0]):], trace
        learned = d.metric("stream_learner_events_learned_total")
        wait_for(lambda: d.metric("stream_learner_events_learned_total") > learned + 200, 10,
                 "learning goes on at the small step size")
    finally:
        sent = trickle.stop()
        producer.close()
    d.wait_consumed(sent)
    assert d.metric("stream_learner_events_consumed_total") == sent
    assert d.terminate() == 0


def test_a_young_model_learns_at_the_small_step() -> None:
    """Before model.warmup_events are learned the step is model.step_size whatever the
    pacer says (it starts at max_step_size, before it has measured a rate); after, the
    pacer's size."""
    from stream_learner.config import Settings
    from stream_learner.counters import Counters
    from stream_learner.learn_accounting import LearnAccounting
    from stream_learner.metrics import Metrics

    s = Settings(model={"step_size": 8, "max_step_size": 256, "warmup_events": 500})
    counters = Counters()
    acc = LearnAccounting(s, Metrics(), counters)
    assert acc.pacer.value == 256
    assert acc.pace(full_batch=False, lag=0) == 8
    counters.learned = 499
    assert acc.pace(full_batch=False, lag=0) == 8
    counters.learned = 500
    assert acc.pace(full_batch=False, lag=0) == 256


def test_the_catch_up_deadline_is_set_once_so_it_does_not_recede() -> None:
    """10 s to clear 15,000 events at 1,000 events/s at the small step: 1.5x, step 16.
    The learner then gets only 1.2x out of it (a larger step is not proportionally
    faster).  Re-aiming at 10 s from each batch would fall back to the small step as the
    lag shrinks (9,000 in 10 s fits at 1,000/s) and never clear within the 10 s; against
    the deadline the step grows as time runs out, and past it is the largest."""
    pacer = StepPacer(8, 256, budget=0.5, catch_up_seconds=10.0)
    pacer.update(backlogged=True, now=0.0, lag=15_000)          # measure the small step
    pacer.learned(1.0, events=1000)
    assert pacer.update(backlogged=True, now=0.0, lag=15_000) == 16
    assert pacer.update(backlogged=True, now=5.0, lag=9_000) == 16    # 9,000 in 5 s: 1.8x
    assert pacer.update(backlogged=True, now=8.0, lag=5_000) == 32    # 5,000 in 2 s: 2.5x
    assert pacer.update(backlogged=True, now=10.5, lag=1_000) == 256  # late: all out
    # Caught up (a batch that is not full): the next backlog gets a fresh deadline.
    pacer.update(backlogged=False, now=11.0, lag=0)
    assert pacer.deadline is None
    assert pacer.update(backlogged=True, now=20.0, lag=5_000) == 8    # 5,000 in 10 s: 0.5x
    assert pacer.deadline == 30.0
