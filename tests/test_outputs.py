"""The output sink's producer against a real broker: acknowledged records are released at
once, a record Kafka refuses for good is retried within the bound and then spilled to
undeliverable.jsonl (never re-queued forever, never dropped), and a full spill file
keeps the record pending."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from kafka import KafkaProducer
from kafka.errors import (KafkaConnectionError, KafkaTimeoutError, MessageSizeTooLargeError,
                          NotLeaderForPartitionError, RecordListTooLargeError,
                          TopicAuthorizationFailedError, UnknownTopicOrPartitionError)

from stream_learner.outputs import ReliableProducer, permanent_reason
from stream_learner.synth import ensure_topics
from stream_learner.undeliverable import OutputRecord, UndeliverableLog

from conftest import read_topic, unique


class Clock:
    """Time the test moves by hand (the bound is 30 s by default)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _producer(bs: str, tmp: Path, clock: Clock, max_bytes: int = 1 << 20,
              spilled: list | None = None) -> ReliableProducer:
    # max_request_size small: Kafka's client refuses the big record itself, for good.
    kafka = KafkaProducer(bootstrap_servers=bs, acks="all", max_request_size=10_000)
    sink = [] if spilled is None else spilled
    return ReliableProducer(kafka, UndeliverableLog(tmp / "undeliverable.jsonl", max_bytes),
                            retry_seconds=30.0, clock=clock,
                            on_spilled=lambda r, why: sink.append((r, why)))


def test_permanent_and_transient_refusals_are_told_apart() -> None:
    assert permanent_reason(MessageSizeTooLargeError()) == "too_large"
    assert permanent_reason(RecordListTooLargeError()) == "too_large"
    assert permanent_reason(TopicAuthorizationFailedError()) == "not_authorised"
    assert permanent_reason(UnknownTopicOrPartitionError()) == "unknown_topic"
    for transient in (KafkaTimeoutError(), NotLeaderForPartitionError(), KafkaConnectionError()):
        assert permanent_reason(transient) is None


def test_acknowledged_records_are_released(broker, tmp_path: Path) -> None:
    bs, topic = broker.bootstrap_servers, unique("out")
    ensure_topics(bs, {topic: 1})
    producer = _producer(bs, tmp_path, Clock())
    for i in range(50):
        producer.send(OutputRecord(topic, f"v{i}".encode(), None, [("h", b"x")], (topic, 0, i)))
    assert producer.flush(10.0)
    assert producer.pending == 0 and producer.pending_bytes == 0
    assert sorted(r.value for r in read_topic(bs, topic, 50)) == sorted(
        f"v{i}".encode() for i in range(50))
    producer.close()


def test_a_record_kafka_never_accepts_is_spilled_after_the_bound(broker, tmp_path: Path) -> None:
    bs, topic = broker.bootstrap_servers, unique("out")
    ensure_topics(bs, {topic: 1})
    clock, spilled = Clock(), []
    producer = _producer(bs, tmp_path, clock, spilled=spilled)
    big = OutputRecord(topic, b"x" * 20_000, b"k", [("reason", b"not_json")], ("events", 2, 41))
    producer.send(big)
    producer.send(OutputRecord(topic, b"small", None, None, ("events", 2, 42)))
    # Within the bound: retried, pending, so the checkpoint waits.
    assert not producer.flush(5.0)
    assert producer.pending == 1 and producer.pending_bytes == big.size
    clock.now += 29.0
    assert not producer.flush(1.0)
    clock.now += 2.0
    assert producer.flush(1.0) and producer.pending == 0
    assert [(r.source, why) for r, why in spilled] == [(("events", 2, 41), "too_large")]
    [line] = (tmp_path / "undeliverable.jsonl").read_text().splitlines()
    doc = json.loads(line)
    assert doc["topic"] == topic and doc["reason"] == "too_large"
    assert base64.b64decode(doc["value"]) == big.value and base64.b64decode(doc["key"]) == b"k"
    assert doc["headers"] == [["reason", base64.b64encode(b"not_json").decode()]]
    assert doc["source"] == {"topic": "events", "partition": 2, "offset": 41}
    assert [r.value for r in read_topic(bs, topic, 1)] == [b"small"]
    producer.close()


def test_a_full_spill_file_keeps_the_record_pending(broker, tmp_path: Path) -> None:
    bs, topic = broker.bootstrap_servers, unique("out")
    ensure_topics(bs, {topic: 1})
    clock = Clock()
    producer = _producer(bs, tmp_path, clock, max_bytes=1024)
    producer.send(OutputRecord(topic, b"x" * 20_000, None, None, ("events", 0, 1)))
    producer.flush(1.0)
    clock.now += 31.0
    assert not producer.flush(1.0)
    assert producer.pending == 1 and producer.spill.full
    assert not (tmp_path / "undeliverable.jsonl").exists()
    producer.close()
