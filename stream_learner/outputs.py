"""The output sink's producer: every DLQ and prediction record is delivered or spilled.

``ReliableProducer.flush()`` answers the one question the checkpoint needs: has every
record sent so far reached Kafka or ``undeliverable.jsonl``?  Two kinds of failure:

* *transient* (the broker is away, a leader moves, a timeout): retried for as long as
  it takes; checkpoints wait, which is right, since nothing can be committed then either;
* *permanent* (:func:`permanent_reason`: too large, not authorised, unknown topic): the
  record is retried for ``kafka.output_retry_seconds`` (an operator may be fixing an
  ACL), then counted, logged once with the event it came from, and spilled, so the
  checkpoint and the commit can move on without losing it.

Acknowledged records are released at once (a callback on the send future), so pending
memory is what the broker has not acknowledged yet: :attr:`pending_bytes`, which the
daemon holds under ``kafka.max_pending_bytes`` by pausing consumption.

>>> permanent_reason(MessageSizeTooLargeError()), permanent_reason(KafkaTimeoutError())
('too_large', None)
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any, Callable

from kafka import KafkaProducer
from kafka.errors import (InvalidTopicError, KafkaError, KafkaTimeoutError,
                          MessageSizeTooLargeError, RecordListTooLargeError,
                          TopicAuthorizationFailedError, UnknownTopicOrPartitionError)

from .undeliverable import OutputRecord, UndeliverableLog

log = logging.getLogger(__name__)

OUTPUT_FAILURE_REASONS = ("too_large", "not_authorised", "unknown_topic", "refused")

TopicExists = Callable[[str], "bool | None"]      # None: could not tell (broker away)
OnSpilled = Callable[[OutputRecord, str], None]


def permanent_reason(exc: BaseException) -> str | None:
    """Why Kafka will never take the record, or None when a retry may succeed."""
    if isinstance(exc, (MessageSizeTooLargeError, RecordListTooLargeError)):
        return "too_large"
    if isinstance(exc, TopicAuthorizationFailedError) or "Authorization" in type(exc).__name__:
        return "not_authorised"
    if isinstance(exc, (UnknownTopicOrPartitionError, InvalidTopicError)):
        return "unknown_topic"
    if isinstance(exc, KafkaError) and not exc.retriable:
        return "refused"
    return None


class ReliableProducer:
    def __init__(self, producer: KafkaProducer, spill: UndeliverableLog,
                 retry_seconds: float, on_spilled: OnSpilled | None = None,
                 topic_exists: TopicExists | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.producer = producer
        self.spill = spill
        self.retry_seconds = retry_seconds
        self.on_spilled = on_spilled
        # kafka-python reports a topic that does not exist (and is not auto-created) as a
        # metadata timeout, like a broker that is away; asking the broker tells them apart.
        self.topic_exists = topic_exists
        self.clock = clock
        self._lock = threading.Lock()          # callbacks run on kafka-python's IO thread
        self._inflight = 0
        self._inflight_bytes = 0
        self._failed: deque[tuple[OutputRecord, BaseException]] = deque()
        self._retry: list[OutputRecord] = []
        self._stalled_topics: set[str] = set()  # metadata timed out: don't block per record
        self._logged: set[tuple[str, str]] = set()

    @property
    def pending(self) -> int:
        with self._lock:
            return self._inflight + len(self._failed) + len(self._retry)

    @property
    def pending_bytes(self) -> int:
        with self._lock:
            return (self._inflight_bytes + sum(r.size for r, _ in self._failed)
                    + sum(r.size for r in self._retry))

    def send(self, record: OutputRecord) -> None:
        if record.topic in self._stalled_topics:
            self._retry.append(record)
            return
        self._try_send(record)

    def _try_send(self, record: OutputRecord) -> bool:
        try:
            future = self.producer.send(record.topic, value=record.value, key=record.key,
                                        headers=record.headers or [])
        except KafkaError as exc:
            if isinstance(exc, KafkaTimeoutError):
                self._stalled_topics.add(record.topic)
            self._note_failure(record, exc)
            self._retry.append(record)
            return False
        size = record.size
        with self._lock:
            self._inflight += 1
            self._inflight_bytes += size
        future.add_callback(self._acked, size)
        future.add_errback(self._refused, record, size)
        return True

    def _acked(self, size: int, _metadata: Any) -> None:
        with self._lock:
            self._inflight -= 1
            self._inflight_bytes -= size

    def _refused(self, record: OutputRecord, size: int, exc: BaseException) -> None:
        with self._lock:
            self._inflight -= 1
            self._inflight_bytes -= size
            self._failed.append((record, exc))

    def _note_failure(self, record: OutputRecord, exc: BaseException) -> None:
        reason = permanent_reason(exc)
        if reason is None and isinstance(exc, KafkaTimeoutError) and self.topic_exists:
            if self.topic_exists(record.topic) is False:
                reason = "unknown_topic"
        if reason is None:
            record.first_refused = record.refused_reason = None   # transient: wait, however long
            log.debug("send to %s deferred: %s", record.topic, exc)
            return
        if record.first_refused is None:
            record.first_refused = self.clock()
        record.refused_reason = reason
        if (record.topic, reason) not in self._logged:   # once per topic and reason
            self._logged.add((record.topic, reason))
            log.warning("Kafka refuses a %d-byte record for %s (%s: %s), %s; retrying for "
                        "%.0fs, then it goes to %s", record.size, record.topic, reason, exc,
                        record.where(), self.retry_seconds, self.spill.path)

    def flush(self, timeout_s: float) -> bool:
        """Retry, spill what is refused past the bound, wait up to ``timeout_s``; True
        when every record is acknowledged or spilled."""
        self._collect_failures()
        retry, self._retry = self._retry, []
        self._stalled_topics.clear()
        for record in retry:
            if self._spill_if_due(record):
                continue
            self.send(record)
        try:
            self.producer.flush(timeout=timeout_s)
        except KafkaError as exc:
            log.debug("producer flush incomplete: %s", exc)
        self._collect_failures()
        still = []
        for record in self._retry:
            if not self._spill_if_due(record):
                still.append(record)
        self._retry = still
        return self.pending == 0

    def _collect_failures(self) -> None:
        with self._lock:
            failed = list(self._failed)
            self._failed.clear()
        for record, exc in failed:
            self._note_failure(record, exc)
            self._retry.append(record)

    def _spill_if_due(self, record: OutputRecord) -> bool:
        if record.first_refused is None:
            return False
        if self.clock() - record.first_refused < self.retry_seconds:
            return False
        reason = record.refused_reason or "refused"
        if not self.spill.append(record, reason):
            return False          # spill file full: the record stays pending
        log.warning("record for %s %s spilled to %s (%s)", record.topic, record.where(),
                    self.spill.path, reason)
        if self.on_spilled is not None:
            self.on_spilled(record, reason)
        return True

    def close(self, timeout_s: float = 10.0) -> None:
        try:
            self.producer.close(timeout=timeout_s)
        except KafkaError as exc:  # pragma: no cover - best effort at shutdown
            log.warning("producer close: %s", exc)
