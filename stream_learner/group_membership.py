"""Joining the consumer group, what a rebalance does to us, and leaving.

Apart from the loop because these run at other times: connecting retries until the broker
answers (a SIGTERM ends the wait), and the rebalance callbacks run *inside* ``poll``. A
revocation checkpoints before the partitions go and hands back the commit future the
listener awaits, so no event is learned twice across the group; an assignment seeks
(:class:`~stream_learner.consumer_side.ConsumerSide`) and makes the daemon ready.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Callable

from kafka import TopicPartition
from kafka.errors import KafkaError

from .checkpoint_coordinator import CheckpointCoordinator
from .config import Settings
from .consumer_side import ConsumerSide
from .housekeeping import Housekeeping
from .kafka_io import Listener, make_consumer
from .metrics import Metrics
from .output_sink import OutputSink

if TYPE_CHECKING:    # imported only with federation on: it needs torch
    from .federation.transport import Federation

log = logging.getLogger(__name__)


class GroupMembership:
    def __init__(self, settings: Settings, metrics: Metrics, positions: ConsumerSide,
                 sink: OutputSink, checkpoints: CheckpointCoordinator,
                 federation: Federation | None, housekeeping: Housekeeping,
                 stopping: Callable[[], bool]) -> None:
        """``stopping`` is read, never cached: a signal handler sets it at any time."""
        self.settings, self.metrics = settings, metrics
        self.positions, self.sink, self.checkpoints = positions, sink, checkpoints
        self.federation, self.housekeeping = federation, housekeeping
        self.stopping = stopping

    def connect(self) -> bool:
        """Create the clients, retrying while the broker is unreachable."""
        delay = 0.5
        kafka = self.settings.kafka
        self.housekeeping.status(f"connecting to Kafka at {kafka.bootstrap_servers}")
        while not self.stopping():
            self.housekeeping.tick()
            try:
                t0 = time.monotonic()
                if self.sink.producer is None:
                    self.sink.connect(topic_exists=self.positions.topic_exists)
                    log.info("producer connected in %.1fs", time.monotonic() - t0)
                if self.stopping():       # a SIGTERM while connecting: no group join
                    break
                if self.federation is not None and self.federation.consumer is None:
                    self.federation.connect()
                consumer = make_consumer(self.settings)
                self.positions.consumer = consumer
                consumer.subscribe([kafka.topic],
                                   listener=Listener(self.on_revoked, self.on_assigned))
                log.info("consuming %s as group %s from %s", kafka.topic,
                         kafka.group_id, kafka.bootstrap_servers)
                return True
            except KafkaError as exc:
                self.metrics.kafka_errors.labels("connect").inc()
                log.warning("Kafka at %s not reachable (%s); retrying in %.1fs",
                            kafka.bootstrap_servers, exc, delay)
                deadline = time.monotonic() + delay
                while not self.stopping() and time.monotonic() < deadline:
                    time.sleep(0.05)        # a SIGTERM ends the wait, not just the loop
                delay = min(delay * 2, 10.0)
        return False

    def leave(self) -> None:
        """Leave the group now, not at session timeout; never commit on the way out."""
        consumer = self.positions.consumer
        if consumer is None:
            return
        try:
            consumer.unsubscribe()
            consumer.close(autocommit=False)
        except KafkaError as exc:
            log.warning("consumer close: %s", exc)
        self.positions.consumer = None

    # -- rebalance callbacks (run inside poll) ----------------------------------------------
    def on_revoked(self, revoked: set[TopicPartition], commit: bool) -> Any:
        """Checkpoint before the partitions go; returns the commit future to await."""
        log.info("partitions revoked: %s", sorted(revoked))
        self.positions.revoked(revoked)
        if not revoked:
            return None
        if (self.checkpoints.since_checkpoint
                and not self.checkpoints.checkpoint(commit="none", flush_timeout_s=5.0)):
            return None
        return self.checkpoints.commit("async") if commit else None

    def on_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("partitions assigned: %s", sorted(assigned))
        self.positions.assigned(assigned)
        kafka = self.settings.kafka
        self.housekeeping.ready(f"consuming {kafka.topic} as group {kafka.group_id}")
