"""Hostile message values: whatever a message holds, EventDecoder.decode returns rows and
Rejects (one per bad message, with a known reason) and never raises (issue 13, item 1)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_learner.events import REJECT_REASONS, EventDecoder, Limits, classify, nesting_depth

NOW = 1_800_000_000.0
LIMITS = Limits(max_label_length=256, max_id_length=256, max_abs_feature=1e9,
                max_event_age_seconds=365 * 86400.0, max_event_future_seconds=86400.0)
VALID = b'{"features":[1,2],"label":1,"id":"ok","ts":1800000000}'
DEEP = b"[" * 5000 + b"]" * 5000


def _decoder() -> EventDecoder:
    return EventDecoder(limits=LIMITS, clock=lambda: NOW)


def _reasons(values: list[bytes | None]) -> dict[int, str]:
    out = _decoder().decode([VALID, *values])
    _assert_partition(out, len(values) + 1)
    assert out.index[0] == 0
    return {r.index - 1: r.reason for r in out.rejects}


def _assert_partition(out, n: int) -> None:
    rows = out.index.tolist()
    rejected = [r.index for r in out.rejects]
    assert sorted(rows + rejected) == list(range(n))
    assert len(set(rejected)) == len(rejected)
    assert all(r.reason in REJECT_REASONS and r.detail for r in out.rejects)


@pytest.mark.parametrize("value, reason", [
    (b'{"features":[1,2],"label":1,"x":' + DEEP + b"}", "too_deep"),
    (b'{"features":' + DEEP + b',"label":1}', "too_deep"),
    (b'{"features":[1,2],"label":' + DEEP + b"}", "too_deep"),
    (b'{"features":[1,2],"x":' + b'{"a":' * 5000 + b"1" + b"}" * 5000 + b"}", "too_deep"),
    (b'{"features":{"a":1,"a":2}}', "duplicate_feature"),
    (b'{"features":[1,2],"features":[3,4]}', "duplicate_feature"),
    (b'{"features":[1,2],"label":"' + b"y" * 300_000 + b'"}', "bad_label"),
    (b'{"features":[1,2],"label":' + b"9" * 5000 + b"}", "bad_label"),
    (b'{"features":[1,2],"label":' + b"9" * 30 + b"}", "bad_label"),
    (b'{"features":[1,2],"id":"' + b"i" * 257 + b'"}', "bad_metadata"),
    (b'{"features":[1,2],"ts":-1e308}', "bad_metadata"),
    (b'{"features":[1,2],"ts":1e308}', "bad_metadata"),
    (b'{"features":[1,2],"ts":' + b"9" * 5000 + b"}", "bad_metadata"),
    (b'{"features":[1,2],"ts":1e400}', "bad_metadata"),
    (b'{"features":[1,3e38]}', "out_of_range"),
    (b'{"features":[1,-2e9],"label":"' + b"y" * 300 + b'"}', "out_of_range"),  # first reason
    (b'{"features":[1,1e39]}', "non_finite"),
])
def test_each_hostile_value_gets_its_reason(value: bytes, reason: str) -> None:
    assert _reasons([value]) == {0: reason}


def test_brackets_inside_strings_are_not_nesting() -> None:
    many = (b'{"features":[1,2],"label":"' + b"[" * 250 + b'","id":"x\\"[[[[{{{{",'
            b'"note":"' + b"{" * 5000 + b'"}')
    assert nesting_depth(many) <= 32
    escaped = b'{"features":[1,2],"label":"a\\\\","x":' + b"[" * 40 + b"]" * 40 + b"}"
    assert nesting_depth(escaped) > 32             # the string ends at \\" : brackets count
    assert _reasons([many, escaped]) == {1: "too_deep"}


def test_limits_at_the_edge_are_accepted() -> None:
    edge = [b'{"features":[1,1e9],"label":"' + b"y" * 256 + b'","id":"' + b"i" * 256 + b'"}',
            b'{"features":[1,2],"ts":%r}' % (NOW - 365 * 86400.0 + 1),
            b'{"features":[1,2],"ts":%r}' % (NOW + 86399.0),
            b'{"features":[1,2],"label":9223372036854775807,"x":' + b"[" * 30 + b"]" * 30 + b"}"]
    assert _reasons(edge) == {}


def test_classify_never_raises() -> None:
    for value in (DEEP, b'{"features":' + DEEP + b"}", b"\xff" * 10, b'{"a":' * 3000):
        assert classify(0, value, "fast").reason in REJECT_REASONS


def test_a_failing_decoder_step_is_undecodable_not_a_crash(monkeypatch) -> None:
    dec = _decoder()
    monkeypatch.setattr(dec, "_row", lambda event: 1 / 0)     # any bug in the per-event path
    out = dec.decode([b'{"features":{"a":1,"b":2}}'])     # object features go through _row
    assert [(r.reason, r.detail.split(":")[0]) for r in out.rejects] == [
        ("undecodable", "ZeroDivisionError")]


# --------------------------------------------------------------------------- fuzz

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=4), kids,
                                                              max_size=4),
    max_leaves=40)


@st.composite
def _values(draw) -> bytes | None:
    kind = draw(st.integers(0, 4))
    if kind == 0:
        return draw(st.binary(max_size=200))
    if kind == 1:
        return None
    if kind == 2:
        return json.dumps(draw(_json)).encode()
    base = bytearray(json.dumps({"features": draw(st.lists(st.floats(), min_size=1,
                                                              max_size=3)),
                                 "label": draw(_json), "ts": draw(_json),
                                 "id": draw(_json)}).encode())
    if kind == 4:       # mutate: insert deep brackets or random bytes somewhere
        at = draw(st.integers(0, len(base)))
        base[at:at] = draw(st.sampled_from([b"[" * 2000, b"{" * 50, b'"', b"\\", b"]",
                                            draw(st.binary(max_size=8))]))
    return bytes(base)


@settings(max_examples=300, deadline=None)
@given(st.lists(_values(), min_size=1, max_size=12))
def test_fuzz_no_exception_and_every_message_accounted_for(values) -> None:
    out = _decoder().decode(values)
    _assert_partition(out, len(values))
    assert np.isfinite(out.x).all()


# --------------------------------------------------------------------------- end to end

def test_the_daemon_survives_hostile_events_on_a_real_broker(broker, daemons, tmp_path) -> None:
    """Poison among valid events: DLQ'd with their exact reasons, the rest learned, and the
    daemon (then its restart) stays up. On the landed code the deep one crash-looped it."""
    from collections import Counter

    from kafka import KafkaProducer

    from conftest import DaemonProcess, latest_checkpoint, read_topic, unique
    from stream_learner.synth import ensure_topics

    bs = broker.bootstrap_servers
    topic = unique("hostile")
    ensure_topics(bs, {topic: 1, f"{topic}.dlq": 1, f"{topic}.predictions": 1})
    poison = {
        "deep": (b'{"features":[1,2],"label":1,"x":' + DEEP + b"}", "too_deep"),
        "long-label": (b'{"features":[1,2],"label":"' + b"y" * 300_000 + b'"}', "bad_label"),
        "old-ts": (b'{"features":[1,2],"label":1,"ts":-1e308}', "bad_metadata"),
        "big-feature": (b'{"features":[1,3e38],"label":1}', "out_of_range"),
        "dup-keys": (b'{"features":{"a":1,"a":2},"label":1}', "duplicate_feature"),
    }
    producer = KafkaProducer(bootstrap_servers=bs, max_request_size=2_000_000)
    valid: list[str] = []

    def send_valid(n: int) -> None:
        for _ in range(n):
            event_id = f"v{len(valid)}"
            valid.append(event_id)
            value = json.dumps({"id": event_id, "label": len(valid) % 2,
                                "features": [len(valid) % 7 * 0.1, 1.0]}).encode()
            producer.send(topic, value, key=event_id.encode())

    for key, (value, _) in poison.items():
        send_valid(20)
        producer.send(topic, value, key=key.encode())
    send_valid(20)
    producer.flush()

    group = unique("g")
    d = DaemonProcess(bs, tmp_path / "ckpt", topic, group)
    daemons.append(d)
    d.wait_consumed(len(valid) + len(poison))
    metrics = d.metrics()
    for reason, count in Counter(r for _, r in poison.values()).items():
        assert metrics[f'stream_learner_events_rejected_total{{reason="{reason}"}}'] == count
    assert d.terminate() == 0

    dlq = read_topic(bs, f"{topic}.dlq", len(poison))
    got = {r.key.decode(): dict(r.headers)["reason"].decode() for r in dlq}
    assert got == {key: reason for key, (_, reason) in poison.items()}
    counters = latest_checkpoint(tmp_path / "ckpt")["counters"]
    assert counters["rejected"] == dict(Counter(r for _, r in poison.values()))
    assert counters["learned"] + counters["held_out"] == len(valid)

    # A restart replays nothing it has checkpointed and stays up on the next events.
    send_valid(10)
    producer.flush()
    producer.close()
    again = DaemonProcess(bs, tmp_path / "ckpt", topic, group)
    daemons.append(again)
    again.wait_consumed(10)          # the metric counts this process's events
    assert again.terminate() == 0
    counters = latest_checkpoint(tmp_path / "ckpt")["counters"]
    assert counters["learned"] + counters["held_out"] == len(valid)
    assert sum(counters["rejected"].values()) == len(poison)
