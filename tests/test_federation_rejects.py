"""Every rejection reason, from crafted updates on the real federation topic: counted by
reason on /metrics, and the model's predictions unchanged.  Then a peer that goes away
and comes back, and a daemon without keys."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from kafka import KafkaProducer

from stream_learner.federation.codec import Update, encode
from stream_learner.federation.keys import generate, load_private
from stream_learner.model import MLP
from stream_learner.synth import encode_event, ensure_topics

from conftest import DaemonProcess, read_topic, unique, wait_for

DIM = 4


def _labeled(bs: str, topic: str, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    producer = KafkaProducer(bootstrap_servers=bs, linger_ms=5)
    for i, row in enumerate(rng.normal(size=(n, DIM)).tolist()):
        producer.send(topic, encode_event(row, "yes" if row[0] > 0 else "no", event_id=str(i)))
    producer.flush()
    producer.close()


PROBES = np.random.default_rng(99).normal(size=(20, DIM)).tolist()


def _predict(bs: str, topic: str, round_: int) -> list[float]:
    """Publish the probe events unlabeled; the daemon's probabilities for them."""
    producer = KafkaProducer(bootstrap_servers=bs)
    for i, row in enumerate(PROBES):
        producer.send(topic, json.dumps({"features": row, "label": None,
                                         "id": f"probe-{round_}-{i}"}).encode())
    producer.flush()
    producer.close()
    want = {f"probe-{round_}-{i}" for i in range(len(PROBES))}
    got: dict[str, float] = {}
    deadline = time.monotonic() + 30
    while len(got) < len(want) and time.monotonic() < deadline:
        for rec in read_topic(bs, f"{topic}.predictions", 0, timeout=1.0):
            body = json.loads(rec.value)
            if body["id"] in want:
                got[body["id"]] = body["probability"] if body["label"] == "yes" \
                    else 1 - body["probability"]
    assert len(got) == len(want), f"{len(got)} of {len(want)} predictions"
    return [got[f"probe-{round_}-{i}"] for i in range(len(PROBES))]


def _update(federation: str, sender: str, *, labels: list | None = None, hidden=(64, 64), scale: float = 1.0, nan: bool = False,
            age_s: float = 0.0, version: int | None = None, base: int | None = None,
            nonce: bytes | None = None) -> Update:
    net = MLP(DIM, hidden, n_classes=2)
    state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    state["scaler.count"].fill_(100.0)
    state["scaler.m2"].fill_(100.0)
    for k in state:
        if k.startswith(("body.", "head.")):
            state[k] = state[k] * scale
    if nan:
        state["body.0.weight"][0, 0] = float("nan")
    return Update(sender=sender, version=version or time.time_ns() // 1000, samples=100,
                  labels=["yes", "no"] if labels is None else labels,
                  timestamp=time.time() - age_s, nonce=nonce or os.urandom(16), n_features=DIM,
                  hidden=tuple(hidden), params=state, base_version=base, federation=federation)


def _rejected(d: DaemonProcess) -> dict[str, float]:
    prefix = 'stream_learner_federation_updates_rejected_total{reason="'
    return {k[len(prefix):-2]: v for k, v in d.metrics().items() if k.startswith(prefix)}


def test_every_rejection_reason_is_counted_and_leaves_the_model_alone(
        broker, daemons, tmp_path: Path) -> None:
    bs = broker.bootstrap_servers
    topic, fed = unique("rej"), unique("fed")
    ensure_topics(bs, {topic: 1, f"{topic}.dlq": 1, f"{topic}.predictions": 1, fed: 1})
    keys, peers = tmp_path / "keys", tmp_path / "peers"
    for name in ("victim", "peer", "outsider"):
        generate(keys, name)
    peers.mkdir()
    (keys / "peer.pub").rename(peers / "peer.pub")
    _labeled(bs, topic, 3000, seed=1)
    d = DaemonProcess(bs, tmp_path / "ckpt", topic, unique("g"), extra_env={
        "STREAM_LEARNER_FEDERATION__PRIVATE_KEY_FILE": str(keys / "victim.key"),
        "STREAM_LEARNER_FEDERATION__PEERS_DIR": str(peers),
        "STREAM_LEARNER_FEDERATION__TOPIC": fed,
        "STREAM_LEARNER_FEDERATION__EVERY_SECONDS": "0.5",
        "STREAM_LEARNER_FEDERATION__MAX_AGE_SECONDS": "60",
        "STREAM_LEARNER_PROBES__PER_CLASS": "0"})
    daemons.append(d)
    d.wait_consumed(3000, timeout=90)
    before = _predict(bs, topic, 0)

    peer, outsider = load_private(keys / "peer.key"), load_private(keys / "outsider.key")
    producer = KafkaProducer(bootstrap_servers=bs, max_request_size=8 * 1024 * 1024)
    crafted = {
        "malformed": os.urandom(300),
        "bad_signature": encode(_update(fed, "peer"), outsider),         # forged: outsider's key
        "unknown_peer": encode(_update(fed, "outsider"), outsider),      # signed, not allowlisted
        "stale": encode(_update(fed, "peer", age_s=3600), peer),
        "incompatible": encode(_update(fed, "peer", hidden=(32,)), peer),
        "non_finite": encode(_update(fed, "peer", nan=True), peer),
        "oversize_norm": encode(_update(fed, "peer", scale=1e4), peer),  # finite, far away
        # authentic, but signed for another federation (a replay from its topic)
        "wrong_federation": encode(_update("elsewhere", "peer"), peer),
        "too_many_classes": encode(_update(fed, "peer", labels=[f"c{i}" for i in range(1001)]),
                                   peer),
        "bad_label": encode(_update(fed, "peer", labels=["yes", "n" * 300]), peer),
    }
    for data in crafted.values():
        producer.send(fed, data)
    producer.flush()
    wait_for(lambda: all(_rejected(d).get(r, 0) >= 1 for r in crafted), 30,
             f"every reason counted: {_rejected(d)}")
    counts = _rejected(d)
    assert all(counts[r] == 1 for r in crafted), counts
    time.sleep(1.5)                                  # rounds ran since: nothing merged
    assert _predict(bs, topic, 1) == before          # the model did not move
    assert d.metric("stream_learner_federation_peers") == 0

    # A valid update is merged (the model moves); its replay, an older version and a
    # top-k delta on a version we never saw are not.
    good = _update(fed, "peer")
    data = encode(good, peer)
    older = encode(_update(fed, "peer", version=good.version - 1), peer)
    delta = encode(_update(fed, "peer", version=good.version + 5, base=good.version + 1), peer,
                   topk=0.1)
    for message in (data, data, older, delta):
        producer.send(fed, message)
    producer.flush()
    producer.close()
    wait_for(lambda: _rejected(d).get("replayed_nonce", 0) >= 2 and
             _rejected(d).get("missing_base", 0) >= 1, 30, f"replays counted: {_rejected(d)}")
    wait_for(lambda: d.metric("stream_learner_federation_last_merge_timestamp_seconds", 0) > 0,
             10, "the valid update merged")
    # Verified: the oversize one (refused later, at the merge) and the good one.
    assert d.metric("stream_learner_federation_updates_received_total") == 2
    assert _predict(bs, topic, 2) != before
    assert d.terminate() == 0


def test_without_keys_federation_is_off_and_says_so_once(broker, daemons,
                                                         tmp_path: Path) -> None:
    bs = broker.bootstrap_servers
    topic = unique("nofed")
    ensure_topics(bs, {topic: 1, f"{topic}.dlq": 1, f"{topic}.predictions": 1})
    _labeled(bs, topic, 500, seed=2)
    d = DaemonProcess(bs, tmp_path / "ckpt", topic, unique("g"))
    daemons.append(d)
    d.wait_consumed(500, timeout=90)
    m = d.metrics()
    assert m["stream_learner_federation_rounds_total"] == 0
    assert m["stream_learner_federation_peers"] == 0
    assert d.terminate() == 0
    log = d.log_path.read_text()
    assert log.count("federation off") == 1, log
    assert "Traceback" not in log


def test_a_bad_key_file_stops_start_up_with_one_line(broker, tmp_path: Path) -> None:
    import subprocess
    import sys

    (tmp_path / "bad.key").write_text("not a key\n")
    (tmp_path / "peers").mkdir()
    generate(tmp_path / "peers", "other")
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_LEARNER_")}
    env.update({"STREAM_LEARNER_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap_servers,
                "STREAM_LEARNER_FEDERATION__PRIVATE_KEY_FILE": str(tmp_path / "bad.key"),
                "STREAM_LEARNER_FEDERATION__PEERS_DIR": str(tmp_path / "peers"),
                "STREAM_LEARNER_METRICS__PORT": "0"})
    proc = subprocess.run([sys.executable, "-m", "stream_learner", "run"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert "bad.key" in proc.stderr, proc.stderr
