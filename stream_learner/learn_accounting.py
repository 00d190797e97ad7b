"""What the daemon records about learning: accuracy, loss, step pacing, probes, drift.

Fed with each finished update (:class:`~stream_learner.learner_host.Learned`); sets the
model's Prometheus series. The counters are shared with the rest of the daemon and
restored from the checkpoint, so a replayed event is never counted twice.
"""

from __future__ import annotations

import time

import numpy as np

from .config import Settings
from .counters import Counters
from .drift import DriftReport
from .evaluation import PrequentialAccuracy, RollingMean
from .learner_host import Learned, LearnerInfo
from .metrics import Metrics
from .pacing import StepPacer


class LearnAccounting:
    def __init__(self, settings: Settings, metrics: Metrics, counters: Counters) -> None:
        self.metrics = metrics
        self.counters = counters
        self.accuracy = PrequentialAccuracy(settings.metrics.rolling_window)
        self.loss = RollingMean(half_life=settings.metrics.rolling_window)
        m = settings.model
        self.pacer = StepPacer(m.step_size, m.max_step_size, m.learn_budget, time.monotonic(),
                               catch_up_seconds=m.catch_up_seconds)
        self.small_step, self.warmup_events = m.step_size, m.warmup_events
        metrics.step_size.set(self.pacer.value)
        self.forgetting = 0.0                   # last reported by the learner's probes
        self.drift: DriftReport | None = None   # last reported by the learner
        self._skipped_steps = 0                 # the learner reports a running total

    def pace(self, full_batch: bool, lag: int) -> int:
        """The step size for this batch's learning (see :class:`~.pacing.StepPacer`), but
        never above ``model.step_size`` before ``model.warmup_events`` are learned: a young
        model gains the most from each step, the warm-up is cheap at any size (4,096
        events at 8 per step: ~1 s here), and the pacer starts at the largest size."""
        step = self.pacer.update(backlogged=full_batch, now=time.monotonic(), lag=lag)
        if self.counters.learned < self.warmup_events:
            step = min(step, self.small_step)
        self.metrics.step_size.set(step)
        return step

    def learned(self, result: Learned, ts: np.ndarray) -> None:
        n = int(result.y.shape[0])
        self.accuracy.update(result.y, result.pred)
        self.loss.update(result.loss, n)
        self.metrics.loss.set(result.loss)
        self.counters.learned += n
        self.metrics.events_learned.inc(n)
        self.metrics.update_duration.observe(result.seconds)
        self.pacer.learned(result.seconds, n)
        m = self.metrics
        if result.held_out:
            self.counters.held_out += result.held_out
            m.events_held_out.inc(result.held_out)
        self.forgetting = result.forgetting
        m.forgetting.set(result.forgetting)
        m.backward_transfer.set(result.backward_transfer)
        for slot, acc in enumerate(result.probe_accuracy):
            if acc == acc:   # NaN until the probe's first evaluation
                m.probe_accuracy.labels(str(slot)).set(acc)
        if result.drift is not None:
            m.drift.apply(result.drift)
            self.drift = result.drift
        if result.skipped_steps > self._skipped_steps:
            m.steps_skipped.inc(result.skipped_steps - self._skipped_steps)
        self._skipped_steps = result.skipped_steps
        ts = ts[~np.isnan(ts)]
        if ts.size:
            self.metrics.event_to_update.observe_many(np.maximum(result.finished_at - ts, 0.0))

    def refresh_gauges(self, info: LearnerInfo) -> None:
        m = self.metrics
        m.prequential_accuracy.set(self.accuracy.accuracy)
        m.rolling_accuracy.set(self.accuracy.rolling_accuracy)
        m.model_classes.set(len(info.labels))
        m.replay_buffer_events.set(info.buffer_events)
        if m.gpu_allocated is not None and m.gpu_reserved is not None:
            m.gpu_allocated.set(info.gpu_memory_allocated_bytes)
            m.gpu_reserved.set(info.gpu_memory_reserved_bytes)
