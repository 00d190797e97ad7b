"""Label-later events against a real broker and daemon process, with a kill -9 and
restarts between predictions and their labels: counted by id and by offset."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from kafka import KafkaProducer

from stream_learner.checkpoint import CheckpointStore
from stream_learner.synth import ensure_topics

from conftest import DaemonProcess, latest_checkpoint, read_topic, unique, wait_for

WINDOW_S = 100.0
ENV = {"STREAM_LEARNER_PROBES__PER_CLASS": "0",            # no held-out probes: exact counts
       "STREAM_LEARNER_MODEL__N_FEATURES": "2",
       # No periodic checkpoints: only SIGTERM takes one, so the kill -9 below replays.
       "STREAM_LEARNER_CHECKPOINT__EVERY_EVENTS": "1000000",
       "STREAM_LEARNER_CHECKPOINT__EVERY_SECONDS": "3600",
       "STREAM_LEARNER_LABELS__JOIN_WINDOW_SECONDS": str(WINDOW_S),
       "STREAM_LEARNER_KAFKA__PREDICTIONS_TOP_K": "3"}
T0 = int(time.time() * 1000)


class Log:
    """What was sent, by offset (one partition): kind and id."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
        self.kind: dict[int, tuple[str, str]] = {}
        self.features: dict[str, list[float]] = {}

    def send(self, kind: str, event: dict, at_ms: int) -> None:
        key = str(event.get("id")).encode()
        meta = self.producer.send(self.topic, json.dumps(event).encode(), key=key,
                                  timestamp_ms=at_ms).get(10)
        self.kind[meta.offset] = (kind, str(event.get("id")))
        if "features" in event and event.get("label") is None:
            self.features[event["id"]] = event["features"]


def _features(i: int) -> list[float]:
    rng = np.random.default_rng(i)
    return [round(float(v), 4) for v in rng.normal(size=2)]


def _label(i: int) -> int:
    return int(sum(_features(i)) > 0)


def test_labels_join_exactly_once_across_kill_and_restart(broker, daemons, tmp_path: Path
                                                          ) -> None:
    bs = broker.bootstrap_servers
    topic = unique("later")
    ensure_topics(bs, {topic: 1, f"{topic}.dlq": 1, f"{topic}.predictions": 1})
    log = Log(bs, topic)
    ckpt, group = tmp_path / "ckpt", unique("g")
    for i in range(40):                      # inline: learned at once, as before
        log.send("inline", {"id": f"i{i}", "features": _features(1000 + i),
                            "label": _label(1000 + i)}, T0 + i)
    for i in range(30):                      # label later
        log.send("predict", {"id": f"f{i}", "features": _features(i), "label": None},
                 T0 + 100 + i)
    for i in range(3):
        log.send("join", {"id": f"f{i}", "label": _label(i)}, T0 + 1_000 + i)
    log.send("unknown_id", {"id": "ghost", "label": 1}, T0 + 1_010)
    log.send("duplicate_label", {"id": "f0", "label": 0}, T0 + 1_011)
    log.send("missing_features", {"label": 1}, T0 + 1_012)   # no id: no label event

    def start() -> DaemonProcess:
        d = DaemonProcess(bs, ckpt, topic, group, extra_env=ENV)
        daemons.append(d)
        return d

    d = start()
    d.wait_consumed(len(log.kind))
    assert d.terminate() == 0
    state = latest_checkpoint(ckpt)
    store = state["labels"]["store"]
    # Waiting: exactly f3..f29, each with the features it was predicted on.
    assert store["ids"] == [f"f{i}" for i in range(3, 30)]
    assert torch.equal(store["x"], torch.tensor([log.features[i] for i in store["ids"]],
                                                dtype=torch.float32))
    served = {json.loads(r.value)["id"]: json.loads(r.value)
              for r in read_topic(bs, f"{topic}.predictions", 30)}
    assert set(served) == {f"f{i}" for i in range(30)}
    assert store["pred"] == [served[i]["label"] for i in store["ids"]]

    # Labels for f3..f9 (and f5 twice), then kill -9 before any checkpoint: replayed.
    d = start()
    for i in range(3, 10):
        log.send("join", {"id": f"f{i}", "label": _label(i)}, T0 + 2_000 + i)
    log.send("duplicate_label", {"id": "f5", "label": 1}, T0 + 2_020)
    d.wait_consumed(8)
    d.kill9()

    d = start()
    for i in range(10, 20):
        log.send("join", {"id": f"f{i}", "label": _label(i)}, T0 + 3_000 + i)
    # After the window: f20 is expired (and with it f21..f29, swept by the clock).
    log.send("label_expired", {"id": "f20", "label": 1}, T0 + 100 + int(WINDOW_S * 1000) + 500)
    wait_for(lambda: d.metric('stream_learner_label_joins_total{outcome="label_expired"}') == 1,
             60, "the expired label")
    metrics = d.metrics()
    assert d.terminate() == 0

    state = latest_checkpoint(ckpt)
    c = state["counters"]
    n = len(log.kind)
    assert c["consumed"] == n == 40 + 30 + 3 + 3 + 8 + 10 + 1
    assert c["learned"] == 40 + 20                           # i0..i39, f0..f19: once each
    assert c["predicted"] == 30
    assert c["rejected"] == {"unknown_id": 1, "duplicate_label": 2, "label_expired": 1,
                             "missing_features": 1}
    # Every offset once in the model's lineage: the replayed ones were not learned twice.
    assert state["lineage"] == {"ranges": {topic: {0: [[0, n]]}}, "overlapping_events": 0}
    assert state["labels"]["store"]["ids"] == []
    # The restarted daemon joined f3..f19 (f3..f9 replayed after the kill), after the window
    # evicted f20..f29 as expired.
    assert metrics['stream_learner_label_joins_total{outcome="joined"}'] == 17
    assert metrics['stream_learner_label_evictions_total{reason="expired"}'] == 10
    assert metrics["stream_learner_pending_labels"] == 0
    assert metrics["stream_learner_label_delay_seconds_count"] == 17
    # Every rejected offset is in the DLQ with its reason (at least once: the kill
    # replays some); no other offset is.
    want = {o: k for o, (k, _) in log.kind.items() if k not in ("inline", "predict", "join")}
    dlq = read_topic(bs, f"{topic}.dlq", len(want))
    got: dict[int, set[str]] = {}
    for rec in dlq:
        h = dict(rec.headers)
        got.setdefault(int(h["source_offset"]), set()).add(h["reason"].decode())
    assert got == {o: {k} for o, k in want.items()}
    # Prediction records: keyed like the event, with the model's version.
    for rec in read_topic(bs, f"{topic}.predictions", 30):
        doc = json.loads(rec.value)
        assert rec.key == doc["id"].encode()
        assert set(doc) == {"id", "label", "probability", "model_events_learned",
                            "model_checkpoint", "top"}
        # Top 3 of the 2 classes known: both, best first, the first being the label.
        assert [t["label"] for t in doc["top"]] in ([0, 1], [1, 0])
        assert doc["top"][0] == {"label": doc["label"], "probability": doc["probability"]}
        assert doc["top"][0]["probability"] >= doc["top"][1]["probability"]
    assert CheckpointStore(ckpt).paths()
