"""Drift on a real broker: detections and every adaptation policy show on /metrics, and
each policy can be switched off from config."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from kafka import KafkaProducer

from stream_learner.synth import encode_event, ensure_topics

from conftest import DaemonProcess, unique, wait_for

A_EVENTS, B_EVENTS, A2_EVENTS = 6000, 3000, 3000
TOTAL = A_EVENTS + B_EVENTS + A2_EVENTS


def _produce(bs: str, topic: str) -> None:
    """Concept A, then B (labels flipped: an abrupt drift), then A again."""
    rng = np.random.default_rng(4)
    producer = KafkaProducer(bootstrap_servers=bs, linger_ms=5)
    i = 0
    for flipped, n in ((False, A_EVENTS), (True, B_EVENTS), (False, A2_EVENTS)):
        x = rng.normal(size=(n, 4))
        y = (x[:, 0] + 0.5 * x[:, 1] > 0) ^ flipped
        for row, label in zip(x.tolist(), y.tolist()):
            producer.send(topic, encode_event(row, "yes" if label else "no", event_id=str(i)))
            i += 1
    producer.flush()
    producer.close()


def _run(bs: str, topic: str, tmp: Path, daemons: list, env: dict[str, str]) -> dict[str, float]:
    tmp.mkdir(parents=True)
    d = DaemonProcess(bs, tmp / "ckpt", topic, unique("g"), extra_env={
        "STREAM_LEARNER_STRATEGY__NAME": "continual",      # so consolidation can act
        "STREAM_LEARNER_BATCH__SIZE": "128",
        "STREAM_LEARNER_MODEL__STEP_SIZE": "64",
        "STREAM_LEARNER_MODEL__MAX_STEP_SIZE": "64",
        "STREAM_LEARNER_PROBES__PER_CLASS": "0",
        "STREAM_LEARNER_DRIFT__WARMUP_EVENTS": "1000",
        **env})
    daemons.append(d)
    d.wait_consumed(TOTAL, timeout=120)
    wait_for(lambda: d.metric("stream_learner_events_learned_total") >= TOTAL, 30, "learned")
    m = d.metrics()
    assert d.terminate() == 0
    return m


def _adapt(m: dict[str, float], policy: str) -> float:
    return m.get(f'stream_learner_drift_adaptations_total{{policy="{policy}"}}', -1.0)


def test_drift_metrics_and_policies_on_and_off(broker, daemons, tmp_path: Path) -> None:
    bs = broker.bootstrap_servers
    topic = unique("drift")
    ensure_topics(bs, {topic: 1, f"{topic}.dlq": 1, f"{topic}.predictions": 1})
    _produce(bs, topic)

    on = _run(bs, topic, tmp_path / "on", daemons, {})
    detected = on['stream_learner_drift_detected_total{detector="adwin",signal="error"}']
    assert detected >= 2                                  # A -> B and B -> A
    for policy in ("boost", "consolidate", "pool"):
        assert _adapt(on, policy) >= 1, (policy, on)
    assert on["stream_learner_concept_reuse_total"] >= 1  # A was recalled
    assert on["stream_learner_concepts_known"] >= 2
    assert on["stream_learner_concept_id"] == 0
    assert on["stream_learner_last_drift_timestamp_seconds"] > 0
    assert 0 <= on["stream_learner_accuracy_since_drift"] <= 1
    assert on["stream_learner_drift_window_events"] > 0
    for name in ("stream_learner_input_drift_detected_total", "stream_learner_plasticity_lr_factor",
                 "stream_learner_accuracy_before_drift"):
        assert name in on, name

    off = _run(bs, topic, tmp_path / "off", daemons, {
        "STREAM_LEARNER_ADAPT__BOOST": "false", "STREAM_LEARNER_ADAPT__POOL": "false",
        "STREAM_LEARNER_ADAPT__CONSOLIDATE": "false"})
    assert off['stream_learner_drift_detected_total{detector="adwin",signal="error"}'] >= 1
    for policy in ("boost", "consolidate", "pool"):
        assert _adapt(off, policy) == 0, (policy, off)
    assert off["stream_learner_concept_reuse_total"] == 0
    assert off["stream_learner_concepts_known"] == 0
    # What the policies bought on this stream: prequential accuracy over all events.
    print(f"prequential accuracy with adaptation {on['stream_learner_prequential_accuracy']:.3f}, "
          f"without {off['stream_learner_prequential_accuracy']:.3f}")
    assert on["stream_learner_prequential_accuracy"] > off["stream_learner_prequential_accuracy"]
