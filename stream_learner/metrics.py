"""Prometheus series (listed in docs/metrics.md) and the HTTP endpoint.

One port serves ``/metrics``, ``/healthz`` (alive and the loop is not stuck) and
``/readyz`` (consuming), with per-connection deadlines and a bound on open connections
(:mod:`~stream_learner.metrics_server`; what the probes report is
:mod:`~stream_learner.health`). Each daemon has its own registry, so several can share a
process in tests without clashing.
"""

from __future__ import annotations

import threading
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
from prometheus_client import (CollectorRegistry, Counter, Gauge, Histogram,
                               Info, ProcessCollector, generate_latest)
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from .drift.export import DriftMetrics
from .federation.export import FederationMetrics
from .label_metrics import LabelMetrics
from .events import DLQ_REASONS
from .outputs import OUTPUT_FAILURE_REASONS
from .save_failures import CHECKPOINT_FAILURE_REASONS

# /healthz, /readyz and the server live beside the registry; named here, so `from
# stream_learner.metrics import Health, MetricsServer` keeps working.
from .health import Health
from .metrics_server import MetricsServer

__all__ = ["LATENCY_BUCKETS", "PREFIX", "UPDATE_BUCKETS", "BulkHistogram", "Health", "Metrics",
           "MetricsServer"]

PREFIX = "stream_learner_"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                   300.0)
UPDATE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class BulkHistogram:
    """A histogram that takes a whole numpy array per call.

    prometheus_client's ``Histogram.observe`` costs a lock and a bucket search per
    value; at 100k events/s that is a visible share of the loop. Here one
    ``searchsorted`` + ``bincount`` handles a micro-batch. Exposition is standard.
    """

    def __init__(self, name: str, documentation: str, buckets: Sequence[float],
                 registry: CollectorRegistry) -> None:
        self.name = name
        self.documentation = documentation
        self._upper = np.array([*buckets, np.inf])
        self._counts = np.zeros(self._upper.size, dtype=np.int64)
        self._sum = 0.0
        self._lock = threading.Lock()
        registry.register(self)

    def observe_many(self, values: np.ndarray) -> None:
        if values.size == 0:
            return
        counts = np.bincount(np.searchsorted(self._upper, values, side="left"),
                             minlength=self._upper.size)
        with self._lock:
            self._counts += counts
            self._sum += float(values.sum())

    def quantile(self, q: float) -> float:
        """Upper bucket bound holding the q-quantile (what histogram_quantile bounds)."""
        with self._lock:
            cum = np.cumsum(self._counts)
        if cum[-1] == 0:
            return float("nan")
        return float(self._upper[np.searchsorted(cum, q * cum[-1], side="left")])

    def describe(self) -> Iterable[Metric]:
        return [HistogramMetricFamily(self.name, self.documentation)]

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            cum = np.cumsum(self._counts).tolist()
            total = self._sum
        buckets = [(floatToGoString(u), c) for u, c in zip(self._upper.tolist(), cum)]
        yield HistogramMetricFamily(self.name, self.documentation, buckets=buckets,
                                    sum_value=total)


class Metrics:
    """Every series the daemon exports, registered on its own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        p = PREFIX
        self.events_consumed = Counter(p + "events_consumed_total",
                                       "Events read from Kafka.", registry=r)
        self.events_learned = Counter(p + "events_learned_total",
                                      "Labeled events the model learned from.", registry=r)
        self.events_rejected = Counter(p + "events_rejected_total",
                                       "Events sent to the dead-letter topic.", ["reason"],
                                       registry=r)
        for reason in DLQ_REASONS:
            self.events_rejected.labels(reason)
        self.predictions = Counter(p + "predictions_total",
                                   "Predictions published for unlabeled events.", registry=r)
        self.consumer_lag = Gauge(p + "consumer_lag", "Messages behind the partition's end.",
                                  ["partition"], registry=r)
        self.last_event_ts = Gauge(p + "last_event_processed_timestamp_seconds",
                                   "When the last event was processed.", registry=r)
        self.update_duration = Histogram(p + "update_duration_seconds",
                                         "Time to predict and learn one micro-batch.",
                                         buckets=UPDATE_BUCKETS, registry=r)
        self.event_to_update = BulkHistogram(p + "event_to_update_seconds",
                                             "From the event's ts to the end of its update.",
                                             LATENCY_BUCKETS, r)
        self.prequential_accuracy = Gauge(p + "prequential_accuracy",
                                          "Test-then-train accuracy since start or restore.",
                                          registry=r)
        self.rolling_accuracy = Gauge(p + "rolling_accuracy",
                                      "Test-then-train accuracy over the recent window.",
                                      registry=r)
        self.loss = Gauge(p + "loss", "Training loss of the last update.", registry=r)
        self.replay_buffer_events = Gauge(p + "replay_buffer_events",
                                          "Events held in the replay buffer.", registry=r)
        self.model_classes = Gauge(p + "model_classes", "Classes the model knows.", registry=r)
        self.step_size = Gauge(p + "step_size_events", "New events per gradient step: "
                               "model.step_size while keeping up, more under backlog.",
                               registry=r)
        self.events_held_out = Counter(p + "events_held_out_total",
                                       "Events kept as forgetting probes, never learned.",
                                       registry=r)
        self.forgetting = Gauge(p + "forgetting", "Mean drop from each probe's best accuracy "
                                "to its accuracy now (0..1).", registry=r)
        self.backward_transfer = Gauge(p + "backward_transfer", "Mean change of closed "
                                       "periods' probe accuracy since their period closed.",
                                       registry=r)
        self.probe_accuracy = Gauge(p + "probe_accuracy", "Accuracy of each forgetting probe "
                                    "(slot 0 = oldest; bounded by probes.max_probes).",
                                    ["probe"], registry=r)
        self.steps_skipped = Counter(p + "steps_skipped_total", "Gradient steps not applied "
                                     "because the loss or a gradient was NaN/inf.", registry=r)
        self.checkpoint_last_success = Gauge(p + "checkpoint_last_success_timestamp_seconds",
                                             "When the last checkpoint was written.", registry=r)
        self.checkpoint_failures = Counter(
            p + "checkpoint_failures_total", "Checkpoint writes that failed (no_space, "
            "read_only, permission, io_error, other); retried with a backoff.", ["reason"],
            registry=r)
        for reason in CHECKPOINT_FAILURE_REASONS:
            self.checkpoint_failures.labels(reason)
        self.model_exports = Counter(p + "model_exports_total", "Periodic ONNX model "
                                     "exports (export.every_seconds), by outcome (ok, failed).",
                                     ["outcome"], registry=r)
        for outcome in ("ok", "failed"):
            self.model_exports.labels(outcome)
        self.checkpoint_duration = Histogram(p + "checkpoint_duration_seconds",
                                             "Time to write a checkpoint and commit offsets.",
                                             registry=r)
        self.kafka_errors = Counter(p + "kafka_errors_total",
                                    "Kafka operations that failed and will be retried.",
                                    ["operation"], registry=r)
        for op in ("connect", "poll", "commit", "produce"):
            self.kafka_errors.labels(op)
        self.output_failures = Counter(
            p + "output_failures_total", "DLQ and prediction records Kafka refused for good "
            "(too large, not authorised, unknown topic), spilled to undeliverable.jsonl "
            "after kafka.output_retry_seconds.", ["topic", "reason"], registry=r)
        self.output_pending_bytes = Gauge(
            p + "output_pending_bytes", "Bytes of DLQ and prediction records not yet "
            "acknowledged by Kafka (consumption pauses at kafka.max_pending_bytes).",
            registry=r)
        self.ready = Gauge(p + "ready", "1 while /readyz answers 200: consuming with an "
                           "assignment, and nothing blocks it (a full undeliverable.jsonl).",
                           registry=r)
        self.build_info = Info(p + "build", "Version of stream-learner.", registry=r)
        self.model_info = Info(p + "model", "Strategy and device of the model.", registry=r)
        self.drift = DriftMetrics(r, p)
        self.federation = FederationMetrics(r, p)
        self.labels = LabelMetrics(r, p, BulkHistogram)
        # process_cpu_seconds_total, process_resident_memory_bytes, process_start_time_seconds
        # (the restart-loop alert watches the last) under the standard names.
        ProcessCollector(registry=r)
        self.gpu_allocated: Gauge | None = None
        self.gpu_reserved: Gauge | None = None

    def declare_outputs(self, topics: Iterable[str]) -> None:
        """Every (topic, reason) of output_failures_total at 0: alerts need the series."""
        for topic in topics:
            for reason in OUTPUT_FAILURE_REASONS:
                self.output_failures.labels(topic, reason)

    def declare_worker(self, pid: Callable[[], int | None]) -> None:
        """CPU and memory of the learner worker process (stream_learner_worker_process_*)."""
        ProcessCollector(namespace=PREFIX + "worker", pid=lambda: pid() or "no-worker",
                         registry=self.registry)

    def declare_gpu(self) -> None:
        """GPU memory series; registered only when the model is on CUDA."""
        r, p = self.registry, PREFIX
        self.gpu_allocated = Gauge(p + "gpu_memory_allocated_bytes", "GPU memory held by "
                                   "tensors (torch.cuda.memory_allocated).", registry=r)
        self.gpu_reserved = Gauge(p + "gpu_memory_reserved_bytes", "GPU memory reserved by "
                                  "torch's caching allocator (memory_reserved).", registry=r)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
