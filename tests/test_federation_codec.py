"""Federation wire format, keys and the verifier: round trips, forgeries, replays, fuzzing."""

from __future__ import annotations

import json
import os
import random
import stat
from pathlib import Path

import pytest
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from stream_learner.federation import keys
from stream_learner.federation.codec import (FORMAT_VERSION, MalformedUpdate, Update, apply_delta,
                                             decode, encode, new_nonce)
from stream_learner.federation.verify import REASONS, Rejected, Verifier
from stream_learner.model import MLP

NOW = 1_700_000_000.0
PREFIX = b"SLFU" + bytes([FORMAT_VERSION])      # magic and format version of a valid update
HIDDEN = (64, 64)


def model_params(seed: int = 0, labels: int = 2) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    net = MLP(3, HIDDEN, labels)
    net.scaler.update(torch.randn(50, 3, dtype=torch.float64) * 1e5 + 3e5)   # salary-sized stats
    return {k: v.clone() for k, v in net.state_dict().items()}


def make(sender: str = "peer", version: int = 1, *, params: dict[str, torch.Tensor] | None = None,
         labels: list[int | str] | None = None, timestamp: float = NOW, base: int | None = None,
         n_features: int = 3, hidden: tuple[int, ...] = HIDDEN) -> Update:
    return Update(sender=sender, version=version, samples=32, labels=[0, 1] if labels is None else labels,
                  timestamp=timestamp, nonce=new_nonce(), n_features=n_features, hidden=hidden,
                  params=model_params() if params is None else params, base_version=base)


@pytest.fixture(scope="module")
def peer_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def verifier(peer_key: Ed25519PrivateKey) -> Verifier:
    return Verifier({"peer": peer_key.public_key()}, self_id="me", max_age_s=300.0,
                    n_features=3, hidden=HIDDEN, nonce_cache=4)


def rejected(result: object, reason: str) -> bool:
    return isinstance(result, Rejected) and result.reason == reason


# --- codec ------------------------------------------------------------------------------

def test_round_trip_f32_exact_with_metadata(peer_key: Ed25519PrivateKey) -> None:
    upd = make(labels=[7, 3])
    signed = decode(encode(upd, peer_key))
    got = signed.update
    assert signed.verify(peer_key.public_key())
    assert (got.sender, got.version, got.samples, got.timestamp, got.nonce) == \
        (upd.sender, upd.version, upd.samples, upd.timestamp, upd.nonce)
    assert (got.n_features, got.hidden, got.base_version) == (3, HIDDEN, None)
    assert list(got.params) == list(upd.params)
    for name, t in upd.params.items():
        assert got.params[name].dtype == t.dtype and torch.equal(got.params[name], t), name


def test_float16_halves_weights_but_keeps_float64_scaler_exact(peer_key: Ed25519PrivateKey) -> None:
    upd = make()
    full, half = encode(upd, peer_key), encode(upd, peer_key, float16=True)
    assert len(half) < 0.6 * len(full)
    got = decode(half).update.params
    for name, t in upd.params.items():
        assert got[name].dtype == t.dtype
        if t.dtype == torch.float32:
            torch.testing.assert_close(got[name], t, atol=1e-3, rtol=1e-3)
        else:     # scaler buffers (~1e5, m2 ~1e12) would overflow float16
            assert torch.equal(got[name], t), name
    assert got["scaler.m2"].max() > 1e10


def test_float16_falls_back_to_float32_beyond_its_range(peer_key: Ed25519PrivateKey) -> None:
    params = {"w": torch.tensor([1e6, 1.0])}
    got = decode(encode(make(params=params), peer_key, float16=True)).update.params["w"]
    assert torch.equal(got, params["w"])


def test_int_and_str_labels_keep_their_type(peer_key: Ed25519PrivateKey) -> None:
    for labels in ([0, 1, 2], ["0", "1"], [1, "1", "cat"]):
        assert decode(encode(make(labels=labels), peer_key)).update.labels == labels


def test_topk_keeps_largest_entries(peer_key: Ed25519PrivateKey) -> None:
    delta = {"w": torch.tensor([[0.1, -5.0], [2.0, 0.0]]), "s": torch.tensor([1.5], dtype=torch.float64)}
    upd = make(version=2, base=1, params=delta)
    got = decode(encode(upd, peer_key, topk=0.5)).update
    assert got.base_version == 1
    assert torch.equal(got.params["w"], torch.tensor([[0.0, -5.0], [2.0, 0.0]]))
    assert torch.equal(got.params["s"], delta["s"])             # float64 stays dense
    with pytest.raises(ValueError, match="base_version"):
        encode(make(params=delta), peer_key, topk=0.5)


def test_apply_delta_rejects_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="shape"):
        apply_delta({"w": torch.zeros(2)}, {"w": torch.zeros(3)})


def test_decode_fuzz_rejects_or_parses_exactly_and_never_verifies_a_change(peer_key: Ed25519PrivateKey) -> None:
    rng = random.Random(5)
    small = {"body.0.weight": torch.randn(4, 3), "scaler.mean": torch.randn(3, dtype=torch.float64),
             "n_classes_t": torch.tensor(2)}
    samples = [encode(make(params=small), peer_key),
               encode(make(params=small, base=0), peer_key, topk=0.3, float16=True)]
    cases: list[bytes] = []
    for data in samples:
        cases += [data[:n] for n in range(0, len(data), 3)]
        for _ in range(300):
            b = bytearray(data)
            for _ in range(rng.randint(1, 4)):
                b[rng.randrange(len(b))] = rng.randrange(256)
            cases.append(bytes(b))
        cases += [data + b"x", data[:9] + data[9:].replace(b'"f32"', b'"f99"')]
    cases += [os.urandom(rng.randint(0, 300)) for _ in range(300)]
    cases += [PREFIX + os.urandom(rng.randint(0, 300)) for _ in range(300)]
    cases += [PREFIX + b"\xff\xff\xff\xff" + bytes(100)]
    public = peer_key.public_key()
    decoded = 0
    for case in cases:
        try:
            signed = decode(case)
        except MalformedUpdate as exc:
            assert str(exc) and "\n" not in str(exc), repr(exc)   # a one-line reason
            continue
        decoded += 1
        # whatever parses covers exactly the bytes it came from, and its signature holds
        # only for an unchanged message (a flip that rewrote a byte with its own value)
        assert signed.signed + signed.signature == case
        assert signed.verify(public) == (case in samples)
    # bit flips in tensor bytes and in the signature still parse: the check saw those
    assert 20 < decoded < len(cases)


def test_decode_bounds() -> None:
    key = Ed25519PrivateKey.generate()
    with pytest.raises(MalformedUpdate, match="header"):
        decode(PREFIX + (2 << 20).to_bytes(4, "little") + bytes(200))
    with pytest.raises(MalformedUpdate, match="magic"):
        decode(b"NOPE" + bytes(100))
    many = {f"t{i}": torch.zeros(1) for i in range(65)}
    with pytest.raises(ValueError, match="at most 64"):
        encode(make(params=many), key)
    # hand-forged headers, validly signed: bounded before any allocation
    data = encode(make(params={"w": torch.zeros(2), "d": torch.zeros(1, dtype=torch.float64)}), key)
    for mutate, match in [(lambda t: t[0].update(shape=[99_999_999]), "exceeds"),
                          (lambda t: t[0].update(shape=[3]), "do not match"),
                          (lambda t: t[0].update(dtype="float16"), "unknown dtype"),
                          (lambda t: t[0].update(encoding="f64"), "invalid for"),
                          (lambda t: t[0].update(encoding="topk32"), "top-k"),
                          (lambda t: t[1].update(offset=0), "offset"),
                          (lambda t: t[1].update(length=800), "past the end"),
                          (lambda t: t.append(dict(t[0], name="x", offset=16)), "past the end"),
                          (lambda t: t.append(dict(t[0])), "duplicate")]:
        with pytest.raises(MalformedUpdate, match=match):
            decode(reframe(data, mutate, key))


def reframe(data: bytes, mutate: object, key: Ed25519PrivateKey) -> bytes:
    """Edit the tensor manifest of an encoded update and re-sign it."""
    hlen = int.from_bytes(data[5:9], "little")
    header = json.loads(data[9:9 + hlen])
    mutate(header["tensors"])  # type: ignore[operator]
    head = json.dumps(header).encode()
    body = data[:5] + len(head).to_bytes(4, "little") + head + data[9 + hlen:-64]
    return body + key.sign(body)


# --- verifier ---------------------------------------------------------------------------

def test_accepts_authentic_update(verifier: Verifier, peer_key: Ed25519PrivateKey) -> None:
    got = verifier.check(encode(make(), peer_key, float16=True), NOW)
    assert isinstance(got, Update) and got.sender == "peer"


def test_own_updates_are_ignored(peer_key: Ed25519PrivateKey) -> None:
    mine = Ed25519PrivateKey.generate()
    v = Verifier({"peer": peer_key.public_key()}, self_id="me", max_age_s=60, n_features=3, hidden=HIDDEN)
    assert v.check(encode(make(sender="me"), mine), NOW) is None


def test_tampering_anywhere_is_never_accepted(verifier: Verifier, peer_key: Ed25519PrivateKey) -> None:
    data = encode(make(params={"w": torch.randn(3)}), peer_key)   # small: test every byte
    for i in range(len(data)):
        b = bytearray(data)
        b[i] ^= 0x01
        got = verifier.check(bytes(b), NOW)
        assert isinstance(got, Rejected) and got.reason in ("bad_signature", "malformed", "unknown_peer"), i
    assert verifier.last_version("peer") is None      # rejects left no state behind


def test_unknown_peer_and_forged_sender(verifier: Verifier) -> None:
    outsider = Ed25519PrivateKey.generate()
    assert rejected(verifier.check(encode(make(sender="stranger"), outsider), NOW), "unknown_peer")
    assert rejected(verifier.check(encode(make(sender="peer"), outsider), NOW), "bad_signature")
    assert verifier.last_version("peer") is None


def test_replays(verifier: Verifier, peer_key: Ed25519PrivateKey) -> None:
    data = encode(make(version=5), peer_key)
    assert isinstance(verifier.check(data, NOW), Update)
    assert rejected(verifier.check(data, NOW), "replayed_nonce")
    assert rejected(verifier.check(encode(make(version=4), peer_key), NOW), "replayed_nonce")
    assert rejected(verifier.check(encode(make(version=5), peer_key), NOW), "replayed_nonce")
    assert isinstance(verifier.check(encode(make(version=6), peer_key), NOW), Update)


def test_rejected_update_does_not_burn_nonce(verifier: Verifier, peer_key: Ed25519PrivateKey) -> None:
    data = encode(make(version=1), peer_key)
    assert rejected(verifier.check(data, NOW + 1000), "stale")
    assert isinstance(verifier.check(data, NOW), Update)


def test_stale_and_future(verifier: Verifier, peer_key: Ed25519PrivateKey) -> None:
    assert rejected(verifier.check(encode(make(timestamp=NOW - 301), peer_key), NOW), "stale")
    assert rejected(verifier.check(encode(make(timestamp=NOW + 61), peer_key), NOW), "stale")
    assert isinstance(verifier.check(encode(make(timestamp=NOW + 30), peer_key), NOW), Update)


def test_incompatible(verifier: Verifier, peer_key: Ed25519PrivateKey) -> None:
    wide = {k: v for k, v in MLP(4, HIDDEN, 2).state_dict().items()}
    assert rejected(verifier.check(encode(make(params=wide, n_features=4), peer_key), NOW), "incompatible")
    assert rejected(verifier.check(encode(make(hidden=(32,)), peer_key), NOW), "incompatible")
    # header says 3 features but the first layer was built for 4: lying shapes
    assert rejected(verifier.check(encode(make(params=wide), peer_key), NOW), "incompatible")
    params = model_params()
    del params["head.bias"]
    assert rejected(verifier.check(encode(make(params=params), peer_key), NOW), "incompatible")
    too_many = [f"c{i}" for i in range(9)]        # head has 8 rows
    assert rejected(verifier.check(encode(make(labels=too_many), peer_key), NOW), "incompatible")


def test_non_finite(verifier: Verifier, peer_key: Ed25519PrivateKey) -> None:
    for bad in (float("nan"), float("inf")):
        params = model_params()
        params["body.2.weight"][3, 4] = bad
        assert rejected(verifier.check(encode(make(params=params), peer_key), NOW), "non_finite")


def test_topk_delta_reconstructed_and_missing_base(verifier: Verifier, peer_key: Ed25519PrivateKey) -> None:
    v1 = model_params(seed=1)
    assert isinstance(verifier.check(encode(make(version=1, params=v1), peer_key), NOW), Update)
    v2 = model_params(seed=2)
    delta = {k: v2[k] - v1[k] for k in v1}
    got = verifier.check(encode(make(version=2, base=1, params=delta), peer_key, topk=0.25), NOW)
    assert isinstance(got, Update) and got.base_version is None and got.version == 2
    for name, t in v1.items():
        if t.dtype == torch.float32:      # a quarter of each weight moved to v2, the rest stayed
            moved = ~torch.isclose(got.params[name], t)
            assert moved.sum() <= -(-t.numel() // 4)
            assert torch.allclose(got.params[name][moved], v2[name][moved])
        else:                             # scaler and counters are exact float64/int64 deltas
            assert torch.allclose(got.params[name], v2[name], rtol=1e-12), name
    # a delta on version 1 again (we hold 2 now), and on a version never seen
    for base in (1, 7):
        stale_base = encode(make(version=3, base=base, params=delta), peer_key, topk=0.1)
        assert rejected(verifier.check(stale_base, NOW), "missing_base")
    dense_delta = verifier.check(encode(make(version=3, base=2, params=delta), peer_key, float16=True), NOW)
    assert isinstance(dense_delta, Update) and dense_delta.base_version is None


def test_nonce_cache_is_bounded(verifier: Verifier, peer_key: Ed25519PrivateKey) -> None:
    for version in range(1, 10):
        assert isinstance(verifier.check(encode(make(version=version), peer_key), NOW), Update)
    assert len(verifier._nonces["peer"]) == 4


def test_reasons_are_the_metric_labels() -> None:
    assert REASONS == ("malformed", "bad_signature", "unknown_peer", "wrong_federation",
                       "replayed_nonce", "stale", "incompatible", "too_many_classes", "bad_label",
                       "non_finite", "oversize_norm", "missing_base")
    with pytest.raises(ValueError):
        Rejected("nope", "")


# --- keys -------------------------------------------------------------------------------

def test_generate_writes_0600_and_refuses_overwrite(tmp_path: Path) -> None:
    key_path, pub_path = keys.generate(tmp_path, "alpha")
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert key_path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    text = pub_path.read_text()
    assert text.endswith("\n") and text.count("\n") == 1
    assert keys.public_text(keys.load_private(key_path)) == text.strip()
    before = key_path.read_bytes()
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        keys.generate(tmp_path, "alpha")
    assert key_path.read_bytes() == before


def test_load_allowlist_from_dict_and_directory(tmp_path: Path, peer_key: Ed25519PrivateKey) -> None:
    keys.generate(tmp_path, "a")
    keys.generate(tmp_path, "b")
    other = tmp_path / "other.pub"
    other.write_text(keys.public_text(peer_key) + "\n")
    from_dir = keys.load_allowlist(None, tmp_path)
    assert sorted(from_dir) == ["a", "b", "other"]
    mixed = keys.load_allowlist({"peer": keys.public_text(peer_key), "c": str(other)}, None)
    assert keys.public_text(mixed["peer"]) == keys.public_text(mixed["c"]) == keys.public_text(peer_key)
    assert keys.load_allowlist(None, None) == {}
    with pytest.raises(ValueError, match="peer 'x'"):
        keys.load_allowlist({"x": "AAAA"}, None)
    (tmp_path / "bad.pub").write_text("nonsense\n")
    with pytest.raises(ValueError, match="peer 'bad'"):
        keys.load_allowlist(None, tmp_path)
