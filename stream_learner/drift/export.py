"""The drift series on the daemon's Prometheus registry, fed from :class:`DriftReport`.

Reports carry cumulative counts (they live in the learner's checkpoint), so the counters
here advance by the difference to the last report: nothing is counted twice, and a
restarted daemon continues from its checkpoint's totals.
"""

from __future__ import annotations

import math

from prometheus_client import CollectorRegistry, Counter, Gauge

from ..config import Settings
from .report import POLICIES, DriftReport


class DriftMetrics:
    def __init__(self, registry: CollectorRegistry, prefix: str) -> None:
        p, r = prefix, registry
        self.detected = Counter(p + "drift_detected_total", "Drifts detected, by river "
                                "detector and the signal it watches (error, loss).",
                                ["detector", "signal"], registry=r)
        self.warnings = Counter(p + "drift_warnings_total", "Drift warnings (river's binary "
                                "detectors) on the error signal.", ["detector"], registry=r)
        self.input_detected = Counter(p + "input_drift_detected_total", "Covariate drifts "
                                      "detected on the features (no labels needed).",
                                      registry=r)
        self.last_drift = Gauge(p + "last_drift_timestamp_seconds",
                                "When the last error or loss drift was detected.", registry=r)
        self.window = Gauge(p + "drift_window_events", "ADWIN's window width on the error "
                            "signal (events since the last drift for other detectors).",
                            registry=r)
        self.accuracy_before = Gauge(p + "accuracy_before_drift", "Prequential accuracy over "
                                     "up to 1000 events before the last drift began "
                                     "(estimated).", registry=r)
        self.accuracy_since = Gauge(p + "accuracy_since_drift",
                                    "Prequential accuracy since the last drift.", registry=r)
        self.adaptations = Counter(p + "drift_adaptations_total", "Adaptation policies that "
                                   "acted on a drift (pool = a recalled concept).", ["policy"],
                                   registry=r)
        self.lr_factor = Gauge(p + "plasticity_lr_factor", "Learning-rate multiplier of the "
                               "plasticity boost (1 = no boost).", registry=r)
        self.concept_id = Gauge(p + "concept_id", "Id of the concept the model is on.",
                                registry=r)
        self.concepts_known = Gauge(p + "concepts_known", "Concept snapshots in the pool.",
                                    registry=r)
        self.concept_reuse = Counter(p + "concept_reuse_total", "Times a past concept was "
                                     "recalled from the pool.", registry=r)
        for policy in POLICIES:
            self.adaptations.labels(policy)
        self.lr_factor.set(1.0)
        self._seen: dict[str, int] = {}

    def declare(self, settings: Settings) -> None:
        """Zero series for the configured detectors, so dashboards see them from the start."""
        d = settings.drift
        if d.detector != "none":
            self.detected.labels(d.detector, "error")
            # Also for detectors without a warning zone (ADWIN): a true 0, and panels and
            # alerts see a series instead of "no data".
            self.warnings.labels(d.detector)
        if d.loss_detector != "none":
            self.detected.labels(d.loss_detector, "loss")

    def apply(self, report: DriftReport) -> None:
        for key, total in report.drifts.items():
            signal, detector = key.split(":", 1)
            delta = self._delta("d:" + key, total)
            if not delta:
                continue
            if signal == "input":
                self.input_detected.inc(delta)
            else:
                self.detected.labels(detector, signal).inc(delta)
        for key, total in report.warnings.items():
            delta = self._delta("w:" + key, total)
            if delta:
                self.warnings.labels(key.split(":", 1)[1]).inc(delta)
        for policy, total in report.adaptations.items():
            delta = self._delta("a:" + policy, total)
            if delta:
                self.adaptations.labels(policy).inc(delta)
        delta = self._delta("reuse", report.concept_reuse)
        if delta:
            self.concept_reuse.inc(delta)
        if report.last_drift_time:
            self.last_drift.set(report.last_drift_time)
        self.window.set(report.window_events)
        for gauge, value in ((self.accuracy_before, report.accuracy_before),
                             (self.accuracy_since, report.accuracy_since)):
            if not math.isnan(value):
                gauge.set(value)
        self.lr_factor.set(report.lr_factor)
        self.concept_id.set(report.concept_id)
        self.concepts_known.set(report.concepts_known)

    def _delta(self, key: str, total: int) -> int:
        before = self._seen.get(key, 0)
        self._seen[key] = total
        return max(0, total - before)
