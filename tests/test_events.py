"""Tests for stream_learner.events: the strict decoder and its rejection reasons."""

from __future__ import annotations

import json
import math
import random

import msgspec
import numpy as np
import pytest

from stream_learner.events import (REJECT_REASONS, DecodedBatch, EventDecoder, Reject,
                                   classify)
from stream_learner.synth import BAD_REASONS, encode_event, make_bad_event, take

DIM = 3


def _valid(rng: random.Random, dim: int = DIM, label=None) -> tuple[bytes, list[float]]:
    feats = [rng.uniform(-5.0, 5.0) for _ in range(dim)]
    return encode_event(feats, label if label is not None else rng.randint(0, 2)), feats


def _assert_partition(out: DecodedBatch, n: int) -> None:
    """Every input message is exactly one of: a valid row, a reject."""
    rows = out.index.tolist()
    rejected = [r.index for r in out.rejects]
    assert out.x.shape[0] == len(rows) == len(out.labels) == len(out.ids) == out.ts.shape[0]
    assert len(rows) + len(rejected) == n
    assert set(rows).isdisjoint(rejected)
    assert sorted(rows + rejected) == list(range(n))
    assert rows == sorted(rows)
    assert rejected == sorted(rejected)
    assert all(r.reason in REJECT_REASONS for r in out.rejects)
    assert out.x.dtype == np.float32


# ------------------------------------------------------------------ reasons from synth

def test_synth_covers_every_reason_but_feature_names_mismatch():
    assert set(BAD_REASONS) <= set(REJECT_REASONS)
    # Not generated: feature_names_mismatch needs names fixed first, out_of_range a
    # configured max_abs_feature (a bare decoder has none), undecodable a decoder bug;
    # tests/test_decoder_hostile.py covers those three.
    assert set(REJECT_REASONS) - set(BAD_REASONS) == {
        "feature_names_mismatch", "out_of_range", "undecodable"}


@pytest.mark.parametrize("reason", BAD_REASONS)
def test_each_synth_bad_event_gets_its_reason(reason):
    rng = random.Random(BAD_REASONS.index(reason))
    for trial in range(12):         # several draws so every variant of the reason shows up
        dec = EventDecoder()
        first, feats = _valid(rng)
        bad = make_bad_event(reason, DIM, rng)
        out = dec.decode([first, bad])
        assert [(r.index, r.reason) for r in out.rejects] == [(1, reason)], (trial, bad[:120])
        np.testing.assert_array_equal(out.x, np.array([feats], dtype=np.float32))


def test_mixed_batch_rejects_exactly_and_keeps_valid_rows_in_order():
    rng = random.Random(7)
    values: list[bytes | None] = []
    expected_rejects: list[tuple[int, str]] = []
    expected_rows: list[list[float]] = []
    expected_labels: list[int] = []
    first, feats = _valid(rng, label=0)   # fixes the dimension
    values.append(first)
    expected_rows.append(feats)
    expected_labels.append(0)
    reasons = list(BAD_REASONS) * 3
    rng.shuffle(reasons)
    for reason in reasons:
        for _ in range(rng.randint(0, 2)):
            label = rng.randint(0, 5)
            msg, feats = _valid(rng, label=label)
            values.append(msg)
            expected_rows.append(feats)
            expected_labels.append(label)
        expected_rejects.append((len(values), reason))
        values.append(make_bad_event(reason, DIM, rng))
    out = EventDecoder().decode(values)
    _assert_partition(out, len(values))
    assert [(r.index, r.reason) for r in out.rejects] == expected_rejects
    np.testing.assert_array_equal(out.x, np.array(expected_rows, dtype=np.float32))
    assert out.labels == expected_labels
    valid_index = [i for i in range(len(values)) if i not in dict(expected_rejects)]
    assert out.index.tolist() == valid_index
    assert all(r.detail for r in out.rejects)


def test_feature_names_mismatch_built_by_hand():
    dec = EventDecoder()
    values = [
        encode_event({"a": 1.0, "b": 2.0, "c": 3.0}, 1),
        encode_event({"a": 1.0, "b": 2.0, "d": 3.0}, 1),          # other key
        encode_event({"a": 1.0, "b": 2.0}, 1),                    # key missing
        encode_event({"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0}, 1),  # extra key
        encode_event({"c": 30.0, "a": 10.0, "b": 20.0}, 2),       # same keys, other order
    ]
    out = dec.decode(values)
    _assert_partition(out, len(values))
    assert [(r.index, r.reason) for r in out.rejects] == [
        (1, "feature_names_mismatch"), (2, "feature_names_mismatch"),
        (3, "feature_names_mismatch")]
    np.testing.assert_array_equal(out.x, np.array([[1, 2, 3], [10, 20, 30]], dtype=np.float32))
    assert out.labels == [1, 2]


# ------------------------------------------------------------------ valid events

def test_dict_features_learn_order_from_first_event_and_keep_it():
    dec = EventDecoder()
    out = dec.decode([b'{"features": {"z": 1, "a": 2, "m": 3}, "label": "p"}'])
    assert dec.feature_names == ("z", "a", "m")
    assert dec.n_features == 3
    np.testing.assert_array_equal(out.x, np.array([[1, 2, 3]], dtype=np.float32))
    # Later batches, keys in any order, are put into the first event's order.
    out = dec.decode([b'{"features": {"a": 20, "m": 30, "z": 10}}',
                      b'{"features": {"m": 300, "z": 100, "a": 200}, "label": 4}'])
    np.testing.assert_array_equal(out.x, np.array([[10, 20, 30], [100, 200, 300]],
                                                  dtype=np.float32))
    assert out.labels == [None, 4]
    assert dec.feature_names == ("z", "a", "m")


def test_configured_feature_names_win_over_first_event():
    dec = EventDecoder(feature_names=["b", "a"])
    out = dec.decode([b'{"features": {"a": 1, "b": 2}}'])
    np.testing.assert_array_equal(out.x, np.array([[2, 1]], dtype=np.float32))
    assert dec.n_features == 2


def test_values_labels_ids_and_ts():
    dec = EventDecoder()
    values = [
        b'{"features": [1, 2.5, -3e2], "label": 7, "id": "a", "ts": 1700000000.25}',
        b'{"features": [0.1, 0, 1e-3], "label": "cat"}',
        b'{"features": [4, 5, 6], "label": null, "id": null, "ts": null}',
        b'{"features": [7, 8, 9]}',
        b'{"features": [1, 1, 1], "label": "1", "ts": 5}',
    ]
    out = dec.decode(values)
    _assert_partition(out, len(values))
    assert out.rejects == []
    expected = np.array([[1, 2.5, -300], [0.1, 0, 1e-3], [4, 5, 6], [7, 8, 9], [1, 1, 1]],
                        dtype=np.float32)
    np.testing.assert_array_equal(out.x, expected)
    assert out.labels == [7, "cat", None, None, "1"]
    assert [type(lab) for lab in out.labels] == [int, str, type(None), type(None), str]
    assert out.ids == ["a", None, None, None, None]
    assert out.ts[0] == 1700000000.25 and out.ts[4] == 5.0
    assert np.isnan(out.ts[1:4]).all()
    assert out.ts.dtype == np.float64
    assert out.index.tolist() == [0, 1, 2, 3, 4]


def test_float32_values_are_exact_for_synth_stream():
    X, y = take("sea", 50, seed=3)
    dec = EventDecoder()
    out = dec.decode([encode_event(row, int(lab)) for row, lab in zip(X, y)])
    np.testing.assert_array_equal(out.x, X)
    assert out.labels == y.tolist()


def test_batch_that_is_all_bad():
    rng = random.Random(1)
    dec = EventDecoder()
    values = [make_bad_event(r, DIM, rng) for r in BAD_REASONS if r not in
              ("wrong_length", "empty_features")] + [None]
    out = dec.decode(values)
    _assert_partition(out, len(values))
    assert out.x.shape[0] == 0
    assert out.labels == [] and out.ids == [] and out.ts.shape == (0,)
    assert out.index.dtype == np.int64
    assert len(out.rejects) == len(values)


def test_all_bad_before_dimension_known_is_empty_matrix():
    out = EventDecoder().decode([b"nope", None, b"[]"])
    assert out.x.shape == (0, 0)
    assert [r.reason for r in out.rejects] == ["not_json", "not_json", "not_object"]


def test_empty_batch():
    out = EventDecoder(n_features=3).decode([])
    assert out.x.shape == (0, 3) and out.rejects == [] and out.index.shape == (0,)


def test_tombstone_is_rejected():
    dec = EventDecoder()
    out = dec.decode([b'{"features": [1, 2]}', None, b'{"features": [3, 4]}'])
    assert [(r.index, r.reason) for r in out.rejects] == [(1, "not_json")]
    assert "tombstone" in out.rejects[0].detail
    np.testing.assert_array_equal(out.x, np.array([[1, 2], [3, 4]], dtype=np.float32))


def test_too_large_uses_max_bytes():
    dec = EventDecoder(max_bytes=64)
    small = b'{"features": [1, 2]}'
    big = b'{"features": [1, 2], "pad": "' + b"x" * 64 + b'"}'
    exactly = small + b" " * (64 - len(small))          # 64 bytes: still allowed
    out = dec.decode([small, big, exactly])
    assert [(r.index, r.reason) for r in out.rejects] == [(1, "too_large")]
    assert out.index.tolist() == [0, 2]


def test_bools_are_non_numeric():
    dec = EventDecoder()
    out = dec.decode([b'{"features": [1, 2, 3]}', b'{"features": [1, true, 3]}',
                      b'{"features": {"a": false}}', b'{"features": [false, 0, 0]}'])
    assert [(r.index, r.reason) for r in out.rejects] == [
        (1, "non_numeric"), (2, "non_numeric"), (3, "non_numeric")]


def test_bool_label_is_bad_label():
    out = EventDecoder().decode([b'{"features": [1], "label": true}'])
    assert [(r.index, r.reason) for r in out.rejects] == [(0, "bad_label")]


def test_float32_overflow_is_non_finite():
    with np.errstate(over="ignore"):
        assert math.isfinite(1e39) and np.isinf(np.array(1e39).astype(np.float32))
    dec = EventDecoder()
    out = dec.decode([b'{"features": [1, 2, 3]}', b'{"features": [1, 1e39, 3]}',
                      b'{"features": [1, -1e39, 3]}', b'{"features": [1, 3.4e38, 3]}'])
    assert [(r.index, r.reason) for r in out.rejects] == [(1, "non_finite"),
                                                          (2, "non_finite")]
    assert out.index.tolist() == [0, 3]
    assert np.isfinite(out.x).all()


def test_huge_integer_feature_is_rejected_not_raised():
    """A JSON integer too large for a double must be a reject, not an OverflowError."""
    dec = EventDecoder()
    huge = str(10 ** 400).encode()
    out = dec.decode([b'{"features": [1, 2, 3]}', b'{"features": [1, ' + huge + b', 3]}'])
    assert [(r.index, r.reason) for r in out.rejects] == [(1, "non_finite")]


def test_deeply_nested_json_is_rejected_not_raised():
    """A poison message nested deeper than the recursion limit must not crash decode."""
    dec = EventDecoder()
    deep = b"[" * 100_000 + b"]" * 100_000
    deep_obj = b'{"features": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    out = dec.decode([b'{"features": [1, 2, 3]}', deep, deep_obj])
    _assert_partition(out, 3)
    assert [r.index for r in out.rejects] == [1, 2]


def test_state_dict_round_trip_keeps_dimension_and_names():
    dec = EventDecoder()
    dec.decode([b'{"features": {"b": 1, "a": 2}}'])
    state = dec.state_dict()
    json.dumps(state)                       # plain data only
    fresh = EventDecoder()
    fresh.load_state_dict(state)
    assert fresh.n_features == 2 and fresh.feature_names == ("b", "a")
    out = fresh.decode([b'{"features": {"a": 5, "b": 6}}', b'{"features": [1, 2, 3]}'])
    np.testing.assert_array_equal(out.x, np.array([[6, 5]], dtype=np.float32))
    assert [(r.index, r.reason) for r in out.rejects] == [(1, "wrong_length")]

    lst = EventDecoder()
    lst.decode([b'{"features": [1, 2, 3, 4]}'])
    fresh = EventDecoder()
    fresh.load_state_dict(lst.state_dict())
    assert fresh.n_features == 4 and fresh.feature_names is None
    out = fresh.decode([b'{"features": [1, 2]}', b'{"features": [1, 2, 3, 4]}'])
    assert [(r.index, r.reason) for r in out.rejects] == [(0, "wrong_length")]
    assert out.index.tolist() == [1]


def test_dimension_persists_across_batches():
    dec = EventDecoder()
    dec.decode([b'{"features": [1, 2]}'])
    out = dec.decode([b'{"features": [1, 2, 3]}', b'{"features": [5, 6]}'])
    assert [(r.index, r.reason) for r in out.rejects] == [(0, "wrong_length")]
    np.testing.assert_array_equal(out.x, np.array([[5, 6]], dtype=np.float32))


def test_classify_names_reason_for_each_slow_path_case():
    cases = {
        b"{x": "not_json", b"[1]": "not_object", b'{"a": 1}': "missing_features",
        b'{"features": "abc"}': "non_numeric", b'{"features": [1, "2"]}': "non_numeric",
        b'{"features": [1], "label": 1.5}': "bad_label",
        b'{"features": [1], "id": 3}': "bad_metadata",
        b'{"features": [1], "ts": "now"}': "bad_metadata",
        b'{"features": [NaN]}': "not_json",
    }
    for value, reason in cases.items():
        with pytest.raises(msgspec.DecodeError) as info:
            msgspec.json.decode(value, type=dict[str, list[float]])
        rej = classify(3, value, str(info.value))
        assert isinstance(rej, Reject) and (rej.index, rej.reason) == (3, reason), value


# ------------------------------------------------------------------ randomized

def _mutate(rng: random.Random, value: bytes) -> bytes:
    data = bytearray(value)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(5)
        pos = rng.randrange(len(data) + 1)
        if op == 0 and data:                              # flip a byte
            data[min(pos, len(data) - 1)] = rng.randrange(256)
        elif op == 1:                                     # insert JSON-ish punctuation
            data[pos:pos] = rng.choice([b"{", b"}", b"[", b"]", b",", b":", b'"', b"-",
                                        b"e", b"1e999", b"true", b"null", b"\\u0000"])
        elif op == 2:                                     # truncate
            del data[pos:]
        elif op == 3 and data:                            # delete a byte
            del data[min(pos, len(data) - 1)]
        else:                                             # duplicate a slice
            data[pos:pos] = data[: rng.randrange(len(data) + 1)]
    return bytes(data)


def test_random_garbage_never_raises_and_partitions_input():
    rng = random.Random(20240601)
    for round_ in range(40):
        dec = EventDecoder(max_bytes=rng.choice([64, 4096]))
        values: list[bytes | None] = []
        for _ in range(rng.randint(1, 60)):
            kind = rng.randrange(6)
            if kind == 0:
                values.append(bytes(rng.randrange(256) for _ in range(rng.randint(0, 80))))
            elif kind == 1:
                values.append(None)
            elif kind == 2:
                values.append(_valid(rng, rng.choice([2, 3]))[0])
            elif kind == 3:
                feats = {rng.choice("abc"): rng.uniform(-1, 1) for _ in range(3)}
                values.append(encode_event(feats, rng.choice([None, 1, "x"])))
            elif kind == 4:
                values.append(_mutate(rng, _valid(rng)[0]))
            else:
                values.append(make_bad_event(rng.choice([r for r in BAD_REASONS
                                                         if r != "too_large"]), DIM, rng))
        out = dec.decode(values)
        _assert_partition(out, len(values))
        assert np.isfinite(out.x).all(), round_
        if dec.n_features is not None:
            assert out.x.shape[1] == dec.n_features
