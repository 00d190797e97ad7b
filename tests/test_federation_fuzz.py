"""Property-based fuzzing of the federation codec and verifier (issue 13, item 6).

Any mutation of a valid signed update (bit flips, truncation, inserted bytes, header
fields rewritten) is either rejected with one of the known reasons or verified identical
to the original; nothing raises, and the model is untouched unless a verified update is
merged.  (A message claiming our own sender id is dropped unverified, as our echo.)  A header rewritten *and re-signed* (a compromised or buggy peer) may be accepted,
but only within the bounds the verifier promises.
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from stream_learner.config import Settings
from stream_learner.federation.codec import (SIGNATURE_BYTES, Update, encode, new_nonce,
                                             peek_sender)
from stream_learner.federation.merge import PeerModel
from stream_learner.federation.verify import REASONS, Rejected, Verifier
from stream_learner.learner import Learner

FED = "fuzz.federation"
KEY = Ed25519PrivateKey.generate()
FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])


def _learner() -> Learner:
    lrn = Learner(Settings(model={"device": "cpu", "hidden": (8,)}))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 3)).astype(np.float32)
    lrn.learn(x, ["p" if v > 0 else "n" for v in x[:, 0]])
    return lrn


LEARNER = _learner()
assert LEARNER.model is not None
ORIGINAL = Update(sender="peer", version=5, samples=64, labels=list(LEARNER.labels.labels),
                  timestamp=time.time(), nonce=new_nonce(), n_features=3, hidden=(8,),
                  params={k: v.detach().clone() for k, v in LEARNER.model.state_dict().items()},
                  federation=FED)
VALID = encode(ORIGINAL, KEY, float16=True)
HLEN = int.from_bytes(VALID[5:9], "little")
HEADER: dict[str, Any] = json.loads(VALID[9:9 + HLEN])


def _verifier() -> Verifier:
    return Verifier({"peer": KEY.public_key()}, self_id="me", max_age_s=3600.0, n_features=3,
                    hidden=(8,), federation_id=FED, max_classes=4, max_label_length=16)


def _model() -> dict[str, torch.Tensor]:
    assert LEARNER.model is not None
    return {k: v.detach().clone() for k, v in LEARNER.model.state_dict().items()}


def _deliver(data: bytes) -> Update | Rejected | None:
    """The daemon's path for one message: verify; merge only what verified."""
    got = _verifier().check(data, time.time())
    assert got is None or isinstance(got, (Update, Rejected)), got
    if isinstance(got, Rejected):
        assert got.reason in REASONS and got.detail and "\n" not in got.detail, got
    return got


def _identical(got: Update) -> bool:
    o = ORIGINAL
    same_fields = (got.sender, got.version, got.samples, got.labels, got.timestamp, got.nonce,
                   got.n_features, got.hidden, got.base_version, got.federation) == \
                  (o.sender, o.version, o.samples, o.labels, o.timestamp, o.nonce,
                   o.n_features, o.hidden, o.base_version, o.federation)
    # float16 on the wire: compare with what the original decodes to
    ref = _verifier().check(VALID, time.time())
    assert isinstance(ref, Update)
    return same_fields and ref.params.keys() == got.params.keys() and all(
        torch.equal(ref.params[k], got.params[k]) for k in ref.params)


def _mutated_is_refused_and_harmless(data: bytes) -> None:
    before = _model()
    got = _deliver(data)
    if data == VALID:
        assert isinstance(got, Update) and _identical(got)
    elif got is None:       # dropped unverified as our own echo: only if it claims our id
        assert peek_sender(data) == "me"
    else:
        assert isinstance(got, Rejected), f"a changed message verified: {got}"
    after = _model()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_the_unmutated_update_verifies() -> None:
    got = _deliver(VALID)
    assert isinstance(got, Update) and _identical(got)


@FUZZ
@given(st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 7)),
                min_size=1, max_size=8))
def test_bit_flips(flips: list[tuple[int, int]]) -> None:
    b = bytearray(VALID)
    for i, bit in flips:
        b[i] ^= 1 << bit
    _mutated_is_refused_and_harmless(bytes(b))


@FUZZ
@given(st.integers(0, len(VALID) - 1))
def test_truncation(n: int) -> None:
    _mutated_is_refused_and_harmless(VALID[:n])


@FUZZ
@given(st.integers(0, len(VALID)), st.binary(min_size=1, max_size=64))
def test_inserted_bytes(at: int, extra: bytes) -> None:
    _mutated_is_refused_and_harmless(VALID[:at] + extra + VALID[at:])


JSON = st.recursive(st.none() | st.booleans() | st.integers() |
                    st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40),
                    lambda kids: st.lists(kids, max_size=6) |
                    st.dictionaries(st.text(max_size=8), kids, max_size=4), max_leaves=12)
FIELDS = sorted(HEADER)
VALUES = JSON | st.lists(st.text(max_size=40) | st.integers(-5, 5), max_size=8) | \
    st.integers(-2**70, 2**70) | st.sampled_from(["", FED, "other", "peer", "me"])


def _reframe(header: dict[str, Any], sign: bool) -> bytes:
    head = json.dumps(header).encode()
    body = VALID[:5] + len(head).to_bytes(4, "little") + head + VALID[9 + HLEN:-SIGNATURE_BYTES]
    return body + (KEY.sign(body) if sign else VALID[-SIGNATURE_BYTES:])


@FUZZ
@given(st.sampled_from(FIELDS), VALUES)
def test_header_field_changes_without_the_key(field: str, value: Any) -> None:
    header = dict(HEADER, **{field: value})
    _mutated_is_refused_and_harmless(_reframe(header, sign=False))


@FUZZ
@example({"samples": 10**12}, 0, "", None)                      # accepted (weight capped)
@example({"labels": ["p", "n", "a", "b", "c"]}, 0, "", None)   # too_many_classes
@example({"labels": ["p", "n" * 17]}, 0, "", None)             # bad_label
@example({"federation": "other.federation"}, 0, "", None)     # wrong_federation
@example({"version": 2**64}, 0, "", None)                       # malformed
@example({"hidden": [9]}, 0, "", None)                          # incompatible
@given(st.dictionaries(st.sampled_from(FIELDS), VALUES, min_size=1, max_size=3),
       st.integers(0, len(HEADER["tensors"]) - 1), st.sampled_from(["", "shape", "dtype",
                                                                  "encoding", "length", "name"]),
       VALUES)
def test_header_field_changes_signed_by_the_peer(changes: dict[str, Any], t: int, tfield: str,
                                                 tvalue: Any) -> None:
    """A compromised peer signs whatever it likes: still never an exception, and what is
    accepted stays inside the verifier's bounds."""
    header = json.loads(json.dumps(HEADER))
    header.update(changes)
    if tfield and isinstance(header.get("tensors"), list) and t < len(header["tensors"]) \
            and isinstance(header["tensors"][t], dict):
        header["tensors"][t][tfield] = tvalue
    before = _model()
    got = _deliver(_reframe(header, sign=True))
    if isinstance(got, Update):
        assert got.federation == FED and got.sender == "peer"
        assert len(got.labels) <= 4
        assert all(not isinstance(x, str) or len(x) <= 16 for x in got.labels)
        assert all(bool(torch.isfinite(v).all()) for v in got.params.values()
                   if v.is_floating_point())
        report = LEARNER.federated.merge([PeerModel(got.sender, got.params, list(got.labels),
                                                    got.samples, 0.0)])
        assert set(report.rejected) <= set(REASONS)
        LEARNER.model.load_state_dict(before)          # type: ignore[union-attr]
        LEARNER.set_proximal_anchor(None, 0.0)  # type: ignore[arg-type]
    else:
        after = _model()
        assert all(torch.equal(before[k], after[k]) for k in before)
