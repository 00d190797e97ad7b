"""The daemon loop: poll → decode → predict → learn → checkpoint → commit.

The learner runs beside the loop (:mod:`stream_learner.learner_host`): batch ``k`` is
learned while batch ``k+1`` is polled, and results come back in submission order.

Delivery order, followed everywhere a checkpoint is taken (docs/architecture.md):
  1. finish the update of every polled batch (drain the learner);
  2. flush the producer (DLQ and predictions) until every record is acknowledged;
  3. write the checkpoint (state + next offset per partition) atomically;
  4. commit the same offsets to Kafka (a hint for other replicas; the checkpoint rules).
A crash between any two steps replays events after the checkpoint and skips none.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
import signal
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from . import __version__
from .checkpoint import CheckpointStore
from .config import Settings
from .drift import DriftReport
from .evaluation import PrequentialAccuracy, RollingMean
from .events import TOO_MANY_CLASSES, DecodedBatch, EventDecoder, Limits
from .kafka_io import Listener, make_consumer, make_producer
from .outputs import ReliableProducer
from .undeliverable import OutputRecord, UndeliverableLog
from .federation.transport import Federation
from .lineage import Lineage
from .learner_host import (FedRound, Learned, LearnerHost, Predicted, Result, WorkerLearner,
                           make_learner_host)
from .metrics import Health, Metrics, MetricsServer
from .pacing import StepPacer
from .predictions import encode_predictions
from .restore_check import check_restorable
from .save_failures import SaveFailures
from .systemd import Notifier

log = logging.getLogger(__name__)

# A DLQ copy (value, key and headers) is cut to this, marked truncated_from_bytes: far
# below Kafka's default message.max.bytes (1 MiB) and the producer's max_request_size,
# so a copy of any event we could read is one the broker accepts.
DLQ_MAX_RECORD_BYTES = 256 * 1024
MAX_PENDING_RECORDS = 200_000      # pause consumption while this many sends are unacknowledged
STATUS_EVERY_S = 10.0              # systemd STATUS= line (`systemctl status`) refresh
CommitMode = Literal["sync", "async", "none"]


@dataclass
class Counters:
    """Exactly-once accounting: restored from the checkpoint, so replays don't double count."""

    consumed: int = 0
    learned: int = 0
    predicted: int = 0
    held_out: int = 0      # kept as forgetting probes: consumed, never learned
    rejected: dict[str, int] = field(default_factory=dict)

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    def state_dict(self) -> dict[str, Any]:
        return {"consumed": self.consumed, "learned": self.learned,
                "predicted": self.predicted, "held_out": self.held_out,
                "rejected": dict(self.rejected)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.consumed, self.learned = int(state["consumed"]), int(state["learned"])
        self.predicted = int(state["predicted"])
        self.held_out = int(state.get("held_out", 0))
        self.rejected = dict(state["rejected"])


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
        self.decoder = EventDecoder(m.n_features, m.feature_names, k.max_event_bytes, Limits(
            max_label_length=m.max_label_length, max_id_length=k.max_id_length,
            max_abs_feature=m.max_abs_feature, max_event_age_seconds=k.max_event_age_seconds,
            max_event_future_seconds=k.max_event_future_seconds))
        self.accuracy = PrequentialAccuracy(settings.metrics.rolling_window)
        self.loss = RollingMean(half_life=settings.metrics.rolling_window)
        self.counters = Counters()
        m = settings.model
        self.pacer = StepPacer(m.step_size, m.max_step_size, m.learn_budget, time.monotonic())
        self.metrics.step_size.set(self.pacer.value)
        self.offsets: dict[TopicPartition, int] = {}     # next offset to process
        self.lineage = Lineage()                         # offsets this model processed
        self.store = CheckpointStore(settings.checkpoint.dir, settings.checkpoint.keep)
        self.save_failures = SaveFailures(self.health, self.metrics.checkpoint_failures,
                                          settings.checkpoint.dir)
        # Restored from an older checkpoint because a newer one was unreadable: the group's
        # committed offset may be the lost checkpoint's, so it must not move us forward.
        self._replay_from_checkpoint: set[TopicPartition] = set()
        self.consumer: KafkaConsumer | None = None
        self.producer: ReliableProducer | None = None
        self.server: MetricsServer | None = None
        self.stopping = False
        self.last_checkpoint_path: str | None = None
        self.last_checkpoint_time = time.time()
        self._since_checkpoint = 0
        self._unverified: set[TopicPartition] = set()   # assigned, committed offset not checked
        self._rebalanced = False
        self.lag_total = 0
        self._next_housekeeping = 0.0
        self._skipped_steps = 0
        self.forgetting = 0.0       # last reported by the learner's probes
        self.drift: DriftReport | None = None   # last reported by the learner
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
        if self.federation is not None:
            self.federation.load_state_dict(state.get("federation"))
        self.metrics.checkpoint_last_success.set(float(state.get("created", 0.0)))
        self.offsets = {TopicPartition(t, p): o for t, parts in state["offsets"].items()
                        for p, o in parts.items()}
        if self.store.skipped:
            self._replay_from_checkpoint = set(self.offsets)
        self._refresh_gauges()
        log.info("resumed at %s after %d events", self._offsets_text(), self.counters.consumed)

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
                records = self._next_batch()
                if records:
                    self.process(records)
                self._handle(self.learner.completed())
                if self.federation is not None:
                    self._federate(self.federation)
                if time.monotonic() >= self._next_housekeeping:
                    self._housekeeping()
                if self._checkpoint_due():
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
        if final_checkpoint and self.consumer is not None and self._since_checkpoint:
            self.checkpoint(commit="sync", flush_timeout_s=30.0)
        if self.consumer is not None:
            try:
                self.consumer.unsubscribe()   # leave the group now, not at session timeout
                self.consumer.close(autocommit=False)
            except KafkaError as exc:
                log.warning("consumer close: %s", exc)
            self.consumer = None
        if self.producer is not None:
            self.producer.close()
            self.producer = None
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
                if self.producer is None:
                    self.producer = self._make_producer()
                    log.info("producer connected in %.1fs", time.monotonic() - t0)
                if self.stopping:       # a SIGTERM while connecting: no group join
                    break
                if self.federation is not None and self.federation.consumer is None:
                    self.federation.connect()
                self.consumer = make_consumer(self.settings)
                self.consumer.subscribe([self.settings.kafka.topic],
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

    def _make_producer(self) -> ReliableProducer:
        s = self.settings
        spill = UndeliverableLog(s.checkpoint.dir / "undeliverable.jsonl",
                                 s.checkpoint.undeliverable_max_bytes)
        return ReliableProducer(make_producer(s), spill, s.kafka.output_retry_seconds,
                                on_spilled=self._spilled, topic_exists=self._topic_exists)

    def _spilled(self, record: OutputRecord, reason: str) -> None:
        self.metrics.output_failures.labels(record.topic, reason).inc()

    def _topic_exists(self, topic: str) -> bool | None:
        """Asks the broker (a metadata request); None when it cannot be asked."""
        if self.consumer is None:
            return None
        try:
            return topic in self.consumer.topics()
        except KafkaError:
            return None

    # -- rebalance callbacks (run inside poll) ----------------------------------------------
    def _on_revoked(self, revoked: set[TopicPartition], commit: bool) -> Any:
        """Checkpoint before the partitions go; returns the commit future to await."""
        log.info("partitions revoked: %s", sorted(revoked))
        self._rebalanced = True
        for tp in revoked:   # a stale lag would read as events waiting here (a false alert)
            with contextlib.suppress(KeyError):   # no lag series yet: nothing consumed from it
                self.metrics.consumer_lag.remove(str(tp.partition))
        if not revoked:
            return None
        if self._since_checkpoint and not self.checkpoint(commit="none", flush_timeout_s=5.0):
            return None
        return self._commit("async") if commit else None

    def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("partitions assigned: %s", sorted(assigned))
        self._rebalanced = True
        assert self.consumer is not None
        for tp in assigned:
            if tp in self.offsets:
                self.consumer.seek(tp, self.offsets[tp])
        # The committed offset can be ahead of our checkpoint when another replica owned
        # the partition meanwhile; checked from the main loop, where blocking is allowed.
        self._unverified |= assigned
        self.health.ready = True
        self.metrics.ready.set(1)
        if not self._notified_ready:   # READY=1 once: later rebalances are not start-ups
            self._notified_ready = True
            self.notifier.ready(f"consuming {self.settings.kafka.topic} as group "
                                f"{self.settings.kafka.group_id}")

    def _verify_assignment(self, records: list[Any]) -> list[Any]:
        """Start each newly assigned partition at max(checkpoint, committed)."""
        assert self.consumer is not None
        skip: dict[TopicPartition, int] = {}
        for tp in list(self._unverified):
            try:
                committed = self.consumer.committed(tp)
            except KafkaError as exc:
                log.warning("committed offset of %s unknown (%s); trusting checkpoint", tp, exc)
                committed = None
            self._unverified.discard(tp)
            mine = self.offsets.get(tp)
            if tp in self._replay_from_checkpoint:
                self._replay_from_checkpoint.discard(tp)
                if committed is not None and mine is not None and committed > mine:
                    log.warning("%s: group committed %d, beyond the older checkpoint restored "
                                "(%d) after a newer one was unreadable; replaying from %d: "
                                "those events are learned again, none skipped",
                                tp, committed, mine, mine)
                continue
            if committed is not None and mine is not None and committed > mine:
                log.info("%s: group committed %d beyond this replica's checkpoint %d; "
                         "another replica learned those events", tp, committed, mine)
                self.consumer.seek(tp, committed)
                self.offsets[tp] = committed
                skip[tp] = committed
        if not skip:
            return records
        return [r for r in records
                if r.offset >= skip.get(TopicPartition(r.topic, r.partition), -1)]

    # -- the loop ---------------------------------------------------------------------------
    def _next_batch(self) -> list[Any]:
        """Up to batch.size records, or fewer once batch.max_wait_ms has passed."""
        assert self.consumer is not None
        size = self.settings.batch.size
        deadline = time.monotonic() + self.settings.batch.max_wait_ms / 1000
        out: list[Any] = []
        while len(out) < size and not self.stopping:
            remaining_ms = int((deadline - time.monotonic()) * 1000)
            if remaining_ms <= 0 and out:
                break
            try:
                polled = self.consumer.poll(timeout_ms=max(remaining_ms, 0),
                                            max_records=size - len(out))
            except KafkaError as exc:
                self.metrics.kafka_errors.labels("poll").inc()
                log.warning("poll failed (%s); retrying", exc)
                time.sleep(0.5)
                break
            if self._rebalanced:
                # Assignment seeks every partition back to its last processed offset, so
                # records polled before the rebalance will be fetched again (or belong to
                # partitions now owned by another replica): drop them.
                self._rebalanced = False
                out = []
            for recs in polled.values():
                out.extend(recs)
            if self._unverified:
                out = self._verify_assignment(out)
            if remaining_ms <= 0:
                break
        return out

    def process(self, records: list[Any]) -> None:
        """Prequential step for one micro-batch: reject, then hand it to the learner."""
        batch = self.decoder.decode([r.value for r in records])
        self._dead_letter(records, batch)
        labeled = np.fromiter((lab is not None for lab in batch.labels), bool, len(batch.labels))
        n_labeled = int(labeled.sum())
        if n_labeled:
            step = self.pacer.update(backlogged=len(records) >= self.settings.batch.size,
                                     now=time.monotonic())
            self.metrics.step_size.set(step)
            if n_labeled == labeled.size:
                x, labels, ts, rows = batch.x, batch.labels, batch.ts, batch.index
            else:
                x, ts, rows = batch.x[labeled], batch.ts[labeled], batch.index[labeled]
                labels = [lab for lab, m in zip(batch.labels, labeled) if m]
            # The records ride along: the learner may refuse an event (a label beyond
            # model.max_classes), and that one is dead-lettered when its result arrives.
            self.learner.submit_learn(x, labels, ctx=(ts, records, rows),  # type: ignore[arg-type]
                                      step_size=step)
        if n_labeled < labeled.size:
            rows = np.flatnonzero(~labeled)
            ids = [batch.ids[r] for r in rows]
            unlabeled = [records[int(batch.index[r])] for r in rows]
            self.learner.submit_predict(
                batch.x[rows], ctx=(ids, [r.key for r in unlabeled],
                                    [(r.topic, r.partition, r.offset) for r in unlabeled]))
        by_partition: dict[tuple[str, int], list[int]] = {}
        for r in records:   # records of one partition are in offset order
            by_partition.setdefault((r.topic, r.partition), []).append(r.offset)
        for (topic, partition), offsets in by_partition.items():
            self.offsets[TopicPartition(topic, partition)] = offsets[-1] + 1
            self.lineage.add_offsets(topic, partition, offsets)
        n = len(records)
        self.counters.consumed += n
        self._since_checkpoint += n
        self.metrics.events_consumed.inc(n)
        self.metrics.last_event_ts.set(time.time())
        self._refresh_gauges()

    def _handle(self, results: list[tuple[Any, Result]]) -> None:
        """Account for what the learner finished: metrics, predictions to publish."""
        for ctx, result in results:
            if isinstance(result, Learned):
                ts, records, rows = ctx
                if result.refused.size:
                    self._dead_letter_refused(result, records, rows)
                    ts = np.delete(ts, result.refused)
                self._learned(result, ts)
            elif isinstance(result, FedRound):
                assert self.federation is not None
                self.federation.finish_round(result.snapshot, result.report)
            elif isinstance(result, Predicted):
                self._publish_predictions(result, *ctx)
                if result.drift is not None:
                    self.metrics.drift.apply(result.drift)
        if results:
            self._refresh_gauges()

    def _federate(self, federation: Federation) -> None:
        """Read the peers' updates; when a round is due, queue it behind the batches."""
        try:
            federation.poll()
        except KafkaError as exc:
            self.metrics.kafka_errors.labels("poll").inc()
            log.warning("federation poll failed (%s); retrying", exc)
        if federation.due(self.counters.learned):
            self.learner.submit_federate(federation.start_round(self.counters.learned), None)

    def _learned(self, result: Learned, ts: np.ndarray) -> None:
        n = int(result.y.shape[0])
        self.accuracy.update(result.y, result.pred)
        self.loss.update(result.loss, n)
        self.metrics.loss.set(result.loss)
        self.counters.learned += n
        self.metrics.events_learned.inc(n)
        self.metrics.update_duration.observe(result.seconds)
        self.pacer.learned(result.seconds)
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

    def _publish_predictions(self, result: Predicted, ids: list[str],
                             keys: list[bytes | None], sources: list[tuple[str, int, int]]
                             ) -> None:
        assert self.producer is not None
        topic = self.settings.kafka.predictions_topic
        messages = encode_predictions(ids, result.idx.tolist(), result.proba.tolist(),
                                      self.learner.info.labels, self.counters.learned)
        for key, value, source in zip(keys, messages, sources):
            self.producer.send(OutputRecord(topic, value, key, None, source))
        self.counters.predicted += len(ids)
        self.metrics.predictions.inc(len(ids))

    def _dead_letter(self, records: list[Any], batch: DecodedBatch) -> None:
        for rej in batch.rejects:
            self._reject(records[rej.index], rej.reason, rej.detail)

    def _dead_letter_refused(self, result: Learned, records: list[Any],
                             rows: np.ndarray) -> None:
        detail = (f"the model knows model.max_classes={self.settings.model.max_classes} "
                  f"classes; this label would add one more")
        for pos in result.refused.tolist():
            self._reject(records[int(rows[pos])], TOO_MANY_CLASSES, detail)

    def _reject(self, rec: Any, reason: str, detail: str) -> None:
        assert self.producer is not None
        headers = [("reason", reason.encode()), ("detail", detail.encode()),
                   ("source_topic", rec.topic.encode()),
                   ("source_partition", str(rec.partition).encode()),
                   ("source_offset", str(rec.offset).encode())]
        value, key = dlq_copy(rec.value or b"", rec.key, headers)
        self.producer.send(OutputRecord(self.settings.kafka.dlq_topic, value, key, headers,
                                        (rec.topic, rec.partition, rec.offset)))
        self.counters.rejected[reason] = self.counters.rejected.get(reason, 0) + 1
        self.metrics.events_rejected.labels(reason).inc()
        log.debug("rejected %s[%d]@%d: %s (%s)", rec.topic, rec.partition, rec.offset,
                  reason, detail)

    def _throttle_if_backlogged(self) -> None:
        """Pause fetching while the broker is not acknowledging our DLQ/prediction sends
        (bounded in records and in bytes: ``kafka.max_pending_bytes``)."""
        assert self.consumer is not None and self.producer is not None
        pending_bytes = self.producer.pending_bytes
        self.metrics.output_pending_bytes.set(pending_bytes)
        if self._since_checkpoint >= self.settings.checkpoint.max_unsaved_events:
            # Checkpoints fail (or lag): a crash now would replay all of these; take no more.
            if not self.consumer.paused():
                log.warning("%d events unsaved (checkpoint.max_unsaved_events): consumption "
                            "paused until a checkpoint succeeds", self._since_checkpoint)
            self.consumer.pause(*self.consumer.assignment())
            return
        if (self.producer.pending < MAX_PENDING_RECORDS
                and pending_bytes < self.settings.kafka.max_pending_bytes):
            if self.consumer.paused():
                self.consumer.resume(*self.consumer.paused())
            return
        if not self.producer.flush(timeout_s=1.0):
            self.consumer.pause(*self.consumer.assignment())

    def _housekeeping(self) -> None:
        """Once a second, also when idle: gauges, and positions past the log's end."""
        now = time.monotonic()
        self._next_housekeeping = now + 1.0
        self._refresh_gauges()
        if self.producer is not None:
            spill = self.producer.spill
            self.health.block("undeliverable", f"{spill.path} is full "
                              f"(checkpoint.undeliverable_max_bytes): records wait, "
                              f"checkpoints stop" if spill.full else None)
            self.metrics.ready.set(1 if self.health.is_ready() else 0)
        if self._notified_ready and now >= self._next_status:
            self._next_status = now + STATUS_EVERY_S
            self.notifier.status(f"{self.counters.learned} events learned, "
                                 f"{self.counters.rejected_total} rejected, lag {self.lag_total}, "
                                 f"rolling accuracy {self.accuracy.rolling_accuracy:.3f}")
        assert self.consumer is not None
        for tp in self.consumer.assignment():
            high = self.consumer.highwater(tp)
            mine = self.offsets.get(tp)
            if high is None or mine is None or mine <= high:
                continue
            # The log is shorter than what we already processed: the topic was deleted and
            # recreated (or the broker lost its data). Kafka would answer OffsetOutOfRange;
            # some brokers just return nothing, so follow auto_offset_reset ourselves.
            log.warning("%s ends at %d, before our position %d: topic recreated or "
                        "truncated; restarting from the %s", tp, high, mine,
                        self.settings.kafka.auto_offset_reset)
            if self.settings.kafka.auto_offset_reset == "earliest":
                self.consumer.seek_to_beginning(tp)
            else:
                self.consumer.seek_to_end(tp)
            del self.offsets[tp]

    def _refresh_gauges(self) -> None:
        m = self.metrics
        m.prequential_accuracy.set(self.accuracy.accuracy)
        m.rolling_accuracy.set(self.accuracy.rolling_accuracy)
        m.model_classes.set(len(self.learner.info.labels))
        m.replay_buffer_events.set(self.learner.info.buffer_events)
        if m.gpu_allocated is not None and m.gpu_reserved is not None:
            m.gpu_allocated.set(self.learner.info.gpu_memory_allocated_bytes)
            m.gpu_reserved.set(self.learner.info.gpu_memory_reserved_bytes)
        if self.consumer is not None:
            lag = 0
            for tp in self.consumer.assignment():
                high = self.consumer.highwater(tp)
                if high is not None and tp in self.offsets:
                    lag += max(high - self.offsets[tp], 0)
                    m.consumer_lag.labels(str(tp.partition)).set(max(high - self.offsets[tp], 0))
            self.lag_total = lag

    # -- checkpoint + commit ------------------------------------------------------------------
    def _checkpoint_due(self) -> bool:
        c = self.settings.checkpoint
        return self._since_checkpoint > 0 and self.save_failures.may_retry() and (
            self._since_checkpoint >= min(c.every_events, c.max_unsaved_events)
            or time.time() - self.last_checkpoint_time >= c.every_seconds)

    def state_dict(self) -> dict[str, Any]:
        offsets: dict[str, dict[int, int]] = {}
        for tp, off in self.offsets.items():
            offsets.setdefault(tp.topic, {})[tp.partition] = off
        state = {"version": __version__, "created": time.time(),
                 "learner": self.learner.state_dict(), "decoder": self.decoder.state_dict(),
                 "accuracy": self.accuracy.state_dict(), "loss": self.loss.state_dict(),
                 "counters": self.counters.state_dict(), "offsets": offsets,
                 "lineage": self.lineage.state_dict()}
        if self.federation is not None:     # peers' last versions: replays stay replays
            state["federation"] = self.federation.state_dict()
        return state

    def checkpoint(self, commit: CommitMode = "sync", flush_timeout_s: float = 5.0) -> bool:
        """Flush → checkpoint → commit. False (and retried later) if the flush is incomplete."""
        assert self.producer is not None
        t0 = time.perf_counter()
        self._handle(self.learner.drain())
        if not self.producer.flush(flush_timeout_s):
            self.metrics.kafka_errors.labels("produce").inc()
            log.warning("%d DLQ/prediction records not yet acknowledged; checkpoint deferred",
                        self.producer.pending)
            return False
        try:
            self.last_checkpoint_path = str(self.store.save(self.state_dict()))
        except OSError as exc:        # disk full, read-only, EIO: retried, never a crash
            self.save_failures.failed(exc, self._since_checkpoint)
            self.metrics.ready.set(1 if self.health.is_ready() else 0)
            return False
        self.save_failures.succeeded()
        self.last_checkpoint_time = time.time()
        self._since_checkpoint = 0
        if commit != "none":
            self._commit(commit)
        self.metrics.checkpoint_duration.observe(time.perf_counter() - t0)
        self.metrics.checkpoint_last_success.set(self.last_checkpoint_time)
        return True

    def _commit(self, mode: CommitMode) -> Any:
        """Commit the checkpoint's offsets of owned partitions ("sync" or "async")."""
        if self.consumer is None or self._since_checkpoint:
            # Offsets past the last checkpoint must never reach the group: a restart
            # would start after events this replica's saved model has not learned.
            return None
        owned = self.consumer.assignment()
        offsets = {tp: OffsetAndMetadata(off, "", -1) for tp, off in self.offsets.items()
                   if tp in owned}
        if not offsets:
            return None
        try:
            if mode == "async":
                return self.consumer.commit_async(offsets)
            self.consumer.commit(offsets)
        except KafkaError as exc:
            # The checkpoint already holds these offsets; the next commit catches up.
            self.metrics.kafka_errors.labels("commit").inc()
            log.warning("offset commit failed (%s); checkpoint remains authoritative", exc)
        return None

    def _offsets_text(self) -> str:
        return ", ".join(f"{tp.topic}[{tp.partition}]={o}" for tp, o in sorted(self.offsets.items()))


def dlq_copy(value: bytes, key: bytes | None, headers: list[tuple[str, bytes]]
             ) -> tuple[bytes, bytes | None]:
    """(value, key) cut so the whole record fits ``DLQ_MAX_RECORD_BYTES``; ``headers``
    gain ``truncated_from_bytes`` (the value's size) and, for a key that alone would not
    fit, ``truncated_key_from_bytes``.

    >>> h = []
    >>> v, k = dlq_copy(b"x" * 300_000, b"key", h)
    >>> len(v) + len(k) + sum(len(a) + len(b) for a, b in h) <= DLQ_MAX_RECORD_BYTES, h[0]
    (True, ('truncated_from_bytes', b'300000'))
    """
    budget = DLQ_MAX_RECORD_BYTES - sum(len(k) + len(v) for k, v in headers) - 64
    if key is not None and len(key) > budget // 2:
        headers.append(("truncated_key_from_bytes", str(len(key)).encode()))
        key = key[: budget // 2]
    budget -= len(key or b"")
    if len(value) > budget:
        headers.append(("truncated_from_bytes", str(len(value)).encode()))
        value = value[:budget]
    return value, key
