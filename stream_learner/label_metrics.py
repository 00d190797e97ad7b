"""Prometheus series of label-later events (docs/labels.md, docs/metrics.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge

from .label_join import EVICTION_REASONS, JOIN_OUTCOMES

if TYPE_CHECKING:
    from .metrics import BulkHistogram

DELAY_SECONDS_BUCKETS = (0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0,
                         86400.0)
DELAY_EVENTS_BUCKETS = (1.0, 10.0, 100.0, 1_000.0, 10_000.0, 100_000.0, 1_000_000.0)


class LabelMetrics:
    def __init__(self, r: CollectorRegistry, p: str, histogram: type[BulkHistogram]) -> None:
        self.served_accuracy = Gauge(
            p + "served_accuracy", "Accuracy of the predictions as served, scored when the "
            "label arrives (inline labels count with delay 0); window rolling or total.",
            ["window"], registry=r)
        for window in ("rolling", "total"):
            self.served_accuracy.labels(window)
        self.delay_seconds = histogram(p + "label_delay_seconds", "Kafka record time from "
                                       "a features event to its joined label.",
                                       DELAY_SECONDS_BUCKETS, r)
        self.delay_events = histogram(p + "label_delay_events", "Events this daemon consumed "
                                      "between a features event and its joined label.",
                                      DELAY_EVENTS_BUCKETS, r)
        self.pending = Gauge(p + "pending_labels", "Predictions waiting for their label "
                             "(bounded by labels.max_pending).", registry=r)
        self.joins = Counter(p + "label_joins_total", "Label events by outcome: joined, "
                             "unknown_id, duplicate_label, label_expired.", ["outcome"],
                             registry=r)
        for outcome in JOIN_OUTCOMES:
            self.joins.labels(outcome)
        self.evictions = Counter(p + "label_evictions_total", "Predictions dropped from the "
                                 "join store without a label, by reason (expired, capacity, "
                                 "replaced).", ["reason"], registry=r)
        for reason in EVICTION_REASONS:
            self.evictions.labels(reason)
