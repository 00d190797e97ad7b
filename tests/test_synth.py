"""Tests for stream_learner.synth: streams, event encoding, bad events, Kafka producer."""

from __future__ import annotations

import itertools
import json
import math
import random
import time
from collections import Counter
from typing import Any

import numpy as np
import pytest

from conftest import read_topic
from stream_learner import synth
from stream_learner.events import MAX_DEPTH
from stream_learner.synth import (BAD_REASONS, DRIFT_EVERY, MAX_EVENT_BYTES, STREAMS,
                                  RateLimiter, encode_event, event_messages, make_bad_event)

EXPECTED_REASONS = {"not_json", "not_object", "missing_features", "empty_features",
                    "wrong_length", "non_numeric", "non_finite", "too_large", "bad_label",
                    "bad_metadata", "too_deep", "duplicate_feature"}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _reject_json_constant(token: str) -> Any:
    raise ValueError(f"non-standard JSON literal {token}")


class _Pairs(dict):
    """A JSON object that remembers the keys it saw twice."""

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        super().__init__(pairs)
        seen: set[str] = set()
        self.dups = {k for k, _ in pairs if k in seen or seen.add(k)}


def _depth(value: bytes) -> int:
    """Deepest [ / { nesting outside strings, by a plain character walk."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in value.decode("utf-8", "replace"):
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def reference_reason(value: bytes, dim: int) -> str | None:
    """A deliberately simple strict decoder of the event contract, for cross-checking.

    Returns the rejection reason, or None for a valid event.
    """
    if len(value) > MAX_EVENT_BYTES:
        return "too_large"
    if _depth(value) > MAX_DEPTH:
        return "too_deep"
    try:
        event = json.loads(value.decode("utf-8"), parse_constant=_reject_json_constant,
                           object_pairs_hook=_Pairs)
    except (UnicodeDecodeError, ValueError):
        return "not_json"
    if not isinstance(event, dict):
        return "not_object"
    if "features" not in event:
        return "missing_features"
    features = event["features"]
    if "features" in event.dups or (isinstance(features, _Pairs) and features.dups):
        return "duplicate_feature"
    if isinstance(features, dict):
        values = list(features.values())
    elif isinstance(features, list):
        values = features
    else:
        return "non_numeric"
    if not values:
        return "empty_features"
    if isinstance(features, list) and len(values) != dim:
        return "wrong_length"
    if not all(_is_number(v) for v in values):
        return "non_numeric"
    if not all(math.isfinite(v) for v in values):
        return "non_finite"
    label = event.get("label")
    if label is not None and not (isinstance(label, str) or
                                  (isinstance(label, int) and not isinstance(label, bool))):
        return "bad_label"
    if "id" in event and not isinstance(event["id"], str):
        return "bad_metadata"
    if "ts" in event and not _is_number(event["ts"]):
        return "bad_metadata"
    return None


# --------------------------------------------------------------------------- streams

@pytest.mark.parametrize("name", sorted(STREAMS))
def test_stream_shape_and_labels(name: str) -> None:
    d = synth.dim(name)
    assert d == len(synth.feature_names(name)) > 0
    samples = list(itertools.islice(STREAMS[name](seed=1, drift_every=100), 300))
    assert len(samples) == 300
    for features, label in samples:
        assert len(features) == d
        assert all(isinstance(v, float) and math.isfinite(v) for v in features)
        assert type(label) is int and label in (0, 1)
    assert {label for _, label in samples} == {0, 1}


def test_expected_dimensions() -> None:
    assert {n: synth.dim(n) for n in STREAMS} == {"sea": 3, "hyperplane": 10, "agrawal": 9,
                                                   "mixed": 3}
    assert DRIFT_EVERY == 25_000


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_streams_are_deterministic_per_seed(name: str) -> None:
    def first(seed: int) -> list[Any]:
        return list(itertools.islice(STREAMS[name](seed=seed, drift_every=50), 120))

    assert first(7) == first(7)
    assert first(7) != first(8)


def test_sea_label_rule_switches_every_drift_every() -> None:
    drift_every = 2_000
    thresholds = [8.0, 9.0, 7.0, 9.5]  # SEA variants 0..3
    X, y = synth.take("sea", drift_every * 5, seed=3, drift_every=drift_every)
    sums = X[:, 0].astype(np.float64) + X[:, 1]
    for segment in range(5):
        rows = slice(segment * drift_every, (segment + 1) * drift_every)
        agreement = [float(np.mean((sums[rows] > t) == y[rows])) for t in thresholds]
        # 10 % label noise: the active rule agrees ~90 %, the others clearly less.
        assert int(np.argmax(agreement)) == segment % 4, agreement
        assert agreement[segment % 4] > 0.85


def test_agrawal_classification_function_switches() -> None:
    drift_every = 1_000
    names = synth.feature_names("agrawal")
    assert names == sorted(names)
    age = names.index("age")
    X, y = synth.take("agrawal", drift_every * 2, seed=5, drift_every=drift_every)
    rule0 = ((X[:, age] < 40) | (X[:, age] >= 60)).astype(np.int64)
    # Function 0 is noise-free, so the first segment follows it exactly ...
    assert np.array_equal(rule0[:drift_every], y[:drift_every])
    # ... and function 1 (which also looks at salary) does not.
    assert np.mean(rule0[drift_every:] != y[drift_every:]) > 0.05


def test_agrawal_feature_names_match_river() -> None:
    from river.datasets.synth import Agrawal

    x, _ = next(iter(Agrawal(seed=0)))
    assert synth.feature_names("agrawal") == sorted(x)


def test_hyperplane_drifts_incrementally() -> None:
    X, y = synth.take("hyperplane", 60_000, seed=2)

    def normal(rows: slice) -> np.ndarray:
        """Least-squares separating direction over the two drifting features."""
        n = rows.stop - rows.start
        w, *_ = np.linalg.lstsq(np.c_[X[rows], np.ones(n)], y[rows] * 2.0 - 1, rcond=None)
        return w[:2] / np.linalg.norm(w[:2])

    start, later, end = slice(0, 5_000), slice(5_000, 10_000), slice(55_000, 60_000)
    # Neighbouring windows agree; far-apart windows see a rotated hyperplane.
    assert float(normal(start) @ normal(later)) > 0.98
    assert float(normal(start) @ normal(end)) < 0.95


def test_take_shapes_and_dtypes() -> None:
    X, y = synth.take("agrawal", 50, seed=1)
    assert X.shape == (50, 9) and X.dtype == np.float32
    assert y.shape == (50,) and y.dtype == np.int64
    expected = list(itertools.islice(STREAMS["agrawal"](1), 50))
    assert np.allclose(X, np.array([f for f, _ in expected], dtype=np.float32))
    assert y.tolist() == [label for _, label in expected]


def test_unknown_stream_and_bad_arguments() -> None:
    with pytest.raises(ValueError):
        synth.feature_names("nope")
    with pytest.raises(ValueError):
        event_messages("nope", 1)
    with pytest.raises(ValueError):
        event_messages("sea", 1, bad_fraction=1.5)
    with pytest.raises(ValueError):
        event_messages("sea", 1, bad_fraction=0.1, bad_reasons=["nonsense"])
    with pytest.raises(ValueError):
        synth.take("sea", 1, drift_every=0)
    with pytest.raises(ValueError):
        make_bad_event("nonsense", 3, random.Random(0))


# --------------------------------------------------------------------------- encoding

def test_encode_event_round_trip() -> None:
    value = encode_event([1.0, np.float32(2.5), 3], 1, event_id="a1", ts=12.5)
    assert json.loads(value) == {"features": [1.0, 2.5, 3.0], "label": 1, "id": "a1", "ts": 12.5}
    assert b" " not in value  # compact

    unlabeled = json.loads(encode_event({"a": 1.0, "b": 2}, None))
    assert unlabeled == {"features": {"a": 1.0, "b": 2.0}, "label": None}
    assert json.loads(encode_event([0.5], "cat"))["label"] == "cat"


# --------------------------------------------------------------------------- bad events

def test_bad_reasons_are_exactly_the_daemon_reasons() -> None:
    assert set(BAD_REASONS) == EXPECTED_REASONS
    assert set(synth.BAD_EVENT_KINDS) == EXPECTED_REASONS


@pytest.mark.parametrize("reason", sorted(EXPECTED_REASONS))
@pytest.mark.parametrize("dim", [1, 3, 10])
def test_bad_event_is_rejected_with_its_reason(reason: str, dim: int) -> None:
    rng = random.Random(f"{reason}-{dim}")
    draws = 6 if reason == "too_large" else 40
    seen = set()
    for _ in range(draws):
        value = make_bad_event(reason, dim, rng, event_id="9", ts=1.0)
        assert isinstance(value, bytes)
        assert reference_reason(value, dim) == reason, value[:200]
        seen.add(value[:200])
    assert len(seen) > 1  # variants rotate


def test_bad_event_variants_include_the_documented_examples() -> None:
    rng = random.Random(0)
    not_json = {make_bad_event("not_json", 3, rng) for _ in range(100)}
    assert b"{not json" in not_json
    assert any(v.startswith(b"\xff\xfe") for v in not_json)
    assert any(b"NaN" in v for v in not_json)
    for value in not_json:
        with pytest.raises(ValueError):  # UnicodeDecodeError is a ValueError too
            json.loads(value.decode("utf-8"), parse_constant=_reject_json_constant)

    non_finite = {make_bad_event("non_finite", 3, rng) for _ in range(30)}
    assert any(b"1e400" in v for v in non_finite)
    for value in non_finite:  # valid JSON text, but the number is not a finite double
        assert not all(math.isfinite(v) for v in json.loads(value)["features"])

    big = make_bad_event("too_large", 3, rng)
    assert len(big) >= synth.TOO_LARGE_BYTES > MAX_EVENT_BYTES
    assert json.loads(big)["features"]  # otherwise well-formed


def test_bad_event_builders_match_make_bad_event() -> None:
    for reason, build in synth.BAD_EVENT_KINDS.items():
        assert build(4, random.Random(1), event_id="x") == \
            make_bad_event(reason, 4, random.Random(1), event_id="x")


# --------------------------------------------------------------------------- messages

def test_mixed_messages_cover_every_reason_and_decode_as_expected() -> None:
    n = 40 * len(EXPECTED_REASONS)       # 5 % bad: each reason exactly twice
    messages = list(event_messages("mixed", n, seed=11, start_id=1000))
    reasons = Counter(reason for _, reason in messages)
    assert reasons.pop(None) == n - 2 * len(EXPECTED_REASONS)
    assert set(reasons) == EXPECTED_REASONS
    assert all(count == 2 for count in reasons.values())
    for value, reason in messages:
        assert reference_reason(value, 3) == reason
    ids = [json.loads(v)["id"] for v, r in messages if r is None]
    assert ids[0] == "1000" and all(i.isdigit() for i in ids)


def test_plain_streams_default_to_no_bad_events() -> None:
    for name in ("sea", "hyperplane", "agrawal"):
        messages = list(event_messages(name, 100))
        assert all(reason is None for _, reason in messages)
        events = [json.loads(v) for v, _ in messages]
        assert [e["id"] for e in events] == [str(i) for i in range(100)]
        assert all(len(e["features"]) == synth.dim(name) for e in events)
        assert all(abs(e["ts"] - time.time()) < 60 for e in events)


def test_unlabeled_fraction_and_dict_features() -> None:
    messages = list(event_messages("agrawal", 200, unlabeled_fraction=0.25,
                                   dict_features=True))
    events = [json.loads(v) for v, _ in messages]
    assert sum(e["label"] is None for e in events) == 50
    assert all(list(e["features"]) == synth.feature_names("agrawal") for e in events)
    assert all(reference_reason(v, 9) is None for v, _ in messages)


def test_bad_reasons_subset_and_ids_align_with_stream() -> None:
    messages = list(event_messages("sea", 100, bad_fraction=0.1, bad_reasons=["bad_label"],
                                   seed=4))
    assert Counter(r for _, r in messages) == {None: 90, "bad_label": 10}
    # Bad events replace (not shift) stream items: valid event i is stream item i.
    stream = list(itertools.islice(STREAMS["sea"](4), 100))
    for i, (value, reason) in enumerate(messages):
        if reason is None:
            assert json.loads(value)["features"] == stream[i][0]


# --------------------------------------------------------------------------- pacing

class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_rate_limiter_holds_average_rate() -> None:
    clock = FakeClock()
    limiter = RateLimiter(100.0, clock=clock, sleep=clock.sleep)
    for _ in range(1_000):
        limiter.acquire()
        clock.now += 0.0001  # the work per event
    assert clock.now == pytest.approx(10.0, rel=0.02)


def test_rate_limiter_caps_catch_up_burst() -> None:
    clock = FakeClock()
    limiter = RateLimiter(1_000.0, burst=10, clock=clock, sleep=clock.sleep)
    limiter.acquire()
    clock.now += 5.0  # a long stall must not bank 5000 events of credit
    before = clock.now
    for _ in range(110):
        limiter.acquire()
    assert clock.now - before == pytest.approx(0.1, abs=0.005)


# --------------------------------------------------------------------------- kafka

def _consume(bootstrap: str, topic: str, expected: int, timeout_s: float = 15.0) -> list[Any]:
    return read_topic(bootstrap, topic, expected, timeout_s)


def test_produce_mixed_round_trip(broker) -> None:  # type: ignore[no-untyped-def]
    topic = "synth-mixed"
    synth.ensure_topics(broker.bootstrap_servers, {topic: 3})
    synth.ensure_topics(broker.bootstrap_servers, {topic: 3})  # idempotent

    report = synth.produce(broker.bootstrap_servers, topic, "mixed", 500, partitions=3,
                           unlabeled_fraction=0.1)
    assert report.sent == 500 and report.failed == 0
    assert report.bad == 25 and set(report.by_reason) == EXPECTED_REASONS
    assert report.unlabeled == 47  # 10 % of the 475 valid events
    assert report.seconds > 0

    records = _consume(broker.bootstrap_servers, topic, 500)
    assert len(records) == 500
    assert {r.partition for r in records} == {0, 1, 2}
    reasons = Counter(reference_reason(r.value, 3) for r in records)
    assert reasons[None] == 475
    assert {k for k in reasons if k} == EXPECTED_REASONS


def test_produce_respects_rate(broker) -> None:  # type: ignore[no-untyped-def]
    topic = "synth-rate"
    synth.ensure_topics(broker.bootstrap_servers, {topic: 1})
    report = synth.produce(broker.bootstrap_servers, topic, "sea", 200, rate=1_000.0)
    assert report.sent == 200 and report.bad == 0
    assert report.seconds >= 0.18
    assert len(_consume(broker.bootstrap_servers, topic, 200)) == 200
