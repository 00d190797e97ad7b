"""The one place that knows the delivery order of a checkpoint (docs/architecture.md):

  1. finish the update of every polled batch (drain the learner);
  2. flush the producer (DLQ and predictions) until every record is acknowledged;
  3. write the checkpoint (state + next offset per partition) atomically;
  4. commit the same offsets to Kafka (a hint for other replicas; the checkpoint rules).

A crash between any two steps replays events after the checkpoint and skips none. A
write that fails (disk full, read-only, EIO) is counted and retried with a backoff by
:class:`~stream_learner.save_failures.SaveFailures`; past
``checkpoint.max_unsaved_events`` unsaved events the daemon stops consuming.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable, Literal, Protocol

from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from .config import Settings
from .consumer_side import ConsumerSide
from .export.periodic import PeriodicExporter
from .metrics import Health, Metrics
from .output_sink import OutputSink
from .save_failures import SaveFailures

log = logging.getLogger(__name__)

CommitMode = Literal["sync", "async", "none"]


class CheckpointWriter(Protocol):
    """Writes one checkpoint atomically, or raises ``OSError``: the daemon's is the
    learner host's :class:`~stream_learner.learner_protocol.HostCheckpoints` (the file is
    written where the model is), a test's may be a
    :class:`~stream_learner.checkpoint.CheckpointStore`."""

    def save(self, state: dict[str, Any]) -> str | Path: ...


class CheckpointCoordinator:
    def __init__(self, settings: Settings, metrics: Metrics, health: Health,
                 store: CheckpointWriter, sink: OutputSink, positions: ConsumerSide,
                 drain: Callable[[], None], snapshot: Callable[[], dict[str, Any]]) -> None:
        """``drain`` finishes (and accounts for) every update in flight; ``snapshot``
        returns the state to save, offsets included (the daemon's: every part but the
        learner, which ``store`` adds where the model is)."""
        self.settings = settings
        self.metrics = metrics
        self.health = health
        self.store = store
        self.sink = sink
        self.positions = positions
        self.drain = drain
        self.snapshot = snapshot
        self.save_failures = SaveFailures(health, metrics.checkpoint_failures,
                                          settings.checkpoint.dir)
        self.last_checkpoint_path: str | None = None
        self.last_checkpoint_time = time.time()
        self.since_checkpoint = 0          # events consumed since the last saved checkpoint
        self.exporter = PeriodicExporter(settings.export, metrics.model_exports)

    def consumed(self, n: int) -> None:
        self.since_checkpoint += n

    def due(self) -> bool:
        c = self.settings.checkpoint
        return self.since_checkpoint > 0 and self.save_failures.may_retry() and (
            self.since_checkpoint >= min(c.every_events, c.max_unsaved_events)
            or time.time() - self.last_checkpoint_time >= c.every_seconds)

    def too_many_unsaved(self) -> bool:
        """A crash now would replay ``checkpoint.max_unsaved_events``: take no more."""
        return self.since_checkpoint >= self.settings.checkpoint.max_unsaved_events

    def checkpoint(self, commit: CommitMode = "sync", flush_timeout_s: float = 5.0) -> bool:
        """Flush → checkpoint → commit. False (and retried later) if the flush is incomplete."""
        t0 = time.perf_counter()
        self.drain()
        if not self.sink.flush(flush_timeout_s):
            self.metrics.kafka_errors.labels("produce").inc()
            log.warning("%d DLQ/prediction records not yet acknowledged; checkpoint deferred",
                        self.sink.pending)
            return False
        try:
            self.last_checkpoint_path = str(self.store.save(self.snapshot()))
        except OSError as exc:        # disk full, read-only, EIO: retried, never a crash
            self.save_failures.failed(exc, self.since_checkpoint)
            self.metrics.ready.set(1 if self.health.is_ready() else 0)
            return False
        self.save_failures.succeeded()
        self.last_checkpoint_time = time.time()
        self.since_checkpoint = 0
        if commit != "none":
            self.commit(commit)
        self.metrics.checkpoint_duration.observe(time.perf_counter() - t0)
        self.metrics.checkpoint_last_success.set(self.last_checkpoint_time)
        # After save and commit: an export is a copy of a checkpoint already delivered,
        # so it can neither reorder nor delay the delivery steps; it never raises.
        self.exporter.after_checkpoint(self.last_checkpoint_path)
        return True

    def commit(self, mode: CommitMode) -> Any:
        """Commit the checkpoint's offsets of owned partitions ("sync" or "async")."""
        consumer = self.positions.consumer
        if consumer is None or self.since_checkpoint:
            # Offsets past the last checkpoint must never reach the group: a restart
            # would start after events this replica's saved model has not learned.
            return None
        owned = consumer.assignment()
        offsets = {tp: OffsetAndMetadata(off, "", -1)
                   for tp, off in self.positions.offsets.items() if tp in owned}
        if not offsets:
            return None
        try:
            if mode == "async":
                return consumer.commit_async(offsets)
            consumer.commit(offsets)
        except KafkaError as exc:
            # The checkpoint already holds these offsets; the next commit catches up.
            self.metrics.kafka_errors.labels("commit").inc()
            log.warning("offset commit failed (%s); checkpoint remains authoritative", exc)
        return None
