"""What the daemon writes to Kafka: dead-letter copies, rejects, predictions.

Every record goes through one :class:`~stream_learner.outputs.ReliableProducer`;
records the broker will not take go to the undeliverable spill. The sink also answers
whether those sends are backlogged (the daemon then stops fetching) and flushes them
before a checkpoint.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .config import Settings
from .counters import Counters
from .events import TOO_MANY_CLASSES, DecodedBatch
from .kafka_io import make_producer
from .learner_host import Learned, Predicted
from .metrics import Metrics
from .outputs import ReliableProducer
from .predictions import encode_predictions
from .undeliverable import OutputRecord, UndeliverableLog

log = logging.getLogger(__name__)

# A DLQ copy (value, key and headers) is cut to this, marked truncated_from_bytes: far
# below Kafka's default message.max.bytes (1 MiB) and the producer's max_request_size,
# so a copy of any event we could read is one the broker accepts.
DLQ_MAX_RECORD_BYTES = 256 * 1024
MAX_PENDING_RECORDS = 200_000      # pause consumption while this many sends are unacknowledged


class OutputSink:
    def __init__(self, settings: Settings, metrics: Metrics, counters: Counters) -> None:
        self.settings = settings
        self.metrics = metrics
        self.counters = counters
        self.producer: ReliableProducer | None = None

    def connect(self, topic_exists: Callable[[str], bool | None]) -> None:
        s = self.settings
        spill = UndeliverableLog(s.checkpoint.dir / "undeliverable.jsonl",
                                 s.checkpoint.undeliverable_max_bytes)
        self.producer = ReliableProducer(make_producer(s), spill, s.kafka.output_retry_seconds,
                                         on_spilled=self._spilled, topic_exists=topic_exists)

    def _spilled(self, record: OutputRecord, reason: str) -> None:
        self.metrics.output_failures.labels(record.topic, reason).inc()

    def close(self) -> None:
        if self.producer is not None:
            self.producer.close()
            self.producer = None

    # -- records ----------------------------------------------------------------------------
    def dead_letter(self, records: list[Any], batch: DecodedBatch) -> None:
        for rej in batch.rejects:
            self.reject(records[rej.index], rej.reason, rej.detail)

    def dead_letter_refused(self, result: Learned, records: list[Any],
                            rows: np.ndarray) -> None:
        detail = (f"the model knows model.max_classes={self.settings.model.max_classes} "
                  f"classes; this label would add one more")
        for pos in result.refused.tolist():
            self.reject(records[int(rows[pos])], TOO_MANY_CLASSES, detail)

    def reject(self, rec: Any, reason: str, detail: str) -> None:
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

    def publish_predictions(self, result: Predicted, labels: list[str], ids: list[str],
                            keys: list[bytes | None], sources: list[tuple[str, int, int]],
                            checkpoint_path: str | None = None) -> None:
        assert self.producer is not None
        topic = self.settings.kafka.predictions_topic
        # The checkpoint file's name (its id) is the state this model grew from.
        checkpoint = Path(checkpoint_path).name if checkpoint_path else None
        messages = encode_predictions(ids, result.idx.tolist(), result.proba.tolist(),
                                      labels, self.counters.learned, checkpoint,
                                      result.top_idx, result.top_proba)
        for key, value, source in zip(keys, messages, sources):
            self.producer.send(OutputRecord(topic, value, key, None, source))
        self.counters.predicted += len(ids)
        self.metrics.predictions.inc(len(ids))

    # -- backpressure and flush -------------------------------------------------------------
    def report_pending(self) -> None:
        assert self.producer is not None
        self.metrics.output_pending_bytes.set(self.producer.pending_bytes)

    def within_limits(self) -> bool:
        """Fewer unacknowledged sends than the bounds (in records and in bytes:
        ``kafka.max_pending_bytes``): the daemon may fetch."""
        assert self.producer is not None
        return (self.producer.pending < MAX_PENDING_RECORDS
                and self.producer.pending_bytes < self.settings.kafka.max_pending_bytes)

    def flush(self, timeout_s: float) -> bool:
        """True once every record is acknowledged (or spilled)."""
        assert self.producer is not None
        return self.producer.flush(timeout_s)

    @property
    def pending(self) -> int:
        assert self.producer is not None
        return self.producer.pending


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
