"""A record Kafka will never accept does not stop the daemon's checkpoints (real daemon,
real broker): an unlabeled event with a 5 MiB key makes a prediction record beyond the
producer's max_request_size, and a poison event with such a key a DLQ copy that must be
cut to fit.  Before, both were re-queued forever and no checkpoint was written again."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from kafka import KafkaProducer

from stream_learner.synth import ensure_topics

from conftest import DaemonProcess, latest_checkpoint, read_topic, unique, wait_for

BIG_KEY = b"k" * (5 << 20)      # beyond the daemon producer's 4 MiB max_request_size


def test_refused_outputs_are_spilled_and_checkpoints_go_on(broker, daemons,
                                                           tmp_path: Path) -> None:
    bs, topic = broker.bootstrap_servers, unique("spill")
    ensure_topics(bs, {topic: 1, f"{topic}.dlq": 1, f"{topic}.predictions": 1})
    producer = KafkaProducer(bootstrap_servers=bs, max_request_size=16 << 20)
    events = [(None, {"id": f"e{i}", "label": i % 2, "features": [i % 2, 1.0]})
              for i in range(200)]
    events[50] = (BIG_KEY, {"id": "big-unlabeled", "label": None, "features": [1.0, 1.0]})
    events[60] = (BIG_KEY, "not json at all")
    events[70] = (b"small", {"id": "small-unlabeled", "features": [0.0, 1.0]})
    for key, value in events:
        body = value.encode() if isinstance(value, str) else json.dumps(value).encode()
        producer.send(topic, body, key=key)
    producer.flush()
    producer.close()

    ckpt = tmp_path / "ckpt"
    d = DaemonProcess(bs, ckpt, topic, unique("g"), extra_env={
        "STREAM_LEARNER_KAFKA__OUTPUT_RETRY_SECONDS": "2",
        "STREAM_LEARNER_CHECKPOINT__EVERY_SECONDS": "1"})
    daemons.append(d)
    d.wait_consumed(len(events))
    series = 'stream_learner_output_failures_total{reason="too_large",topic="%s.predictions"}'
    wait_for(lambda: d.metric(series % topic, 0.0) == 1.0, 30, "the prediction spilled")
    assert d.terminate() == 0

    state = latest_checkpoint(ckpt)
    assert state["offsets"][topic] == {0: len(events)}       # checkpointed past all of them
    [line] = (ckpt / "undeliverable.jsonl").read_text().splitlines()
    doc = json.loads(line)
    assert doc["topic"] == f"{topic}.predictions" and doc["reason"] == "too_large"
    assert doc["source"] == {"topic": topic, "partition": 0, "offset": 50}
    assert base64.b64decode(doc["key"]) == BIG_KEY
    assert json.loads(base64.b64decode(doc["value"]))["id"] == "big-unlabeled"

    [dlq] = read_topic(bs, f"{topic}.dlq", 1)
    headers = dict(dlq.headers)
    assert headers["reason"] == b"not_json" and headers["source_offset"] == b"60"
    assert headers["truncated_key_from_bytes"] == str(len(BIG_KEY)).encode()
    assert dlq.value == b"not json at all"
    [pred] = read_topic(bs, f"{topic}.predictions", 1)
    assert pred.key == b"small" and json.loads(pred.value)["id"] == "small-unlabeled"
