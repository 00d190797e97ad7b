"""A new label mid-stream grows the head without resetting what was learned."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
from kafka import KafkaProducer

from stream_learner.config import Settings
from stream_learner.learner import Learner
from stream_learner.synth import encode_event, ensure_topics

from conftest import DaemonProcess, latest_checkpoint, unique, wait_for


def _point(rng: random.Random, label: str) -> list[float]:
    centre = {"cat": (-2.0, 0.0), "dog": (2.0, 0.0), "owl": (0.0, 3.0)}[label]
    return [centre[0] + rng.gauss(0, 0.5), centre[1] + rng.gauss(0, 0.5)]


def _send(bs: str, topic: str, labels: list[str], rng: random.Random) -> None:
    producer = KafkaProducer(bootstrap_servers=bs, linger_ms=5)
    for i, label in enumerate(labels):
        producer.send(topic, encode_event(_point(rng, label), label, event_id=str(i)))
    producer.flush()
    producer.close()


def test_new_label_grows_head_and_keeps_old_classes(broker, daemons, tmp_path: Path) -> None:
    bs = broker.bootstrap_servers
    topic = unique("classes")
    ensure_topics(bs, {topic: 1, f"{topic}.dlq": 1, f"{topic}.predictions": 1})
    rng = random.Random(3)
    ckpt = tmp_path / "ckpt"
    d = DaemonProcess(bs, ckpt, topic, unique("g"),
                      extra_env={"STREAM_LEARNER_CHECKPOINT__EVERY_SECONDS": "0.5"})
    daemons.append(d)

    _send(bs, topic, [rng.choice(["cat", "dog"]) for _ in range(3000)], rng)
    d.wait_consumed(3000)
    wait_for(lambda: latest_checkpoint(ckpt)["counters"]["consumed"] == 3000
             if list(ckpt.glob("ckpt-*")) else False, 30, "checkpoint after phase 1")
    old_state = latest_checkpoint(ckpt)
    assert d.metric("stream_learner_model_classes") == 2

    _send(bs, topic, [rng.choice(["cat", "dog", "owl"]) for _ in range(3000)], rng)
    d.wait_consumed(6000)
    assert d.metric("stream_learner_model_classes") == 3
    assert d.terminate() == 0
    new_state = latest_checkpoint(ckpt)
    labels = new_state["learner"]["labels"]["labels"]
    assert sorted(labels[:2]) == ["cat", "dog"] and labels[2] == "owl"

    settings = Settings(model={"device": "cpu"})
    probe = np.array([_point(rng, lab) for lab in ["cat", "dog"] * 200], dtype=np.float32)
    truth = ["cat", "dog"] * 200
    for state, expect_classes in ((old_state, 2), (new_state, 3)):
        learner = Learner(settings)
        learner.load_state_dict(state["learner"])
        assert learner.model is not None and learner.model.n_classes == expect_classes
        predicted, _ = learner.predict(probe)
        accuracy = np.mean([p == t for p, t in zip(predicted, truth)])
        assert accuracy > 0.95, f"old-class accuracy {accuracy} with {expect_classes} classes"
    owl = np.array([_point(rng, "owl") for _ in range(200)], dtype=np.float32)
    predicted, _ = learner.predict(owl)
    assert np.mean([p == "owl" for p in predicted]) > 0.9
