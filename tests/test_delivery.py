"""Every event is accounted for, against a real broker and a real daemon process."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from kafka import KafkaConsumer, TopicPartition

from stream_learner.events import REJECT_REASONS
from stream_learner.synth import ensure_topics, produce

from conftest import (DaemonProcess, checkpoint_offsets_sum, http_get, latest_checkpoint,
                      read_topic, unique)

REQUIRED_SERIES = [
    "stream_learner_events_consumed_total", "stream_learner_events_learned_total",
    'stream_learner_events_rejected_total{reason="not_json"}', "stream_learner_predictions_total",
    'stream_learner_consumer_lag{partition="0"}',
    "stream_learner_last_event_processed_timestamp_seconds",
    "stream_learner_update_duration_seconds_count", "stream_learner_event_to_update_seconds_count",
    "stream_learner_prequential_accuracy", "stream_learner_rolling_accuracy",
    "stream_learner_loss", "stream_learner_replay_buffer_events", "stream_learner_model_classes",
    "stream_learner_checkpoint_last_success_timestamp_seconds",
    "stream_learner_checkpoint_duration_seconds_count",
    "stream_learner_events_held_out_total", "stream_learner_forgetting",
    "stream_learner_backward_transfer", "stream_learner_steps_skipped_total",
    'stream_learner_build_info{version="0.1.0"}',
    'stream_learner_model_info{device="cpu",strategy="replay"}',
]


def test_every_event_is_learned_rejected_or_predicted(broker, daemons, tmp_path: Path) -> None:
    bs = broker.bootstrap_servers
    topic, n = unique("acct"), 3000
    ensure_topics(bs, {topic: 3, f"{topic}.dlq": 1, f"{topic}.predictions": 1})
    report = produce(bs, topic, "mixed", n, unlabeled_fraction=0.02)
    # Every reason synth can make (out_of_range needs a configured bound, undecodable a
    # decoder bug, feature_names_mismatch fixed names: tests/test_decoder_hostile.py).
    assert report.sent == n and set(report.by_reason) == set(REJECT_REASONS) - {
        "feature_names_mismatch", "out_of_range", "undecodable"}

    # The YAML names a topic that does not exist; the environment overrides it.
    config = tmp_path / "config.yaml"
    config.write_text("kafka:\n  topic: not-this-one\ncheckpoint:\n  every_events: 500\n")
    ckpt = tmp_path / "ckpt"
    d = DaemonProcess(bs, ckpt, topic, unique("g"), args=["--config", str(config)])
    daemons.append(d)
    d.wait_consumed(n)

    assert http_get(d.url + "/healthz")[0] == 200
    assert http_get(d.url + "/readyz")[0] == 200
    metrics = d.metrics()
    missing = [s for s in REQUIRED_SERIES if s not in metrics]
    assert not missing, f"series missing from /metrics: {missing}"
    assert metrics["stream_learner_model_classes"] == 2

    assert d.terminate() == 0, "SIGTERM must exit 0"
    state = latest_checkpoint(ckpt)
    counters = state["counters"]
    rejected = sum(counters["rejected"].values())
    assert counters["consumed"] == n == checkpoint_offsets_sum(state)
    assert counters["learned"] + counters["held_out"] + rejected + counters["predicted"] == n
    # Forgetting probes hold out at most probes.per_class events per class and period.
    assert 0 < counters["held_out"] <= 2 * 32
    assert metrics["stream_learner_events_held_out_total"] == counters["held_out"]
    assert counters["rejected"] == dict(report.by_reason)
    assert counters["predicted"] == report.unlabeled

    dlq = read_topic(bs, f"{topic}.dlq", rejected)
    assert len(dlq) == rejected
    by_reason = Counter(dict(r.headers)["reason"].decode() for r in dlq)
    assert by_reason == Counter(report.by_reason)
    for rec in dlq:
        headers = dict(rec.headers)
        assert headers["source_topic"].decode() == topic
        assert int(headers["source_partition"]) in (0, 1, 2)
        assert int(headers["source_offset"]) >= 0
        assert headers["detail"]

    predictions = read_topic(bs, f"{topic}.predictions", report.unlabeled)
    assert len(predictions) == report.unlabeled
    # A model that knows no class yet serves "label": null (the cold start, docs/labels.md):
    # only before its first label, so in the predictions' log order no null follows a label.
    docs = [json.loads(rec.value) for rec in predictions]
    served = [doc["label"] is not None for doc in docs]
    assert served == sorted(served) and any(served)
    for doc in docs:
        assert doc["id"] is not None
        if doc["label"] is not None:
            assert doc["label"] in (0, 1) and 0.5 <= doc["probability"] <= 1.0

    # Graceful stop committed the checkpoint's offsets to the group.
    committed = KafkaConsumer(bootstrap_servers=bs, group_id=d.env["STREAM_LEARNER_KAFKA__GROUP_ID"],
                              enable_auto_commit=False)
    try:
        for partition, offset in state["offsets"][topic].items():
            assert committed.committed(TopicPartition(topic, partition)) == offset
    finally:
        committed.close()

