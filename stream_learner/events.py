"""Decode and validate event message values (the event contract in the README).

The fast path is one msgspec typed decode per message (C speed, strict types),
then numpy checks over the whole micro-batch. Only messages that fail the fast
path go through the slow path, whose job is to name the exact rejection reason.

>>> dec = EventDecoder()
>>> out = dec.decode([b'{"features": [1, 2], "label": "a"}', b'{"features": [1]}', b'oops'])
>>> out.x.tolist(), out.labels, [(r.index, r.reason) for r in out.rejects]
([[1.0, 2.0]], ['a'], [(1, 'wrong_length'), (2, 'not_json')])
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass, field
from typing import Annotated, Any, Callable, Sequence

import msgspec
import numpy as np

NOT_JSON = "not_json"
NOT_OBJECT = "not_object"
MISSING_FEATURES = "missing_features"
EMPTY_FEATURES = "empty_features"
WRONG_LENGTH = "wrong_length"
FEATURE_NAMES_MISMATCH = "feature_names_mismatch"
NON_NUMERIC = "non_numeric"
NON_FINITE = "non_finite"
TOO_LARGE = "too_large"
BAD_LABEL = "bad_label"
BAD_METADATA = "bad_metadata"
TOO_DEEP = "too_deep"                    # nesting beyond MAX_DEPTH: refused before parsing
DUPLICATE_FEATURE = "duplicate_feature"  # a features object names a key twice
OUT_OF_RANGE = "out_of_range"            # finite, but beyond model.max_abs_feature
UNDECODABLE = "undecodable"              # the decoder itself failed: never a crash

REJECT_REASONS: tuple[str, ...] = (
    NOT_JSON, NOT_OBJECT, MISSING_FEATURES, EMPTY_FEATURES, WRONG_LENGTH,
    FEATURE_NAMES_MISMATCH, NON_NUMERIC, NON_FINITE, TOO_LARGE, BAD_LABEL, BAD_METADATA,
    TOO_DEEP, DUPLICATE_FEATURE, OUT_OF_RANGE, UNDECODABLE)

# Not decided here: the learner refuses a label that would add a class beyond
# model.max_classes, and the daemon dead-letters that event with this reason.
TOO_MANY_CLASSES = "too_many_classes"
# Not decided here either: a label event ({id, label}, no features) that joins no
# waiting prediction (stream_learner/label_join.py, docs/labels.md).
UNKNOWN_ID = "unknown_id"
DUPLICATE_LABEL = "duplicate_label"
LABEL_EXPIRED = "label_expired"
JOIN_REASONS: tuple[str, ...] = (UNKNOWN_ID, DUPLICATE_LABEL, LABEL_EXPIRED)
# Every reason a DLQ record can carry (the decoder's, the learner's, the label join's).
DLQ_REASONS: tuple[str, ...] = REJECT_REASONS + (TOO_MANY_CLASSES,) + JOIN_REASONS

Label = int | str
_FLOAT32_MAX = float(np.finfo(np.float32).max)
# Labels travel as JSON, checkpoint keys and metric-free strings: an int label must fit
# 64 bits (a 5,000-digit one cannot even be printed by Python without raising).
_MAX_INT_LABEL = 2 ** 63
# msgspec and json both recurse per nesting level; a 5,000-deep value raises
# RecursionError in either. A real event is 2 deep ({"features": [...]}).
MAX_DEPTH = 32


@dataclass(frozen=True)
class Limits:
    """Policy caps; None switches a check off. Defaults are config.py's, except the
    feature magnitude and ts window (off: a bare decoder accepts any float32, any ts)."""

    max_label_length: int | None = 256        # characters of a string label
    max_id_length: int | None = 256           # characters of an id
    max_abs_feature: float | None = None      # finite features beyond it: out_of_range
    max_event_age_seconds: float | None = None     # ts older than now - this: bad_metadata
    max_event_future_seconds: float | None = None  # ts later than now + this: bad_metadata
    max_depth: int = MAX_DEPTH                # never off: it protects the parsers


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


# msgspec checks the 64-bit bound in C; a failure goes to classify(), which says bad_label.
_Int64 = Annotated[int, msgspec.Meta(ge=-2 ** 63, le=2 ** 63 - 1)]


class _Event(msgspec.Struct):
    features: list[float] | dict[str, float]
    label: _Int64 | str | None = None
    id: str | None = None
    ts: float | None = None


_DECODER = msgspec.json.Decoder(_Event)


@dataclass(frozen=True)
class Reject:
    index: int      # position of the message in the decoded batch
    reason: str     # one of REJECT_REASONS
    detail: str     # human-readable, goes into the DLQ headers


@dataclass
class DecodedBatch:
    """Valid events as one float32 matrix; rejects by index into the input."""

    x: np.ndarray                      # [n_valid, n_features] float32
    labels: list[Label | None]         # None = unlabeled
    ids: list[str | None]
    ts: np.ndarray                     # [n_valid] float64 epoch seconds, NaN when absent
    index: np.ndarray                  # [n_valid] position in the input batch
    rejects: list[Reject] = field(default_factory=list)


class EventDecoder:
    """Stateful decoder: it fixes the feature count (and names) on the first valid event.

    Its state (dimension and feature order) goes into the checkpoint so a restarted
    daemon rejects exactly what the old one would have.
    """

    def __init__(self, n_features: int | None = None,
                 feature_names: Sequence[str] | None = None,
                 max_bytes: int = 1_048_576, limits: Limits | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.feature_names: tuple[str, ...] | None = tuple(feature_names) if feature_names else None
        self.n_features = n_features or (len(self.feature_names) if self.feature_names else None)
        self.max_bytes = max_bytes
        self.limits = limits or Limits()
        self.clock = clock      # wall clock for the ts window

    def decode(self, values: Sequence[bytes | None]) -> DecodedBatch:
        rejects: list[Reject] = []
        events: list[_Event] = []
        rows: list[list[float] | None] = []
        index: list[int] = []
        max_bytes, depth_limit = self.max_bytes, self.limits.max_depth
        longest = 0     # no label or id is longer than its message: caps skipped below it
        for i, value in enumerate(values):
            # Whatever a message holds, it ends here as a row or a Reject: an exception
            # would leave the batch's offsets uncommitted and crash-loop the daemon.
            try:
                if value is None:
                    rejects.append(Reject(i, NOT_JSON, "message value is null (tombstone)"))
                    continue
                size = len(value)
                if size > max_bytes:
                    rejects.append(Reject(i, TOO_LARGE, f"{size} bytes > "
                                                        f"max_event_bytes {max_bytes}"))
                    continue
                if size > longest:
                    longest = size
                # Fewer brackets than the limit cannot nest deeper: the scan is skipped.
                brackets = value.count(b"[") + value.count(b"{")
                if brackets > depth_limit:
                    depth = nesting_depth(value, depth_limit)
                    if depth > depth_limit:
                        rejects.append(Reject(i, TOO_DEEP,
                                              f"nesting depth {depth} > {depth_limit}"))
                        continue
                event = _DECODER.decode(value)
                feats = event.features
                # List features skip this second parse. "features" given twice means two
                # valid features values (msgspec checks each): 3+ brackets, never a plain
                # {"features": [...]} event's 2.
                if feats.__class__ is list and (brackets <= 2 or value.count(b'"features"') < 2):
                    rows.append(feats)
                else:
                    dup = _duplicates_in(value)
                    if dup is not None:
                        rejects.append(Reject(i, DUPLICATE_FEATURE, dup))
                        continue
                    rows.append(self._row(event))
                events.append(event)
                index.append(i)
            except (msgspec.DecodeError, UnicodeDecodeError) as exc:
                rejects.append(classify(i, value, str(exc), self.limits,  # type: ignore[arg-type]
                                        now=self.clock()))
            except Exception as exc:   # noqa: BLE001 - a decoder bug must not kill the loop
                rejects.append(_undecodable(i, exc))
        keep, x = self._to_matrix(rows, index, rejects)
        kept = [events[k] for k in keep]
        labels = [e.label for e in kept]
        ids = [e.id for e in kept]
        ts = np.array([np.nan if e.ts is None else e.ts for e in kept], dtype=np.float64)
        ok = self._policy(x, labels, ids, ts, [index[k] for k in keep], rejects, longest)
        if ok is not None:
            keep, x, ts = [keep[k] for k in ok], x[ok], ts[ok]
            labels, ids = [labels[k] for k in ok], [ids[k] for k in ok]
        rejects.sort(key=lambda r: r.index)
        return DecodedBatch(
            x=x, labels=labels, ids=ids, ts=ts,
            index=np.asarray([index[k] for k in keep], dtype=np.int64),
            rejects=rejects)

    def _policy(self, x: np.ndarray, labels: list[Label | None], ids: list[str | None],
                ts: np.ndarray, where: list[int], rejects: list[Reject],
                longest: int) -> np.ndarray | None:
        """Range, label and metadata caps over rows that passed the type checks.

        Checked in this order, each event getting the first reason only: features,
        label, id, ts. Returns the rows to keep, or None when all are kept.
        """
        n = len(labels)
        if n == 0:
            return None
        lim = self.limits
        bad = np.zeros(n, bool)

        def flag(rows: Any, reason: str, detail: Callable[[int], str]) -> None:
            for k in rows:
                if not bad[k]:
                    bad[k] = True
                    rejects.append(Reject(where[k], reason, detail(int(k))))

        if lim.max_abs_feature is not None:
            flag(np.flatnonzero((np.abs(x) > lim.max_abs_feature).any(axis=1)), OUT_OF_RANGE,
                 lambda k: f"|feature| > max_abs_feature {lim.max_abs_feature:g}")
        # One pass of cheap tests; only the few suspects get the full check with a detail.
        # Ints are bounded by msgspec already; only string length is left, and only when
        # some message in the batch is longer than the cap.
        cap = lim.max_label_length
        if cap is not None and longest > cap:
            flag([k for k, lab in enumerate(labels) if lab.__class__ is str and len(lab) > cap],
                 BAD_LABEL, lambda k: _bad_label(labels[k], lim) or "")
        if lim.max_id_length is not None and longest > lim.max_id_length:
            cap_id = lim.max_id_length
            flag([k for k, v in enumerate(ids) if v is not None and len(v) > cap_id],
                 BAD_METADATA, lambda k: _bad_meta(ids[k], None, lim, None) or "")
        if lim.max_event_age_seconds is not None or lim.max_event_future_seconds is not None:
            now = self.clock()
            with np.errstate(invalid="ignore"):
                out = ((ts < now - (lim.max_event_age_seconds or math.inf))
                       | (ts > now + (lim.max_event_future_seconds or math.inf)))
            flag(np.flatnonzero(out), BAD_METADATA,
                 lambda k: _bad_ts(float(ts[k]), lim, now) or "")
        return np.flatnonzero(~bad) if bad.any() else None

    def _row(self, event: _Event) -> list[float] | None:
        """Features as a list in the fixed order; None when object keys don't match."""
        feats = event.features
        if isinstance(feats, list):
            return feats
        if self.feature_names is None and feats:
            self.feature_names = tuple(feats)
            self.n_features = self.n_features or len(self.feature_names)
        names = self.feature_names or ()
        if len(feats) != len(names) or any(name not in feats for name in names):
            return None
        return [feats[name] for name in names]

    def _to_matrix(self, rows: list[list[float] | None], index: list[int],
                   rejects: list[Reject]) -> tuple[list[int], np.ndarray]:
        lengths = np.fromiter((-1 if r is None else len(r) for r in rows), np.int64, len(rows))
        if self.n_features is None:
            first = np.flatnonzero(lengths > 0)
            if first.size:
                self.n_features = int(lengths[first[0]])
        dim = self.n_features or 0
        ok = lengths == dim
        for k in np.flatnonzero(~ok):
            n = lengths[k]
            if n == -1:
                rejects.append(Reject(index[k], FEATURE_NAMES_MISMATCH,
                                      f"feature names differ from {list(self.feature_names or ())}"))
            elif n == 0:
                rejects.append(Reject(index[k], EMPTY_FEATURES, "features is empty"))
            else:
                rejects.append(Reject(index[k], WRONG_LENGTH, f"expected {dim} features, got {n}"))
        good = np.flatnonzero(ok)
        if good.size == 0:
            return [], np.empty((0, dim), dtype=np.float32)
        with np.errstate(over="ignore"):    # float64 values beyond float32 become inf: rejected below
            x = np.array([rows[k] for k in good], dtype=np.float32).reshape(good.size, dim)
        finite = np.isfinite(x).all(axis=1)
        for k in np.flatnonzero(~finite):
            rejects.append(Reject(index[good[k]], NON_FINITE,
                                  "a feature is NaN or infinite in float32"))
        if not finite.all():
            good, x = good[finite], x[finite]
        return good.tolist(), x

    def state_dict(self) -> dict[str, Any]:
        return {"n_features": self.n_features,
                "feature_names": list(self.feature_names) if self.feature_names else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.n_features = state["n_features"]
        names = state.get("feature_names")
        self.feature_names = tuple(names) if names else None


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


def _duplicates_in(value: bytes) -> str | None:
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


def _bad_label(label: Any, lim: Limits) -> str | None:
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


def _bad_meta(event_id: Any, ts: Any, lim: Limits, now: float | None) -> str | None:
    """Type and length of id, type of ts; the ts window too when ``now`` is given."""
    if event_id is not None:
        if not isinstance(event_id, str):
            return "id must be a string"
        if lim.max_id_length is not None and len(event_id) > lim.max_id_length:
            return f"id has {len(event_id)} characters > max_id_length {lim.max_id_length}"
    if ts is not None and (isinstance(ts, bool) or not isinstance(ts, (int, float))):
        return "ts must be epoch seconds"
    return None if now is None else _bad_ts(ts, lim, now)


def _bad_ts(ts: float | None, lim: Limits, now: float) -> str | None:
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


def _undecodable(index: int, exc: BaseException) -> Reject:
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
        return _undecodable(index, exc)


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
    label = _bad_label(obj.get("label"), lim)
    if label is not None:
        return Reject(index, BAD_LABEL, label)
    meta = _bad_meta(obj.get("id"), obj.get("ts"), lim, now)
    if meta is not None:
        return Reject(index, BAD_METADATA, meta)
    return Reject(index, NOT_JSON, _short(fast_error))


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "..."
