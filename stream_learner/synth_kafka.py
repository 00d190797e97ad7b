"""Sending a synthetic stream to Kafka at a given rate, and creating topics.

Apart from the streams so that generating events needs no broker client; kafka-python
is imported only inside the functions that talk to one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .synth_messages import tagged_messages
from .synth_streams import DRIFT_EVERY

log = logging.getLogger(__name__)


class RateLimiter:
    """Paces calls to ``rate`` per second on average (GCRA-style token bucket).

    Each :meth:`acquire` books the next slot on an absolute schedule, so sleep
    overshoot is paid back by later calls instead of drifting the average.  After
    a stall, at most ``burst`` calls go out back to back to catch up.
    """

    def __init__(self, rate: float, burst: float | None = None, *,
                 min_sleep: float = 0.001,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        self.interval = 1.0 / rate
        # Default credit: 50 ms worth of events, never less than one.
        self.burst = max(1.0, rate * 0.05) if burst is None else max(1.0, burst)
        # Sleeping for a few µs costs more than it paces; let small debts accrue.
        self.min_sleep = min_sleep
        self._clock = clock
        self._sleep = sleep
        self._next = clock()

    def acquire(self) -> None:
        """Block until the next call is allowed."""
        now = self._clock()
        ahead = self._next - now
        if ahead >= self.min_sleep:
            self._sleep(ahead)
        elif ahead < 0:
            # Cap banked credit so a long stall does not become a long burst.
            self._next = max(self._next, now - self.burst * self.interval)
        self._next += self.interval


@dataclass
class ProduceReport:
    """Outcome of :func:`produce`.

    ``sent`` counts acknowledged messages; ``failed`` those the producer gave up on
    (so ``sent + failed`` is the number handed to the producer).  ``bad``,
    ``unlabeled`` and ``by_reason`` count what was generated.
    """

    sent: int
    bad: int
    unlabeled: int
    seconds: float
    by_reason: dict[str, int] = field(default_factory=dict)
    failed: int = 0

    @property
    def rate(self) -> float:
        """Achieved messages per second."""
        return self.sent / self.seconds if self.seconds > 0 else 0.0


class _DeliveryTally:
    """Counts delivery outcomes reported from the producer's I/O thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.ok = 0
        self.failed = 0
        self.first_error: BaseException | None = None

    def success(self, _metadata: Any) -> None:
        with self._lock:
            self.ok += 1

    def failure(self, exc: BaseException) -> None:
        with self._lock:
            self.failed += 1
            if self.first_error is None:
                self.first_error = exc


PRODUCER_DEFAULTS: dict[str, Any] = {
    "linger_ms": 5,
    "batch_size": 256 * 1024,
    "acks": 1,
    # Room for the 2 MiB too_large events, with headroom for batch framing.
    "max_request_size": 4 << 20,
}


def produce(bootstrap_servers: str, topic: str, name: str, count: int, *,
            rate: float | None = None, seed: int = 42, partitions: int | None = None,
            bad_fraction: float | None = None, unlabeled_fraction: float = 0.0,
            producer_config: dict[str, Any] | None = None, start_id: int = 0,
            drift_every: int = DRIFT_EVERY, dict_features: bool = False,
            bad_reasons: Sequence[str] | None = None) -> ProduceReport:
    """Send ``count`` events of stream ``name`` to ``topic``; flush, close and report.

    ``rate`` caps events per second on average (``None``: as fast as possible).
    Messages have no key, so the producer spreads them; with ``partitions`` given,
    event ``i`` goes to partition ``i % partitions`` explicitly instead.
    ``producer_config`` overrides :data:`PRODUCER_DEFAULTS` for the KafkaProducer.
    """
    from kafka import KafkaProducer  # deferred: the streams are useful without kafka

    if partitions is not None and partitions < 1:
        raise ValueError(f"partitions must be >= 1, got {partitions}")
    messages = tagged_messages(name, count, seed=seed, bad_fraction=bad_fraction,
                         unlabeled_fraction=unlabeled_fraction, start_id=start_id,
                         drift_every=drift_every, dict_features=dict_features,
                         bad_reasons=bad_reasons)
    limiter = RateLimiter(rate) if rate is not None else None
    tally = _DeliveryTally()
    by_reason: Counter[str] = Counter()
    unlabeled = 0
    config = {**PRODUCER_DEFAULTS, **(producer_config or {})}
    producer = KafkaProducer(bootstrap_servers=bootstrap_servers, **config)
    started = time.monotonic()
    try:
        for i, (value, reason, is_unlabeled) in enumerate(messages):
            if limiter is not None:
                limiter.acquire()
            if reason is not None:
                by_reason[reason] += 1
            unlabeled += is_unlabeled
            partition = i % partitions if partitions is not None else None
            future = producer.send(topic, value=value, partition=partition)
            future.add_callback(tally.success)
            future.add_errback(tally.failure)
        producer.flush()
    finally:
        producer.close()
    seconds = time.monotonic() - started
    if tally.failed:
        log.warning("%d of %d messages to %s failed; first error: %r", tally.failed,
                    tally.ok + tally.failed, topic, tally.first_error)
    report = ProduceReport(sent=tally.ok, bad=sum(by_reason.values()), unlabeled=unlabeled,
                           seconds=seconds, by_reason=dict(by_reason), failed=tally.failed)
    log.info("produced %d %s events to %s in %.2fs (%.0f/s, %d bad, %d unlabeled)",
             report.sent, name, topic, seconds, report.rate, report.bad, unlabeled)
    return report


def ensure_topics(bootstrap_servers: str, topics: Mapping[str, int], *,
                  timeout_ms: int = 10_000) -> None:
    """Create each ``topic → partitions`` (replication factor 1) unless it exists."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=timeout_ms)
    try:
        # One request per topic: a batch fails as a whole if any one already exists.
        for topic, num_partitions in topics.items():
            try:
                admin.create_topics([NewTopic(topic, num_partitions=num_partitions,
                                              replication_factor=1)], timeout_ms=timeout_ms)
            except TopicAlreadyExistsError:
                log.debug("topic %s already exists", topic)
    finally:
        admin.close()
