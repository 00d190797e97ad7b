"""The consumer's side of the daemon: where each partition starts, where it stands.

Owns the positions (next offset to process per partition), the seeks after an
assignment, the check of a new assignment against the group's committed offsets, the
lag gauges, the recreated-topic check and pause/resume. It knows nothing of the model:
the daemon hands it the consumer once connected and the offsets it processed.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any, Callable

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from .config import Settings
from .metrics import Metrics

log = logging.getLogger(__name__)

class ConsumerSide:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.consumer: KafkaConsumer | None = None
        self.offsets: dict[TopicPartition, int] = {}     # next offset to process
        # Restored from an older checkpoint because a newer one was unreadable: the group's
        # committed offset may be the lost checkpoint's, so it must not move us forward.
        self.replay_from_checkpoint: set[TopicPartition] = set()
        self.unverified: set[TopicPartition] = set()    # assigned, committed offset not checked
        self.rebalanced = False
        self.lag_total = 0

    def restored(self, offsets: dict[TopicPartition, int], fallback: bool) -> None:
        """Positions from a checkpoint; ``fallback``: an older one, a newer was unreadable."""
        self.offsets = offsets
        if fallback:
            self.replay_from_checkpoint = set(offsets)

    def processed(self, topic: str, partition: int, last_offset: int) -> None:
        self.offsets[TopicPartition(topic, partition)] = last_offset + 1

    def offsets_text(self) -> str:
        return ", ".join(f"{tp.topic}[{tp.partition}]={o}" for tp, o in sorted(self.offsets.items()))

    def topic_exists(self, topic: str) -> bool | None:
        """Asks the broker (a metadata request); None when it cannot be asked."""
        if self.consumer is None:
            return None
        try:
            return topic in self.consumer.topics()
        except KafkaError:
            return None

    # -- rebalances (the callbacks run inside poll) ----------------------------------------
    def revoked(self, revoked: set[TopicPartition]) -> None:
        self.rebalanced = True
        for tp in revoked:   # a stale lag would read as events waiting here (a false alert)
            with contextlib.suppress(KeyError):   # no lag series yet: nothing consumed from it
                self.metrics.consumer_lag.remove(str(tp.partition))

    def assigned(self, assigned: set[TopicPartition]) -> None:
        self.rebalanced = True
        assert self.consumer is not None
        for tp in assigned:
            if tp in self.offsets:
                self.consumer.seek(tp, self.offsets[tp])
        # The committed offset can be ahead of our checkpoint when another replica owned
        # the partition meanwhile; checked from the main loop, where blocking is allowed.
        self.unverified |= assigned

    def verify_assignment(self, records: list[Any]) -> list[Any]:
        """Start each newly assigned partition at max(checkpoint, committed)."""
        assert self.consumer is not None
        skip: dict[TopicPartition, int] = {}
        for tp in list(self.unverified):
            try:
                committed = self.consumer.committed(tp)
            except KafkaError as exc:
                log.warning("committed offset of %s unknown (%s); trusting checkpoint", tp, exc)
                committed = None
            self.unverified.discard(tp)
            mine = self.offsets.get(tp)
            if tp in self.replay_from_checkpoint:
                self.replay_from_checkpoint.discard(tp)
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

    # -- polling --------------------------------------------------------------------------
    def next_batch(self, stopping: Callable[[], bool], limit: int | None = None) -> list[Any]:
        """Up to batch.size records (``limit``, when smaller: a young model, see
        :func:`~.warm_start.young_batch_limit`), or fewer once batch.max_wait_ms has passed."""
        assert self.consumer is not None
        size = self.settings.batch.size
        if limit is not None:
            size = max(1, min(size, limit))
        deadline = time.monotonic() + self.settings.batch.max_wait_ms / 1000
        out: list[Any] = []
        while len(out) < size and not stopping():
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
            if self.rebalanced:
                # Assignment seeks every partition back to its last processed offset, so
                # records polled before the rebalance will be fetched again (or belong to
                # partitions now owned by another replica): drop them.
                self.rebalanced = False
                out = []
            for recs in polled.values():
                out.extend(recs)
            if self.unverified:
                out = self.verify_assignment(out)
            if remaining_ms <= 0:
                break
        return out

    # -- flow control -----------------------------------------------------------------------
    def pause_all(self) -> None:
        assert self.consumer is not None
        self.consumer.pause(*self.consumer.assignment())

    def pause_unsaved(self, unsaved: int) -> None:
        """Checkpoints fail (or lag): a crash now would replay all of these; take no more."""
        assert self.consumer is not None
        if not self.consumer.paused():
            log.warning("%d events unsaved (checkpoint.max_unsaved_events): consumption "
                        "paused until a checkpoint succeeds", unsaved)
        self.pause_all()

    def resume(self) -> None:
        assert self.consumer is not None
        if self.consumer.paused():
            self.consumer.resume(*self.consumer.paused())

    # -- housekeeping -----------------------------------------------------------------------
    def refresh_lag(self) -> None:
        if self.consumer is None:
            return
        lag = 0
        for tp in self.consumer.assignment():
            high = self.consumer.highwater(tp)
            if high is not None and tp in self.offsets:
                lag += max(high - self.offsets[tp], 0)
                self.metrics.consumer_lag.labels(str(tp.partition)).set(
                    max(high - self.offsets[tp], 0))
        self.lag_total = lag

    def restart_recreated(self) -> None:
        """Positions past the log's end: follow auto_offset_reset for those partitions."""
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
