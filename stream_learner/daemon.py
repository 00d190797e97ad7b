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
:mod:`~stream_learner.checkpoint_coordinator` (the order above, commits, save failures) and
:mod:`~stream_learner.learn_accounting` (accuracy, loss, pacing, the model's gauges).
"""

from __future__ import annotations

import functools
import gc
import logging
import signal
import time
from typing import Any

import numpy as np
import torch
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from . import __version__
from .checkpoint import CheckpointStore
from .checkpoint_coordinator import CheckpointCoordinator, CommitMode
from .config import Settings
from .consumer_side import ConsumerSide
from .counters import Counters
from .drift import DriftReport
from .events import EventDecoder, Limits
from .kafka_io import Listener, make_consumer
from .label_side import LabelSide
from .learn_accounting import LearnAccounting
from .output_sink import DLQ_MAX_RECORD_BYTES, MAX_PENDING_RECORDS, OutputSink, dlq_copy
from .federation.transport import Federation
from .lineage import Lineage
from .learner_host import (FedRound, Learned, LearnerHost, Predicted, Result, WorkerLearner,
                           make_learner_host)
from .metrics import Health, Metrics, MetricsServer
from .restore_check import check_restorable
from .save_failures import SaveFailures
from .systemd import Notifier

log = logging.getLogger(__name__)

STATUS_EVERY_S = 10.0              # systemd STATUS= line (`systemctl status`) refresh
# Re-exported: tests and tools import these from here.
__all__ = ["CommitMode", "Counters", "DLQ_MAX_RECORD_BYTES", "Daemon", "MAX_PENDING_RECORDS",
           "dlq_copy"]


class Daemon:
    def __init__(self, settings: Settings, metrics: Metrics | None = None,
                 notifier: Notifier | None = None) -> None:
        if not settings.kafka.bootstrap_servers:
            raise ValueError("kafka.bootstrap_servers is not set (STREAM_LEARNER_KAFKA__"
                             "BOOTSTRAP_SERVERS or kafka.bootstrap_servers in --config)")
        self.settings = settings
        if settings.model.threads:
            torch.set_num_threads(settings.model.threads)
        self.metrics = metrics or Metrics()
        self.health = Health(settings.metrics.stall_seconds)
        self.notifier = notifier or Notifier()
        self._notified_ready = False
        self._next_status = 0.0
        # Before the learner worker starts: a bad key file stops start-up with one line.
        self.federation: Federation | None = None
        if settings.federation.enabled:
            self.federation = Federation(settings, self.metrics.federation)
        else:
            log.info("federation off: set federation.private_key_file and peer keys "
                     "(federation.peers or federation.peers_dir) to share updates")
        self.learner: LearnerHost = make_learner_host(settings)
        k, m = settings.kafka, settings.model
        limits = Limits(
            max_label_length=m.max_label_length, max_id_length=k.max_id_length,
            max_abs_feature=m.max_abs_feature, max_event_age_seconds=k.max_event_age_seconds,
            max_event_future_seconds=k.max_event_future_seconds)
        self.decoder = EventDecoder(m.n_features, m.feature_names, k.max_event_bytes, limits)
        self.labels = LabelSide(settings, self.metrics.labels, limits)
        self.counters = Counters()
        self.accounting = LearnAccounting(settings, self.metrics, self.counters)
        # The same objects, named here for the checkpoint and the benchmarks.
        self.accuracy, self.loss = self.accounting.accuracy, self.accounting.loss
        self.lineage = Lineage()                         # offsets this model processed
        self.store = CheckpointStore(settings.checkpoint.dir, settings.checkpoint.keep)
        self.positions = ConsumerSide(settings, self.metrics)
        self.sink = OutputSink(settings, self.metrics, self.counters)
        self.checkpoints = CheckpointCoordinator(
            settings, self.metrics, self.health, self.store, self.sink, self.positions,
            drain=lambda: self._handle(self.learner.drain()), snapshot=self.state_dict)
        self.server: MetricsServer | None = None
        self.stopping = False
        self._next_housekeeping = 0.0
        self.metrics.build_info.info({"version": __version__})
        self.metrics.model_info.info({"strategy": settings.strategy.name,
                                      "device": self.learner.info.device})
        self.metrics.drift.declare(settings)
        self.metrics.declare_outputs([settings.kafka.dlq_topic,
                                      settings.kafka.predictions_topic])
        worker = self.learner
        if isinstance(worker, WorkerLearner):
            self.metrics.declare_worker(lambda: worker.pid)
        if self.learner.info.device.startswith("cuda"):
            self.metrics.declare_gpu()

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
    def last_checkpoint_path(self) -> str | None:
        return self.checkpoints.last_checkpoint_path

    @property
    def save_failures(self) -> SaveFailures:
        return self.checkpoints.save_failures

    def checkpoint(self, commit: CommitMode = "sync", flush_timeout_s: float = 5.0) -> bool:
        """Drain → flush → checkpoint → commit; False (retried later) when incomplete."""
        return self.checkpoints.checkpoint(commit, flush_timeout_s)

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

    def restore(self) -> None:
        # A checkpoint that would not restore cleanly counts as corrupt: try an older one.
        state = self.store.load_latest(validate=functools.partial(check_restorable,
                                                                  self.settings))
        if state is None:
            if self.store.skipped:
                log.warning("no readable checkpoint in %s: starting a fresh model at the "
                            "group's committed offsets (reset the group to relearn the log)",
                            self.settings.checkpoint.dir)
            return
        self.learner.load_state_dict(state["learner"])
        self.decoder.load_state_dict(state["decoder"])
        if "lineage" in state:        # older checkpoints have none
            self.lineage.load_state_dict(state["lineage"])
        self.accuracy.load_state_dict(state["accuracy"])
        self.loss.load_state_dict(state["loss"])
        self.counters.load_state_dict(state["counters"])
        if "labels" in state:         # older checkpoints have none
            self.labels.load_state_dict(state["labels"])
        if self.federation is not None:
            self.federation.load_state_dict(state.get("federation"))
        self.metrics.checkpoint_last_success.set(float(state.get("created", 0.0)))
        self.positions.restored({TopicPartition(t, p): o for t, parts in state["offsets"].items()
                                 for p, o in parts.items()}, fallback=bool(self.store.skipped))
        self._refresh_gauges()
        log.info("resumed at %s after %d events", self.positions.offsets_text(),
                 self.counters.consumed)

    def run(self) -> int:
        """Serve until asked to stop; returns the process exit code."""
        if self.server is None:
            self.start_http()
        self.restore()
        if not self._connect():     # stopped before Kafka answered: nothing to save
            self.shutdown(final_checkpoint=False)
            return 0
        # Everything alive now (torch, kafka-python, numpy modules: ~1M objects) lives as
        # long as the process. Frozen, full collections skip it: without this, gen-2
        # pauses of 0.2-0.3 s set event_to_update's p99 (0.35 s at 10k/s; 0.17 s with).
        gc.collect()
        gc.freeze()
        clean = False
        try:
            while not self.stopping:
                self._tick()
                self._throttle_if_backlogged()
                records = self.positions.next_batch(lambda: self.stopping)
                if records:
                    self.process(records)
                self._handle(self.learner.completed())
                if self.federation is not None:
                    self._federate(self.federation)
                if time.monotonic() >= self._next_housekeeping:
                    self._housekeeping()
                if self.checkpoints.due():
                    self.checkpoint(commit="sync")
            clean = True
        finally:
            # After an unexpected error the state may hold half a batch: never save it.
            self.shutdown(final_checkpoint=clean)
        return 0

    def _tick(self) -> None:
        """The loop is alive: /healthz and systemd's watchdog both hear it from here only."""
        self.health.tick()
        self.notifier.watchdog()

    def shutdown(self, final_checkpoint: bool = True) -> None:
        self.notifier.stopping()
        self.health.ready = False
        self.metrics.ready.set(0)
        if (final_checkpoint and self.consumer is not None
                and self.checkpoints.since_checkpoint):
            self.checkpoint(commit="sync", flush_timeout_s=30.0)
        if self.consumer is not None:
            try:
                self.consumer.unsubscribe()   # leave the group now, not at session timeout
                self.consumer.close(autocommit=False)
            except KafkaError as exc:
                log.warning("consumer close: %s", exc)
            self.positions.consumer = None
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

    def _connect(self) -> bool:
        """Create the clients, retrying while the broker is unreachable."""
        delay = 0.5
        self.notifier.status(f"connecting to Kafka at {self.settings.kafka.bootstrap_servers}")
        while not self.stopping:
            self._tick()
            try:
                t0 = time.monotonic()
                if self.sink.producer is None:
                    self.sink.connect(topic_exists=self.positions.topic_exists)
                    log.info("producer connected in %.1fs", time.monotonic() - t0)
                if self.stopping:       # a SIGTERM while connecting: no group join
                    break
                if self.federation is not None and self.federation.consumer is None:
                    self.federation.connect()
                consumer = make_consumer(self.settings)
                self.positions.consumer = consumer
                consumer.subscribe([self.settings.kafka.topic],
                                   listener=Listener(self._on_revoked, self._on_assigned))
                log.info("consuming %s as group %s from %s", self.settings.kafka.topic,
                         self.settings.kafka.group_id, self.settings.kafka.bootstrap_servers)
                return True
            except KafkaError as exc:
                self.metrics.kafka_errors.labels("connect").inc()
                log.warning("Kafka at %s not reachable (%s); retrying in %.1fs",
                            self.settings.kafka.bootstrap_servers, exc, delay)
                deadline = time.monotonic() + delay
                while not self.stopping and time.monotonic() < deadline:
                    time.sleep(0.05)        # a SIGTERM ends the wait, not just the loop
                delay = min(delay * 2, 10.0)
        return False

    # -- rebalance callbacks (run inside poll) ----------------------------------------------
    def _on_revoked(self, revoked: set[TopicPartition], commit: bool) -> Any:
        """Checkpoint before the partitions go; returns the commit future to await."""
        log.info("partitions revoked: %s", sorted(revoked))
        self.positions.revoked(revoked)
        if not revoked:
            return None
        if (self.checkpoints.since_checkpoint
                and not self.checkpoint(commit="none", flush_timeout_s=5.0)):
            return None
        return self.checkpoints.commit("async") if commit else None

    def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("partitions assigned: %s", sorted(assigned))
        self.positions.assigned(assigned)
        self.health.ready = True
        self.metrics.ready.set(1)
        if not self._notified_ready:   # READY=1 once: later rebalances are not start-ups
            self._notified_ready = True
            self.notifier.ready(f"consuming {self.settings.kafka.topic} as group "
                                f"{self.settings.kafka.group_id}")

    # -- the loop ---------------------------------------------------------------------------
    def process(self, records: list[Any]) -> None:
        """Prequential step for one micro-batch: reject, then hand it to the learner."""
        batch = self.decoder.decode([r.value for r in records])
        label_events = self.labels.take_label_events(records, batch)
        self.sink.dead_letter(records, batch)
        seq = self.counters.consumed
        labeled = np.fromiter((lab is not None for lab in batch.labels), bool, len(batch.labels))
        n_labeled = int(labeled.sum())
        if n_labeled:
            step = self.accounting.pacer.update(
                backlogged=len(records) >= self.settings.batch.size, now=time.monotonic(),
                lag=self.positions.lag_total)
            self.metrics.step_size.set(step)
            if n_labeled == labeled.size:
                x, labels, ts, rows = batch.x, batch.labels, batch.ts, batch.index
            else:
                x, ts, rows = batch.x[labeled], batch.ts[labeled], batch.index[labeled]
                labels = [lab for lab, m in zip(batch.labels, labeled) if m]
            # The records ride along: the learner may refuse an event (a label beyond
            # model.max_classes), and that one is dead-lettered when its result arrives.
            self.learner.submit_learn(x, labels, ctx=(ts, records, rows, None),  # type: ignore[arg-type]
                                      step_size=step)
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
            self._join(label_events, seq)
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

    def _handle(self, results: list[tuple[Any, Result]]) -> None:
        """Account for what the learner finished: metrics, predictions to publish."""
        for ctx, result in results:
            if isinstance(result, Learned):
                ts, records, rows, joined = ctx
                if result.refused.size:
                    self.sink.dead_letter_refused(result, records, rows)
                    ts = np.delete(ts, result.refused)
                self.accounting.learned(result, ts)
                if joined is None:
                    self.labels.scored_inline(result.y, result.pred)
                else:     # the served predictions were answered before this batch
                    self.labels.scored_joined(joined.entries, joined.labels)
            elif isinstance(result, FedRound):
                assert self.federation is not None
                self.federation.finish_round(result.snapshot, result.report)
            elif isinstance(result, Predicted):
                ids, keys, sources, kept = ctx
                self.labels.predicted(kept, result.idx, self.learner.info.labels)
                self.sink.publish_predictions(result, self.learner.info.labels, ids, keys,
                                              sources, self.checkpoints.last_checkpoint_path)
                if result.drift is not None:
                    self.metrics.drift.apply(result.drift)
        if results:
            self._refresh_gauges()

    def _join(self, label_events: list[Any], seq: int) -> None:
        """Label events: learn those that found their features; dead-letter the rest."""
        joined = self.labels.join(label_events, seq, self.decoder.n_features or 0)
        for rec, reason, detail in joined.rejects:
            self.sink.reject(rec, reason, detail)
        if joined.labels:
            # Submitted after this batch's predictions: results come back in order, so
            # the served prediction of a same-batch id is known when this one returns.
            self.learner.submit_learn(
                joined.x, joined.labels, step_size=None,
                ctx=(np.full(len(joined.labels), np.nan), joined.records,
                     np.arange(len(joined.labels)), joined))

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

    def _housekeeping(self) -> None:
        """Once a second, also when idle: gauges, and positions past the log's end."""
        now = time.monotonic()
        self._next_housekeeping = now + 1.0
        self._refresh_gauges()
        if self.sink.producer is not None:
            spill = self.sink.producer.spill
            self.health.block("undeliverable", f"{spill.path} is full "
                              f"(checkpoint.undeliverable_max_bytes): records wait, "
                              f"checkpoints stop" if spill.full else None)
            self.metrics.ready.set(1 if self.health.is_ready() else 0)
        if self._notified_ready and now >= self._next_status:
            self._next_status = now + STATUS_EVERY_S
            self.notifier.status(f"{self.counters.learned} events learned, "
                                 f"{self.counters.rejected_total} rejected, lag {self.lag_total}, "
                                 f"rolling accuracy {self.accuracy.rolling_accuracy:.3f}")
        self.positions.restart_recreated()

    def _refresh_gauges(self) -> None:
        self.accounting.refresh_gauges(self.learner.info)
        self.positions.refresh_lag()

    # -- checkpoint state (the coordinator decides when; the facade knows the parts) ----------
    def state_dict(self) -> dict[str, Any]:
        offsets: dict[str, dict[int, int]] = {}
        for tp, off in self.offsets.items():
            offsets.setdefault(tp.topic, {})[tp.partition] = off
        state = {"version": __version__, "created": time.time(),
                 "learner": self.learner.state_dict(), "decoder": self.decoder.state_dict(),
                 "accuracy": self.accuracy.state_dict(), "loss": self.loss.state_dict(),
                 "counters": self.counters.state_dict(), "offsets": offsets,
                 "lineage": self.lineage.state_dict(), "labels": self.labels.state_dict()}
        if self.federation is not None:     # peers' last versions: replays stay replays
            state["federation"] = self.federation.state_dict()
        return state
