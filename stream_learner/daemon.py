"""The daemon loop: poll → decode → predict → learn → checkpoint → commit.

The learner runs beside the loop (:mod:`stream_learner.learner_host`): batch ``k`` is
learned while batch ``k+1`` is polled, and results come back in submission order.

Delivery order, followed everywhere a checkpoint is taken (docs/architecture.md):
  1. finish the update of every polled batch (drain the learner);
  2. flush the producer (DLQ and predictions) until every record is acknowledged;
  3. write the checkpoint (state + next offset per partition) atomically;
  4. commit the same offsets to Kafka (a hint for other replicas; the checkpoint rules).
A crash between any two steps replays events after the checkpoint and skips none.

``Daemon`` is the facade and the loop; its collaborators each own one concern:
:mod:`~stream_learner.consumer_side` (positions, assignment checks, lag, pause/resume),
:mod:`~stream_learner.output_sink` (DLQ copies, predictions, backpressure, flush),
:mod:`~stream_learner.checkpoint_coordinator` (the order above, commits, save failures),
:mod:`~stream_learner.learn_accounting` (accuracy, loss, pacing, the model's gauges),
:mod:`~stream_learner.group_membership` (connecting, rebalance callbacks, leaving),
:mod:`~stream_learner.learner_results` (what the learner hands back),
:mod:`~stream_learner.daemon_state` (what a checkpoint holds; restore) and
:mod:`~stream_learner.housekeeping` (watchdog, READY/STATUS, once-a-second upkeep).
"""

from __future__ import annotations

import gc
import logging
import signal
import time
from typing import TYPE_CHECKING, Any

import numpy as np
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from . import __version__
from .checkpoint_coordinator import CheckpointCoordinator, CommitMode
from .config import Settings
from .consumer_side import ConsumerSide
from .counters import Counters
from .daemon_state import DaemonState
from .drift.report import DriftReport
from .events import EventDecoder, Limits
from .group_membership import GroupMembership
from .housekeeping import STATUS_EVERY_S, Housekeeping
from .label_side import LabelSide
from .learn_accounting import LearnAccounting
from .learner_results import ResultHandler
from .output_sink import DLQ_MAX_RECORD_BYTES, MAX_PENDING_RECORDS, OutputSink, dlq_copy
from .lineage import Lineage
from .learner_host import HostCheckpoints, LearnerHost, WorkerLearner, make_learner_host
from .metrics import Health, Metrics, MetricsServer
from .save_failures import SaveFailures
from .systemd import Notifier
from .warm_start import WarmStart

if TYPE_CHECKING:   # with federation on only (torch: it decodes and verifies tensors)
    from .federation.transport import Federation

log = logging.getLogger(__name__)

# Re-exported: tests and tools import these from here.
__all__ = ["CommitMode", "Counters", "DLQ_MAX_RECORD_BYTES", "Daemon", "MAX_PENDING_RECORDS",
           "STATUS_EVERY_S", "dlq_copy"]


def _declare_metrics(metrics: Metrics, settings: Settings, learner: LearnerHost) -> None:
    """The info series and the optional families this configuration exports."""
    metrics.build_info.info({"version": __version__})
    metrics.model_info.info({"strategy": settings.strategy.name,
                             "device": learner.info.device})
    metrics.drift.declare(settings)
    metrics.declare_outputs([settings.kafka.dlq_topic, settings.kafka.predictions_topic])
    if isinstance(learner, WorkerLearner):
        worker = learner     # narrowed for the lambda, which reads the pid at scrape time
        metrics.declare_worker(lambda: worker.pid)
    if learner.info.device.startswith("cuda"):
        metrics.declare_gpu()


def _event_limits(settings: Settings) -> Limits:
    """The decoder's and the label join's caps, from the settings."""
    k, m = settings.kafka, settings.model
    return Limits(max_label_length=m.max_label_length, max_id_length=k.max_id_length,
                  max_abs_feature=m.max_abs_feature,
                  max_event_age_seconds=k.max_event_age_seconds,
                  max_event_future_seconds=k.max_event_future_seconds)


def _make_federation(settings: Settings, metrics: Metrics) -> Federation | None:
    if not settings.federation.enabled:
        log.info("federation off: set federation.private_key_file and peer keys "
                 "(federation.peers or federation.peers_dir) to share updates")
        return None
    # Imported only when enabled: it decodes, verifies and merges peer tensors (torch).
    from .federation.transport import Federation

    return Federation(settings, metrics.federation)


class Daemon:
    """poll → decode → predict → learn → checkpoint → commit, composed from its parts."""

    def __init__(self, settings: Settings, metrics: Metrics | None = None,
                 notifier: Notifier | None = None) -> None:
        if not settings.kafka.bootstrap_servers:
            raise ValueError("kafka.bootstrap_servers is not set (STREAM_LEARNER_KAFKA__"
                             "BOOTSTRAP_SERVERS or kafka.bootstrap_servers in --config)")
        self.settings = settings   # model.threads: applied where the model is (LearnerCore)
        self.metrics = metrics or Metrics()
        self.health = Health(settings.metrics.stall_seconds)
        self.notifier = notifier or Notifier()
        # Before the learner worker starts: a bad key file stops start-up with one line.
        self.federation = _make_federation(settings, self.metrics)
        self.learner: LearnerHost = make_learner_host(settings)
        k, m, limits = settings.kafka, settings.model, _event_limits(settings)
        self.decoder = EventDecoder(m.n_features, m.feature_names, k.max_event_bytes, limits)
        self.labels = LabelSide(settings, self.metrics.labels, limits)
        self.counters = Counters()
        self.accounting = LearnAccounting(settings, self.metrics, self.counters)
        # The same objects, named here for the checkpoint and the benchmarks.
        self.accuracy, self.loss = self.accounting.accuracy, self.accounting.loss
        self.lineage = Lineage()                         # offsets this model processed
        self.positions = ConsumerSide(settings, self.metrics)
        self.sink = OutputSink(settings, self.metrics, self.counters)
        self.results = ResultHandler(
            self.metrics, self.learner, self.accounting, self.labels, self.sink,
            self.federation, self._refresh_gauges,
            last_checkpoint=lambda: self.checkpoints.last_checkpoint_path)
        self.parts = DaemonState(
            settings, self.metrics, self.learner, self.decoder, self.accuracy,
            self.loss, self.counters, self.positions, self.lineage, self.labels,
            self.federation, self._refresh_gauges)
        self.checkpoints = CheckpointCoordinator(
            settings, self.metrics, self.health, self.learner.checkpoints, self.sink,
            self.positions, drain=lambda: self.results.handle(self.learner.drain()),
            snapshot=self.parts.loop_state)
        self.housekeeping = Housekeeping(
            self.metrics, self.health, self.notifier, self.sink, self.positions,
            self.counters, self.accuracy, self._refresh_gauges)
        self.membership = GroupMembership(
            settings, self.metrics, self.positions, self.sink, self.checkpoints,
            self.federation, self.housekeeping, stopping=lambda: self.stopping)
        self.server: MetricsServer | None = None
        self.stopping = False
        self.warm = WarmStart(settings)          # a young model's smaller batches
        _declare_metrics(self.metrics, settings, self.learner)

    # -- what tests, tools and the demo read ------------------------------------------------
    @property
    def consumer(self) -> KafkaConsumer | None:
        return self.positions.consumer

    @property
    def offsets(self) -> dict[TopicPartition, int]:
        """Next offset to process per partition."""
        return self.positions.offsets

    @property
    def forgetting(self) -> float:
        return self.accounting.forgetting

    @property
    def drift(self) -> DriftReport | None:
        return self.accounting.drift

    @property
    def lag_total(self) -> int:
        return self.positions.lag_total

    @property
    def store(self) -> HostCheckpoints:
        """Checkpoint files, written and read where the model is (tools and tests)."""
        return self.learner.checkpoints

    @property
    def last_checkpoint_path(self) -> str | None:
        return self.checkpoints.last_checkpoint_path

    @property
    def save_failures(self) -> SaveFailures:
        return self.checkpoints.save_failures

    def checkpoint(self, commit: CommitMode = "sync", flush_timeout_s: float = 5.0) -> bool:
        """Drain → flush → checkpoint → commit; False (retried later) when incomplete."""
        return self.checkpoints.checkpoint(commit, flush_timeout_s)

    def state_dict(self) -> dict[str, Any]:
        return self.parts.state_dict()

    def restore(self) -> None:
        self.parts.restore()

    # -- lifecycle ------------------------------------------------------------------------
    def request_stop(self, *_: Any) -> None:
        """Signal-safe: only sets a flag; the main loop shuts down (kafka-python 3.x rule)."""
        self.stopping = True

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)

    def start_http(self) -> int:
        m = self.settings.metrics
        self.server = MetricsServer(self.metrics, self.health, m.host, m.port,
                                    m.max_connections, m.connection_timeout_seconds).start()
        return self.server.port

    def run(self) -> int:
        """Serve until asked to stop; returns the process exit code."""
        if self.server is None:
            self.start_http()
        self.restore()
        if not self.membership.connect():     # stopped before Kafka answered: nothing to save
            self.shutdown(final_checkpoint=False)
            return 0
        # Everything alive now (kafka-python, numpy; torch inline: ~1M objects) lives as
        # long as the process. Frozen, full collections skip it: without this, gen-2
        # pauses of 0.2-0.3 s set event_to_update's p99 (0.35 s at 10k/s; 0.17 s with).
        gc.collect()
        gc.freeze()
        clean = False
        try:
            while not self.stopping:
                self.housekeeping.tick()
                self._throttle_if_backlogged()
                limit = self.warm.next_limit(len(self.learner.info.labels), self.counters.learned)
                records = self.positions.next_batch(lambda: self.stopping, limit)
                if records:
                    self.process(records)
                self.results.handle(self.learner.completed())
                if self.federation is not None:
                    self._federate(self.federation)
                if self.housekeeping.due():
                    self.housekeeping.run()
                if self.checkpoints.due():
                    self.checkpoint(commit="sync")
            clean = True
        finally:
            # After an unexpected error the state may hold half a batch: never save it.
            self.shutdown(final_checkpoint=clean)
        return 0

    def shutdown(self, final_checkpoint: bool = True) -> None:
        self.housekeeping.not_ready()
        if (final_checkpoint and self.consumer is not None
                and self.checkpoints.since_checkpoint):
            self.checkpoint(commit="sync", flush_timeout_s=30.0)
        self.membership.leave()
        self.sink.close()
        if self.server is not None:
            self.server.stop()
            self.server = None
        self.learner.close()
        if self.federation is not None:
            self.federation.close()
        self.notifier.close()
        log.info("stopped after %d events (%d learned, %d rejected)", self.counters.consumed,
                 self.counters.learned, self.counters.rejected_total)

    # -- the loop ---------------------------------------------------------------------------
    def process(self, records: list[Any]) -> None:
        """Prequential step for one micro-batch: reject, then hand it to the learner."""
        batch = self.decoder.decode([r.value for r in records])
        label_events = self.labels.take_label_events(records, batch)
        self.sink.dead_letter(records, batch)
        seq = self.counters.consumed
        labeled = np.fromiter((lab is not None for lab in batch.labels), bool, len(batch.labels))
        n_labeled = int(labeled.sum())
        # Paced whenever this batch brings labels, inline or joined: a stream whose labels
        # all arrive later must not stay at the starting (largest) step.
        step = None
        if n_labeled or label_events:
            step = self.accounting.pace(len(records) >= self.warm.limit,
                                        self.positions.lag_total)
        if n_labeled:
            if n_labeled == labeled.size:
                x, labels, ts, rows = batch.x, batch.labels, batch.ts, batch.index
            else:
                x, ts, rows = batch.x[labeled], batch.ts[labeled], batch.index[labeled]
                labels = [lab for lab, m in zip(batch.labels, labeled) if m]
            # The records ride along: the learner may refuse an event (a label beyond
            # model.max_classes), and that one is dead-lettered when its result arrives.
            self.learner.submit_learn(x, labels, ctx=(ts, records, rows, None),  # type: ignore[arg-type]
                                      step_size=step)
            self.warm.handed(labels)
        if n_labeled < labeled.size:
            rows = np.flatnonzero(~labeled)
            ids = [batch.ids[r] for r in rows]
            unlabeled = [records[int(batch.index[r])] for r in rows]
            kept = self.labels.keep(records, batch, rows, seq)
            self.learner.submit_predict(
                batch.x[rows], ctx=(ids, [r.key for r in unlabeled],
                                    [(r.topic, r.partition, r.offset) for r in unlabeled], kept),
                top_k=self.settings.kafka.predictions_top_k)
        if label_events:
            self._join(label_events, seq, step)
        by_partition: dict[tuple[str, int], list[int]] = {}
        for r in records:   # records of one partition are in offset order
            by_partition.setdefault((r.topic, r.partition), []).append(r.offset)
        for (topic, partition), offsets in by_partition.items():
            self.positions.processed(topic, partition, offsets[-1])
            self.lineage.add_offsets(topic, partition, offsets)
        n = len(records)
        self.counters.consumed += n
        self.checkpoints.consumed(n)
        self.metrics.events_consumed.inc(n)
        self.metrics.last_event_ts.set(time.time())
        self._refresh_gauges()

    def _join(self, label_events: list[Any], seq: int, step: int | None) -> None:
        """Label events: learn those that found their features; dead-letter the rest."""
        joined = self.labels.join(label_events, seq, self.decoder.n_features or 0)
        for rec, reason, detail in joined.rejects:
            self.sink.reject(rec, reason, detail)
        if joined.labels:
            # Submitted after this batch's predictions: results come back in order, so
            # the served prediction of a same-batch id is known when this one returns.
            self.learner.submit_learn(
                joined.x, joined.labels, step_size=step,
                ctx=(np.full(len(joined.labels), np.nan), joined.records,
                     np.arange(len(joined.labels)), joined))
            self.warm.handed(joined.labels)

    def _federate(self, federation: Federation) -> None:
        """Read the peers' updates; when a round is due, queue it behind the batches."""
        try:
            federation.poll()
        except KafkaError as exc:
            self.metrics.kafka_errors.labels("poll").inc()
            log.warning("federation poll failed (%s); retrying", exc)
        if federation.due(self.counters.learned):
            self.learner.submit_federate(federation.start_round(self.counters.learned), None)

    def _throttle_if_backlogged(self) -> None:
        """Pause fetching while events wait unsaved or the broker is not acknowledging
        our DLQ/prediction sends; resume once neither holds."""
        self.sink.report_pending()
        if self.checkpoints.too_many_unsaved():
            self.positions.pause_unsaved(self.checkpoints.since_checkpoint)
            return
        if self.sink.within_limits():
            self.positions.resume()
            return
        if not self.sink.flush(timeout_s=1.0):
            self.positions.pause_all()

    def _refresh_gauges(self) -> None:
        self.accounting.refresh_gauges(self.learner.info)
        self.positions.refresh_lag()
