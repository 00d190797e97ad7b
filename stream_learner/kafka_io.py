"""kafka-python clients: the group consumer, the producer and the rebalance listener
(the producer's delivery bookkeeping is :mod:`stream_learner.outputs`)."""

from __future__ import annotations

import logging
from typing import Any, Callable

from kafka import KafkaConsumer, KafkaProducer
from kafka.consumer.subscription_state import AsyncConsumerRebalanceListener

from .config import Settings

log = logging.getLogger(__name__)

def make_consumer(settings: Settings) -> KafkaConsumer:
    """A group consumer with manual commits; raises NoBrokersAvailable while Kafka is away."""
    k = settings.kafka
    return KafkaConsumer(
        **k.client_options(),
        group_id=k.group_id,
        enable_auto_commit=False,
        auto_offset_reset=k.auto_offset_reset,
        session_timeout_ms=k.session_timeout_ms,
        heartbeat_interval_ms=k.heartbeat_interval_ms,
        max_poll_records=settings.batch.size,
        check_crcs=k.check_crcs,
        # Room for several batches per fetch, and for oversize events to be fetched
        # (and then dead-lettered) instead of wedging the partition.
        max_partition_fetch_bytes=max(8 * 1024 * 1024, 2 * k.max_event_bytes),
        fetch_max_bytes=64 * 1024 * 1024,
        # A caught-up fetch is held this long by the broker: bound it by the batch wait,
        # or the event-to-update latency floor is Kafka's 500 ms default.
        fetch_max_wait_ms=min(settings.batch.max_wait_ms, 100),
    )


def make_producer(settings: Settings) -> KafkaProducer:
    return KafkaProducer(
        **settings.kafka.client_options(),
        acks="all",
        # Outputs are at-least-once anyway (a replay after a crash re-sends them), and
        # kafka-python's idempotent producer goes fatal for good when the broker loses
        # its log (InitProducerId refused after a restart): every later send aborts and
        # no checkpoint could be written again. Retries may reorder; nothing relies on
        # DLQ or prediction order.
        enable_idempotence=False,
        linger_ms=5,
        batch_size=256 * 1024,
        # Bounded so a missing broker cannot freeze the loop (and /healthz) in send().
        max_block_ms=2_000,
        max_request_size=4 * 1024 * 1024,
    )


class Listener(AsyncConsumerRebalanceListener):
    """Forwards rebalance callbacks to the daemon.

    kafka-python 3.x runs them on its IO loop while the main thread waits inside
    ``poll()``, so the daemon's state is quiescent. A blocking ``commit()`` raises
    there, and a fire-and-forget ``commit_async()`` can lose the race with the
    JoinGroup that follows; awaiting the commit's future keeps the order
    checkpoint → commit → give the partitions up, without blocking heartbeats.
    """

    def __init__(self, on_revoked: Callable[[set[Any], bool], Any],
                 on_assigned: Callable[[set[Any]], None]) -> None:
        self._on_revoked = on_revoked
        self._on_assigned = on_assigned

    async def on_partitions_revoked(self, revoked: Any) -> None:
        future = self._on_revoked(set(revoked), True)
        if future is not None:
            try:
                await future
            except Exception as exc:  # noqa: BLE001 - the checkpoint is authoritative
                log.warning("offset commit before rebalance failed: %s", exc)

    async def on_partitions_lost(self, lost: Any) -> None:
        # Evicted: the group no longer accepts our commits; the checkpoint still counts.
        self._on_revoked(set(lost), False)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self._on_assigned(set(assigned))
