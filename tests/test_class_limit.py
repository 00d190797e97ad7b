"""model.max_classes: a label beyond it is refused (never a new head row) and the event
is dead-lettered as too_many_classes by a real daemon on a real broker."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from kafka import KafkaProducer

from stream_learner.config import Settings
from stream_learner.labels import LabelMap
from stream_learner.learner import Learner
from stream_learner.learner_host import InlineLearner, Learned
from stream_learner.benchmarks.processes import wait_for
from stream_learner.synth import ensure_topics

from conftest import DaemonProcess, latest_checkpoint, read_topic, unique


def _settings(max_classes: int) -> Settings:
    return Settings(model={"max_classes": max_classes, "hidden": (8,), "device": "cpu"},
                    probes={"per_class": 0})   # no held-out probes: y is every admitted event


def test_the_host_refuses_labels_beyond_max_classes_and_learns_the_rest() -> None:
    host = InlineLearner(_settings(3))
    x = np.arange(24, dtype=np.float32).reshape(8, 3)
    labels = ["a", "b", "c", "d", "a", "e", "c", "d"]
    host.submit_learn(x, labels, ctx="batch")
    [(ctx, result)] = host.completed()
    assert ctx == "batch" and isinstance(result, Learned)
    assert result.refused.tolist() == [3, 5, 7]
    assert result.y.tolist() == [0, 1, 2, 0, 2]           # a, b, c, a, c
    assert host.info.labels == ["a", "b", "c"]
    # A batch of nothing but refused labels is answered, not a crash.
    host.submit_learn(x[:2], ["f", "g"], ctx="all-refused")
    [(_, result)] = host.completed()
    assert result.refused.tolist() == [0, 1] and result.y.size == 0


def test_learner_learn_raises_a_clear_error_beyond_max_classes() -> None:
    lrn = Learner(_settings(2))
    x = np.zeros((3, 2), dtype=np.float32)
    with pytest.raises(ValueError, match="beyond model.max_classes 2"):
        lrn.learn(x, [0, 1, 2])


def test_a_checkpoint_with_more_classes_than_a_lowered_cap_keeps_them() -> None:
    big = LabelMap(["a", "b", "c"])
    small = LabelMap(max_size=2)
    small.load_state_dict(big.state_dict())
    assert small.labels == ["a", "b", "c"] and small.encode(["c", "z"]) == [2, -1]


def test_the_daemon_dead_letters_labels_beyond_max_classes(broker, daemons,
                                                           tmp_path: Path) -> None:
    bs = broker.bootstrap_servers
    topic = unique("classes")
    ensure_topics(bs, {topic: 1, f"{topic}.dlq": 1, f"{topic}.predictions": 1})
    rng = np.random.default_rng(0)
    sent: dict[str, str] = {}
    producer = KafkaProducer(bootstrap_servers=bs)
    for i in range(600):
        # Classes 0-2 from the start; labels 3.. appear later and must all be refused.
        label = str(i % 3) if i < 300 else f"junk-{i}" if i % 2 else str(i % 3)
        event_id = f"e{i}"
        sent[event_id] = label
        value = {"id": event_id, "label": label, "features": rng.normal(size=4).tolist()}
        producer.send(topic, json.dumps(value).encode())
    producer.flush()
    producer.close()
    junk = {i for i, lab in sent.items() if lab.startswith("junk")}

    d = DaemonProcess(bs, tmp_path / "ckpt", topic, unique("g"),
                      extra_env={"STREAM_LEARNER_MODEL__MAX_CLASSES": "3"})
    daemons.append(d)
    d.wait_consumed(len(sent))
    # Consumed counts at poll time; refusals are counted when the worker's learn result
    # comes back, a moment later on a loaded machine.
    refused = 'stream_learner_events_rejected_total{reason="too_many_classes"}'
    wait_for(lambda: d.metric(refused) >= len(junk), 60, f"{len(junk)} refusals")
    metrics = d.metrics()
    assert metrics[refused] == len(junk)
    assert metrics["stream_learner_model_classes"] == 3
    assert d.terminate() == 0

    dlq = read_topic(bs, f"{topic}.dlq", len(junk))
    ids = Counter(json.loads(r.value)["id"] for r in dlq)
    assert set(ids) == junk and set(ids.values()) == {1}
    assert {dict(r.headers)["reason"] for r in dlq} == {b"too_many_classes"}
    state = latest_checkpoint(tmp_path / "ckpt")
    counters = state["counters"]
    assert counters["rejected"] == {"too_many_classes": len(junk)}
    assert counters["learned"] + counters["held_out"] == len(sent) - len(junk)
    assert state["learner"]["labels"]["labels"] == ["0", "1", "2"]
