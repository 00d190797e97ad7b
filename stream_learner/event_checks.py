"""The slow path: name the exact reason a message failed the fast typed decode.

Only messages the msgspec fast path refused come here, so this may parse twice and
check one rule at a time; it never raises (a failure here is itself the reason,
``undecodable``). The per-field rules (:func:`bad_label`, :func:`bad_meta`,
:func:`bad_ts`) are shared with the decoder's batch checks and the label join, so a
rule is written once.
"""

from __future__ import annotations

import json
import math
import re
import time
from typing import Any

import numpy as np

from .event_contract import (BAD_LABEL, BAD_METADATA, DUPLICATE_FEATURE, MAX_DEPTH,
                             MISSING_FEATURES, NON_FINITE, NON_NUMERIC, NOT_JSON, NOT_OBJECT,
                             OUT_OF_RANGE, TOO_DEEP, UNDECODABLE, Limits, Reject)

_FLOAT32_MAX = float(np.finfo(np.float32).max)
# Labels travel as JSON, checkpoint keys and metric-free strings: an int label must fit
# 64 bits (a 5,000-digit one cannot even be printed by Python without raising).
_MAX_INT_LABEL = 2 ** 63

# One JSON string, escapes included (unrolled-loop form: linear, no backtracking blow-up).
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_OPEN = np.zeros(256, np.int8)
_OPEN[[ord("["), ord("{")]] = 1
_OPEN[[ord("]"), ord("}")]] = -1


def nesting_depth(value: bytes, limit: int = MAX_DEPTH) -> int:
    """Deepest [ / { nesting outside strings, exact when it exceeds ``limit``.

    Cheap on normal events: with at most ``limit`` brackets in the whole value the
    depth cannot exceed it, so two ``bytes.count`` calls answer (returns that count).
    """
    brackets = value.count(b"[") + value.count(b"{")
    if brackets <= limit:
        return brackets
    outside = _JSON_STRING.sub(b"", value)
    cut = outside.find(b'"')      # an unterminated string: the parser stops there
    if cut >= 0:
        outside = outside[:cut]
    if outside.count(b"[") + outside.count(b"{") <= limit:
        return limit
    steps = _OPEN[np.frombuffer(outside, np.uint8)].astype(np.int32)
    return int(np.cumsum(steps).max(initial=0))


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


class _HugeInt(float):
    """A JSON integer too long to convert (Python refuses > 4,300 digits): ±inf."""


def _parse_int(text: str) -> int | float:
    # Beyond 100 digits no field can accept it; int() of a huge one raises ValueError.
    if len(text) > 100:
        return _HugeInt("-inf" if text.startswith("-") else "inf")
    return int(text)


class _PairsDict(dict):  # type: ignore[type-arg]
    """A JSON object that remembers the keys it saw twice (msgspec keeps the last)."""

    duplicates: list[str]

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        super().__init__(pairs)
        self.duplicates = []
        if len(self) != len(pairs):
            seen: set[str] = set()
            self.duplicates = [k for k, _ in pairs if k in seen or seen.add(k)]  # type: ignore[func-returns-value]


def duplicates_in(value: bytes) -> str | None:
    """Second parse of an object-features event, keeping every key: msgspec keeps the last."""
    return _duplicate_features(json.loads(value, object_pairs_hook=_PairsDict,
                                          parse_int=_parse_int))


def _duplicate_features(obj: Any) -> str | None:
    """Detail for duplicate_feature, or None: a key twice in features, or features twice."""
    if not isinstance(obj, _PairsDict):
        return None
    if "features" in obj.duplicates:
        return "'features' is given more than once"
    feats = obj.get("features")
    if isinstance(feats, _PairsDict) and feats.duplicates:
        return f"features name {_short(repr(feats.duplicates[0]), 60)} more than once"
    return None


def bad_label(label: Any, lim: Limits) -> str | None:
    if label is None:
        return None
    if isinstance(label, bool) or not isinstance(label, (int, str)):
        return f"label must be int, string or null, got {type(label).__name__}"
    if isinstance(label, int):
        return None if -_MAX_INT_LABEL <= label < _MAX_INT_LABEL else \
            "integer label does not fit 64 bits"
    if lim.max_label_length is not None and len(label) > lim.max_label_length:
        return f"label has {len(label)} characters > max_label_length {lim.max_label_length}"
    return None


def bad_meta(event_id: Any, ts: Any, lim: Limits, now: float | None) -> str | None:
    """Type and length of id, type of ts; the ts window too when ``now`` is given."""
    if event_id is not None:
        if not isinstance(event_id, str):
            return "id must be a string"
        if lim.max_id_length is not None and len(event_id) > lim.max_id_length:
            return f"id has {len(event_id)} characters > max_id_length {lim.max_id_length}"
    if ts is not None and (isinstance(ts, bool) or not isinstance(ts, (int, float))):
        return "ts must be epoch seconds"
    return None if now is None else bad_ts(ts, lim, now)


def bad_ts(ts: float | None, lim: Limits, now: float) -> str | None:
    if ts is None:
        return None
    ts = float(ts)
    if not math.isfinite(ts):
        return "ts is out of range"
    age, ahead = lim.max_event_age_seconds, lim.max_event_future_seconds
    if age is not None and ts < now - age:
        return f"ts {ts:.6g} is more than max_event_age_seconds {age:g} old"
    if ahead is not None and ts > now + ahead:
        return f"ts {ts:.6g} is more than max_event_future_seconds {ahead:g} ahead"
    return None


def undecodable(index: int, exc: BaseException) -> Reject:
    return Reject(index, UNDECODABLE, _short(f"{type(exc).__name__}: {exc}"))


def classify(index: int, value: bytes, fast_error: str, limits: Limits | None = None,
             now: float | None = None) -> Reject:
    """Name the reason a message failed the strict fast-path decode.

    Never raises: a failure here is itself the reason (undecodable).
    """
    try:
        return _classify(index, value, fast_error, limits or Limits(),
                         time.time() if now is None else now)
    except Exception as exc:   # noqa: BLE001 - see EventDecoder.decode
        return undecodable(index, exc)


def _classify(index: int, value: bytes, fast_error: str, lim: Limits, now: float) -> Reject:
    depth = nesting_depth(value, lim.max_depth)   # classify() may be called on its own
    if depth > lim.max_depth:
        return Reject(index, TOO_DEEP, f"nesting depth {depth} > {lim.max_depth}")
    try:
        obj = json.loads(value, parse_constant=_reject_constant, parse_int=_parse_int,
                         object_pairs_hook=_PairsDict)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        return Reject(index, NOT_JSON, _short(str(exc)))
    if not isinstance(obj, dict):
        return Reject(index, NOT_OBJECT, f"top-level JSON is {type(obj).__name__}, not an object")
    if "features" not in obj:
        return Reject(index, MISSING_FEATURES, "no 'features' field")
    dup = _duplicate_features(obj)
    if dup is not None:
        return Reject(index, DUPLICATE_FEATURE, dup)
    feats = obj["features"]
    items = list(feats.values()) if isinstance(feats, dict) else feats
    if not isinstance(items, list):
        return Reject(index, NON_NUMERIC, f"features is {type(feats).__name__}")
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (int, float)):
            return Reject(index, NON_NUMERIC, f"feature value {_short(repr(item))} is not a number")
        if abs(item) > _FLOAT32_MAX:   # also JSON integers beyond float64 (no OverflowError)
            return Reject(index, NON_FINITE, "a feature is out of range or infinite")
    if lim.max_abs_feature is not None and any(abs(v) > lim.max_abs_feature for v in items):
        return Reject(index, OUT_OF_RANGE, f"|feature| > max_abs_feature {lim.max_abs_feature:g}")
    label = bad_label(obj.get("label"), lim)
    if label is not None:
        return Reject(index, BAD_LABEL, label)
    meta = bad_meta(obj.get("id"), obj.get("ts"), lim, now)
    if meta is not None:
        return Reject(index, BAD_METADATA, meta)
    return Reject(index, NOT_JSON, _short(fast_error))


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "..."
