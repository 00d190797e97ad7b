"""The daemon's outward signs of life: what systemd, /healthz and /readyz hear.

Kept apart from the loop because these are the only places the daemon talks to its
supervisor (:mod:`~stream_learner.systemd`) and its probes: the watchdog tick, READY once,
the STATUS line every ``STATUS_EVERY_S`` and, once a second (also when idle), the gauges,
the readiness block while the undeliverable spill is full and the recreated-topic check.
"""

from __future__ import annotations

import time
from typing import Callable

from .consumer_side import ConsumerSide
from .counters import Counters
from .evaluation import PrequentialAccuracy
from .metrics import Health, Metrics
from .output_sink import OutputSink
from .systemd import Notifier

STATUS_EVERY_S = 10.0              # systemd STATUS= line (`systemctl status`) refresh


class Housekeeping:
    def __init__(self, metrics: Metrics, health: Health, notifier: Notifier,
                 sink: OutputSink, positions: ConsumerSide, counters: Counters,
                 accuracy: PrequentialAccuracy, refresh_gauges: Callable[[], None]) -> None:
        self.metrics, self.health, self.notifier = metrics, health, notifier
        self.sink, self.positions = sink, positions
        self.counters, self.accuracy = counters, accuracy
        self.refresh_gauges = refresh_gauges
        self.notified_ready = False
        self._next_status = 0.0
        self._next_housekeeping = 0.0

    def tick(self) -> None:
        """The loop is alive: /healthz and systemd's watchdog both hear it from here only."""
        self.health.tick()
        self.notifier.watchdog()

    def status(self, text: str) -> None:
        """A STATUS= line now (`systemctl status`), e.g. while connecting."""
        self.notifier.status(text)

    def ready(self, text: str) -> None:
        """Readiness on an assignment; READY=1 once: later rebalances are not start-ups."""
        self.health.ready = True
        self.metrics.ready.set(1)
        if not self.notified_ready:
            self.notified_ready = True
            self.notifier.ready(text)

    def not_ready(self) -> None:
        """Shutting down: STOPPING=1 and both readiness signals off."""
        self.notifier.stopping()
        self.health.ready = False
        self.metrics.ready.set(0)

    def due(self) -> bool:
        return time.monotonic() >= self._next_housekeeping

    def run(self) -> None:
        """Once a second, also when idle: gauges, and positions past the log's end."""
        now = time.monotonic()
        self._next_housekeeping = now + 1.0
        self.refresh_gauges()
        if self.sink.producer is not None:
            spill = self.sink.producer.spill
            self.health.block("undeliverable", f"{spill.path} is full "
                              f"(checkpoint.undeliverable_max_bytes): records wait, "
                              f"checkpoints stop" if spill.full else None)
            self.metrics.ready.set(1 if self.health.is_ready() else 0)
        if self.notified_ready and now >= self._next_status:
            self._next_status = now + STATUS_EVERY_S
            self.notifier.status(f"{self.counters.learned} events learned, "
                                 f"{self.counters.rejected_total} rejected, "
                                 f"lag {self.positions.lag_total}, "
                                 f"rolling accuracy {self.accuracy.rolling_accuracy:.3f}")
        self.positions.restart_recreated()
