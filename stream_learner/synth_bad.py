"""Malformed messages, one per rejection reason the daemon's strict decoder reports.

Each carries exactly one defect on an otherwise valid event, so the expected reason is
unambiguous whatever order the decoder checks in. Its own module: the variants are a
catalogue of hostile inputs, read and extended apart from the streams.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, Protocol

import msgspec

from .events import MAX_DEPTH

MAX_EVENT_BYTES = 1 << 20
"""The daemon's default maximum message size; ``too_large`` events exceed it."""

TOO_LARGE_BYTES = 2 << 20
"""Size of ``too_large`` events: twice the daemon default, so a raised limit still trips."""

_encoder = msgspec.json.Encoder()


class BadEventBuilder(Protocol):
    """Builds one malformed message value for a stream of dimension ``dim``."""

    def __call__(self, dim: int, rng: random.Random, *, event_id: str | None = None,
                 ts: float | None = None) -> bytes: ...


_Variant = Callable[[int, random.Random, dict[str, Any]], bytes]
_RAW = "\x00raw\x00"  # placeholder swapped for JSON text msgspec would never emit


def _features(dim: int, rng: random.Random) -> list[float]:
    return [round(rng.uniform(-10.0, 10.0), 6) for _ in range(dim)]


def _valid_body(dim: int, rng: random.Random, event_id: str | None,
                ts: float | None) -> dict[str, Any]:
    """A contract-conforming event, the base each variant adds one defect to."""
    body: dict[str, Any] = {"features": _features(dim, rng), "label": rng.randint(0, 1)}
    if event_id is not None:
        body["id"] = event_id
    if ts is not None:
        body["ts"] = ts
    return body


def _with_raw_feature(body: dict[str, Any], rng: random.Random, raw: str) -> bytes:
    """Encode ``body`` with one feature replaced by literal JSON text ``raw``."""
    feats = list(body["features"])
    feats[rng.randrange(len(feats))] = _RAW
    text = _encoder.encode({**body, "features": feats})
    return text.replace(msgspec.json.encode(_RAW), raw.encode())


def _replace_feature(body: dict[str, Any], rng: random.Random, value: Any) -> bytes:
    feats = list(body["features"])
    feats[rng.randrange(len(feats))] = value
    return _encoder.encode({**body, "features": feats})


def _with_raw_field(body: dict[str, Any], key: str, raw: bytes) -> bytes:
    """Encode ``body`` plus field ``key`` holding literal JSON text ``raw``."""
    return _encoder.encode({**body, key: _RAW}).replace(msgspec.json.encode(_RAW), raw)


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"0" + b"]" * depth


def _features_twice(dim: int, rng: random.Random, body: dict[str, Any]) -> bytes:
    # msgspec would keep the last of two "features" keys; the daemon calls it ambiguous.
    return (b'{"features":' + _encoder.encode(_features(dim, rng)) + b","
            + _encoder.encode(body)[1:])


def _wrong_length(dim: int, rng: random.Random) -> int:
    # Never 0: an empty list is its own reason.
    choices = [dim + 1, 2 * dim + 1] + ([dim - 1] if dim > 1 else [])
    return rng.choice(choices)


_VARIANTS: dict[str, tuple[_Variant, ...]] = {
    "not_json": (
        lambda d, r, b: b"{not json",
        lambda d, r, b: b"\xff\xfe" + _encoder.encode(b),  # UTF-16 BOM: not UTF-8
        # Python's json emits NaN/Infinity literals; strict JSON has neither.
        lambda d, r, b: _with_raw_feature(b, r, "NaN"),
        lambda d, r, b: _with_raw_feature(b, r, "Infinity"),
        lambda d, r, b: _encoder.encode(b)[:-1],  # truncated: missing closing brace
    ),
    "not_object": (
        lambda d, r, b: b"[1,2,3]",
        lambda d, r, b: b"42",
        lambda d, r, b: b"null",
        lambda d, r, b: b'"features"',
        lambda d, r, b: _encoder.encode([b]),  # a valid event, wrapped in an array
    ),
    "missing_features": (
        # No id either: {id, label} without features is a label event (docs/labels.md).
        lambda d, r, b: _encoder.encode({k: v for k, v in b.items()
                                         if k not in ("features", "id")}),
        lambda d, r, b: b"{}",
    ),
    "empty_features": (
        lambda d, r, b: _encoder.encode({**b, "features": []}),
        lambda d, r, b: _encoder.encode({**b, "features": {}}),
    ),
    "wrong_length": (
        lambda d, r, b: _encoder.encode({**b, "features": _features(_wrong_length(d, r), r)}),
    ),
    "non_numeric": (
        lambda d, r, b: _replace_feature(b, r, "x"),
        lambda d, r, b: _replace_feature(b, r, "1.5"),
        lambda d, r, b: _replace_feature(b, r, True),
        lambda d, r, b: _replace_feature(b, r, False),
        lambda d, r, b: _replace_feature(b, r, None),
        lambda d, r, b: _replace_feature(b, r, [1.0]),
    ),
    "non_finite": (
        # Valid JSON grammar, but the value overflows a double to ±inf.
        lambda d, r, b: _with_raw_feature(b, r, "1e400"),
        lambda d, r, b: _with_raw_feature(b, r, "-1e400"),
        lambda d, r, b: _with_raw_feature(b, r, "1.7976931348623157e309"),
    ),
    "too_large": (
        lambda d, r, b: _encoder.encode({**b, "pad": "x" * TOO_LARGE_BYTES}),
        lambda d, r, b: _encoder.encode({**b, "pad": {"blob": "y" * TOO_LARGE_BYTES}}),
    ),
    "bad_label": (
        lambda d, r, b: _encoder.encode({**b, "label": 1.5}),
        lambda d, r, b: _encoder.encode({**b, "label": [1]}),
        lambda d, r, b: _encoder.encode({**b, "label": {"y": 1}}),
        lambda d, r, b: _encoder.encode({**b, "label": True}),
        lambda d, r, b: _encoder.encode({**b, "label": False}),
    ),
    "bad_metadata": (
        lambda d, r, b: _encoder.encode({**b, "id": 123}),
        lambda d, r, b: _encoder.encode({**b, "id": ["a"]}),
        lambda d, r, b: _encoder.encode({**b, "ts": "yesterday"}),
        lambda d, r, b: _encoder.encode({**b, "ts": [1.0]}),
    ),
    "too_deep": (
        # Nested beyond the decoder's limit, in an extra field or in the features.
        lambda d, r, b: _with_raw_field(b, "x", _nested(MAX_DEPTH + 1 + r.randrange(64))),
        lambda d, r, b: _with_raw_field({k: v for k, v in b.items() if k != "features"},
                                        "features", _nested(MAX_DEPTH + 1)),
    ),
    "duplicate_feature": (
        lambda d, r, b: _features_twice(d, r, b),
        lambda d, r, b: _encoder.encode({k: v for k, v in b.items() if k != "features"})
        .replace(b"{", b'{"features":{"f0":1.0,"f0":2.0},', 1),
    ),
}


def _builder(reason: str) -> BadEventBuilder:
    variants = _VARIANTS[reason]

    def build(dim: int, rng: random.Random, *, event_id: str | None = None,
              ts: float | None = None) -> bytes:
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        variant = rng.choice(variants)
        return variant(dim, rng, _valid_body(dim, rng, event_id, ts))

    build.__name__ = f"bad_{reason}"
    build.__doc__ = f"A malformed message the daemon rejects as {reason!r}."
    return build


BAD_EVENT_KINDS: dict[str, BadEventBuilder] = {reason: _builder(reason) for reason in _VARIANTS}
"""Rejection reason → builder ``(dim, rng, *, event_id=None, ts=None) -> bytes``."""

BAD_REASONS: tuple[str, ...] = tuple(BAD_EVENT_KINDS)
"""Every rejection reason, in the order ``mixed`` streams cycle through them."""


def make_bad_event(reason: str, dim: int, rng: random.Random, *, event_id: str | None = None,
                   ts: float | None = None) -> bytes:
    """A message value a strict decoder rejects with exactly ``reason``.

    Picks one of a few variants per reason with ``rng``.  Apart from the one defect,
    the event is valid for a stream of dimension ``dim`` and carries ``event_id`` and
    ``ts`` when given (``bad_metadata`` breaks one of them on purpose).
    """
    try:
        builder = BAD_EVENT_KINDS[reason]
    except KeyError:
        raise ValueError(f"unknown reject reason {reason!r}; choose one of {BAD_REASONS}") from None
    return builder(dim, rng, event_id=event_id, ts=ts)
