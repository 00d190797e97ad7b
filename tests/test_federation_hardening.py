"""Hostile peers (issue 13): signatures bound to one federation, replay state that survives
a restart, capped sample weights, bounded label maps, and an encoder that cannot stop the
daemon.  No Kafka: the verifier, the transport's state and the learner's merge directly."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client import CollectorRegistry

from stream_learner.checkpoint import CheckpointStore
from stream_learner.config import Settings
from stream_learner.federation import aggregate as A
from stream_learner.federation.codec import Update, encode, new_nonce
from stream_learner.federation.export import FederationMetrics
from stream_learner.federation.keys import generate, load_private
from stream_learner.federation.merge import MergeReport, PeerModel, Snapshot
from stream_learner.federation.transport import Federation
from stream_learner.federation.verify import Rejected, Verifier
from stream_learner.learner import Learner

FED = "site.federation"


def _learner(**fed: object) -> Learner:
    lrn = Learner(Settings(model={"device": "cpu"}, federation=fed))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(512, 4)).astype(np.float32)
    lrn.learn(x, ["p" if v > 0 else "n" for v in x[:, 0]])
    return lrn


def _state(lrn: Learner) -> dict[str, torch.Tensor]:
    assert lrn.model is not None
    return {k: v.detach().clone() for k, v in lrn.model.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _update(lrn: Learner, *, sender: str = "peer", version: int = 1, federation: str = FED,
            labels: list[int | str] | None = None, samples: int = 100) -> Update:
    assert lrn.model is not None
    return Update(sender=sender, version=version, samples=samples,
                  labels=list(lrn.labels.labels) if labels is None else labels,
                  timestamp=time.time(), nonce=new_nonce(), n_features=lrn.model.n_features,
                  hidden=tuple(lrn.model.hidden), params=_state(lrn), federation=federation)


def _deliver(fed: Federation, lrn: Learner, data: bytes) -> Update | Rejected | None:
    """What the daemon does with a message: verify, and merge only what is verified."""
    got = fed.verifier.check(data, time.time())
    if isinstance(got, Update):
        lrn.federated.merge([PeerModel(got.sender, got.params, list(got.labels), got.samples, 0.0)])
    return got


@pytest.fixture
def site(tmp_path: Path) -> tuple[Settings, Ed25519PrivateKey]:
    """Our key and one allowlisted peer's; returns settings and the peer's private key."""
    keys, peers = tmp_path / "keys", tmp_path / "peers"
    generate(keys, "me")
    generate(keys, "peer")
    peers.mkdir()
    (keys / "peer.pub").rename(peers / "peer.pub")
    settings = Settings(model={"device": "cpu"}, kafka={"topic": "site"},
                        federation={"private_key_file": str(keys / "me.key"),
                                    "peers_dir": str(peers)})
    return settings, load_private(keys / "peer.key")


def _federation(settings: Settings) -> Federation:
    return Federation(settings, FederationMetrics(CollectorRegistry(), "stream_learner_"))


# --- 1. a signature is bound to its federation -----------------------------------------

def test_federation_id_defaults_to_the_topic_and_can_be_configured(site) -> None:
    settings, _ = site
    assert _federation(settings).federation_id == FED
    named = settings.model_copy(update={"federation": settings.federation.model_copy(
        update={"federation_id": "prod-eu"})})
    assert _federation(named).federation_id == "prod-eu"


def test_an_update_replayed_from_another_federation_is_rejected(site) -> None:
    settings, peer_key = site
    lrn = _learner()
    before = _state(lrn)
    fed = _federation(settings)
    elsewhere = encode(_update(lrn, federation="staging.federation"), peer_key)
    got = _deliver(fed, lrn, elsewhere)
    assert isinstance(got, Rejected) and got.reason == "wrong_federation", got
    assert _same(_state(lrn), before)
    # The id is under the signature: rewriting it in the header breaks the signature.
    forged = elsewhere.replace(b'"staging.federation"', b'"site.federation"   ')
    got = _deliver(fed, lrn, forged)
    assert isinstance(got, Rejected) and got.reason == "bad_signature", got
    assert _same(_state(lrn), before)
    assert isinstance(_deliver(fed, lrn, encode(_update(lrn), peer_key)), Update)


# --- 2. the peers' versions survive our restart ----------------------------------------

def test_an_update_resent_after_our_restart_is_a_replay(site, tmp_path: Path) -> None:
    settings, peer_key = site
    lrn = _learner()
    data = encode(_update(lrn, version=time.time_ns() // 1000), peer_key)
    fed = _federation(settings)
    assert isinstance(_deliver(fed, lrn, data), Update)
    state = fed.state_dict()
    assert state == {"peer_versions": {"peer": fed.verifier.last_version("peer")}}
    # Through the real checkpoint store (torch.load with weights_only=True): plain data.
    store = CheckpointStore(tmp_path / "ckpt")
    store.save({"federation": state})
    loaded = store.load_latest()
    assert loaded is not None and loaded["federation"] == state

    restarted = _federation(settings)
    restarted.load_state_dict(loaded["federation"])
    before = _state(lrn)
    got = _deliver(restarted, lrn, data)
    assert isinstance(got, Rejected) and got.reason == "replayed_nonce", got
    assert _same(_state(lrn), before)


def test_unreadable_federation_state_is_skipped_with_one_line(site, caplog) -> None:
    settings, _ = site
    fed = _federation(settings)
    with caplog.at_level(logging.WARNING, logger="stream_learner.federation.transport"):
        fed.load_state_dict({"peer_versions": {"peer": 7, "x": "nine", "y": -1, "z": True}})
        fed.load_state_dict(None)                 # a checkpoint from before this state
    assert fed.verifier.last_version("peer") == 7
    assert fed.state_dict() == {"peer_versions": {"peer": 7}}
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["federation state in the checkpoint: 3 unreadable peer version entries "
                     "ignored"], lines


# --- 3. a claimed sample count has a ceiling -------------------------------------------

def test_a_huge_sample_claim_cannot_dominate_fedavg() -> None:
    honest = [(torch.tensor([1.0, 1.0]), 1000), (torch.tensor([3.0, 3.0]), 1000)]
    attacker = (torch.tensor([1000.0, -1000.0]), 10**12)
    got = A.aggregate_results("fedavg", [*honest, attacker], max_samples=1000)
    # capped at 1000 each: the attacker weighs a third, as much as each honest peer
    assert torch.allclose(got, torch.tensor([1004.0 / 3, -996.0 / 3]))
    assert A.sample_weight(10**12, 1000) == 1000.0
    assert A.sample_weight(0, 1000) == 1.0
    for nonsense in (-1, 2.5, float("nan"), True, "9", None):
        assert A.sample_weight(nonsense, 1000) == 0.0


def test_a_negative_or_fractional_sample_claim_is_malformed(site) -> None:
    """Nonsense counts never reach the weighting: the codec refuses them, even signed."""
    settings, peer_key = site
    lrn = _learner()
    fed = _federation(settings)
    data = encode(_update(lrn, samples=100), peer_key)
    hlen = int.from_bytes(data[5:9], "little")
    for bad in (b"-1", b"2.5", b"1e12", b"true"):
        head = data[9:9 + hlen].replace(b'"samples":100', b'"samples":' + bad)
        body = data[:5] + len(head).to_bytes(4, "little") + head + data[9 + hlen:-64]
        got = fed.verifier.check(body + peer_key.sign(body), time.time())
        assert isinstance(got, Rejected) and got.reason == "malformed", (bad, got)


def test_merge_caps_the_peer_sample_weight() -> None:
    lrn = _learner(aggregator="fedavg", max_samples=100, mix=1.0, proximal_mu=0.0)
    local = _state(lrn)
    gen = torch.Generator().manual_seed(1)
    # only the body moves: the head's spare rows always stay ours (align_head)
    far = {k: v + 0.05 * torch.randn(v.shape, generator=gen) if k.startswith("body.")
           else v.clone() for k, v in local.items()}
    labels = list(lrn.labels.labels)
    report = lrn.federated.merge([PeerModel("twin", {k: v.clone() for k, v in local.items()},
                                            labels, 100, 0.0),
                                  PeerModel("liar", far, labels, 10**12, 0.0)])
    assert report.merged and report.participants == 2
    moved = torch.cat([(far[k] - local[k]).flatten() for k in local if k.startswith("body.")])
    # us (512 seen, capped to 100), the twin (100) and the liar (capped to 100): a third
    assert report.distance == pytest.approx(float(moved.norm()) / 3, rel=1e-4)


# --- 4. a peer's label map is bounded like an event's ----------------------------------

def test_peer_labels_beyond_max_classes_or_too_long_are_rejected(site) -> None:
    settings, peer_key = site
    settings = settings.model_copy(update={"model": settings.model.model_copy(
        update={"max_classes": 3, "max_label_length": 8})})
    lrn = _learner()
    fed = _federation(settings)
    before = _state(lrn)
    version = 1
    for labels, reason in ((["p", "n", "a", "b"], "too_many_classes"),
                           (["p", "n" * 9], "bad_label")):
        got = _deliver(fed, lrn, encode(_update(lrn, labels=labels, version=version), peer_key))
        assert isinstance(got, Rejected) and got.reason == reason, got
        assert _same(_state(lrn), before)
        version += 1
    # at the bounds exactly: accepted
    got = _deliver(fed, lrn, encode(_update(lrn, labels=["p", "n" * 8, 3], version=version),
                                    peer_key))
    assert isinstance(got, Update), got


# --- 5. our own update failing to encode skips the round, not the daemon ---------------

def test_an_update_that_cannot_be_encoded_skips_the_round(site, caplog) -> None:
    settings, _ = site
    fed = _federation(settings)
    lrn = _learner()
    # four 300 KB labels: a header over the codec's 1 MiB bound, so encode raises
    snap = Snapshot(_state(lrn), ["x" * 300_000 + str(i) for i in range(4)], 10,
                    lrn.model.n_features, tuple(lrn.model.hidden))  # type: ignore[union-attr]
    with caplog.at_level(logging.ERROR, logger="stream_learner.federation.transport"):
        for _ in range(3):
            fed.in_flight = True
            fed.finish_round(snap, MergeReport())       # no producer: never reached
            assert not fed.in_flight
    assert fed.round == 3
    assert fed.metrics.publish_errors._value.get() == 3
    assert fed.metrics.updates_sent._value.get() == 0
    assert len(caplog.records) == 1, [r.getMessage() for r in caplog.records]
    assert "cannot encode our update (ValueError: header is" in caplog.records[0].getMessage()


def test_the_daemon_checkpoint_carries_the_peer_versions(site, tmp_path: Path) -> None:
    """Daemon.state_dict() -> store -> a new Daemon's restore(): the replay survives."""
    from stream_learner.daemon import Daemon
    settings, peer_key = site
    settings = settings.model_copy(update={
        "kafka": settings.kafka.model_copy(update={"bootstrap_servers": "127.0.0.1:1"}),
        "model": settings.model.model_copy(update={"worker": "inline"}),
        "checkpoint": settings.checkpoint.model_copy(update={"dir": tmp_path / "ckpt"})})
    lrn = _learner()
    data = encode(_update(lrn, version=time.time_ns() // 1000), peer_key)
    first = Daemon(settings)
    try:
        assert first.federation is not None
        assert isinstance(first.federation.verifier.check(data, time.time()), Update)
        first.store.save(first.state_dict())
    finally:
        first.learner.close()
    second = Daemon(settings)
    try:
        second.restore()
        assert second.federation is not None
        got = second.federation.verifier.check(data, time.time())
        assert isinstance(got, Rejected) and got.reason == "replayed_nonce", got
    finally:
        second.learner.close()
