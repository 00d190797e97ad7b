"""``undeliverable.jsonl``: output records Kafka refused for good, kept beside the checkpoints.

A DLQ copy or prediction that the broker will never accept (too large, not authorised,
unknown topic) must not hold every later checkpoint hostage, and must not vanish
either: after ``kafka.output_retry_seconds`` of refusals it is appended here, one JSON
object per line, bytes as base64, with the event it came from, and fsynced before the
checkpoint that moves past that event is written.  The file is bounded
(``checkpoint.undeliverable_max_bytes``); when full, records stay pending instead, so
checkpoints stop and readiness fails until an operator moves the file away.

>>> import base64, json, tempfile
>>> log = UndeliverableLog(tempfile.mkdtemp() + "/undeliverable.jsonl", max_bytes=10_000)
>>> log.append(OutputRecord("events.dlq", b"v", b"k", [("reason", b"not_json")],
...                         ("events", 0, 7)), "too_large")
True
>>> doc = json.loads(log.path.read_text())
>>> doc["topic"], doc["reason"], base64.b64decode(doc["value"]), doc["source"]["offset"]
('events.dlq', 'too_large', b'v', 7)
"""

from __future__ import annotations

import base64
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]
Source = tuple[str, int, int]        # topic, partition, offset of the event behind a record


@dataclass
class OutputRecord:
    """One record for Kafka, with the event it was made from (for logs and the spill)."""

    topic: str
    value: bytes
    key: bytes | None = None
    headers: Headers | None = None
    source: Source | None = None
    first_refused: float | None = None     # monotonic time of the first permanent refusal
    refused_reason: str | None = None      # why Kafka refuses it for good (None: it doesn't)

    @property
    def size(self) -> int:
        """Bytes Kafka sees: value, key and headers (what its size limits count)."""
        return (len(self.value) + len(self.key or b"")
                + sum(len(k) + len(v) for k, v in self.headers or []))

    def where(self) -> str:
        if self.source is None:
            return "no source event"
        topic, partition, offset = self.source
        return f"from {topic}[{partition}]@{offset}"


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


class UndeliverableLog:
    """Append-only, size-bounded JSON-lines file; ``full`` once a record did not fit."""

    def __init__(self, path: str | Path, max_bytes: int) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.full = False

    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def append(self, record: OutputRecord, reason: str) -> bool:
        """Write and fsync one record; False (and ``full``) when it would pass the bound."""
        src = record.source
        line = json.dumps({
            "time": time.time(), "topic": record.topic, "reason": reason,
            "key": _b64(record.key), "value": _b64(record.value),
            "headers": [[k, _b64(v)] for k, v in record.headers or []],
            "source": None if src is None else
            {"topic": src[0], "partition": src[1], "offset": src[2]},
        }, separators=(",", ":")).encode() + b"\n"
        if self.size() + len(line) > self.max_bytes:
            self.full = True
            return False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "ab") as fh:
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:    # disk full, read-only: the record stays pending
            log.warning("cannot append to %s (%s); the record stays pending", self.path, exc)
            self.full = True
            return False
        self.full = False
        return True
