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
from dataclasses import dataclass, field
from typing import Any, Sequence

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

REJECT_REASONS: tuple[str, ...] = (
    NOT_JSON, NOT_OBJECT, MISSING_FEATURES, EMPTY_FEATURES, WRONG_LENGTH,
    FEATURE_NAMES_MISMATCH, NON_NUMERIC, NON_FINITE, TOO_LARGE, BAD_LABEL, BAD_METADATA)

# Not decided here: the learner refuses a label that would add a class beyond
# model.max_classes, and the daemon dead-letters that event with this reason.
TOO_MANY_CLASSES = "too_many_classes"
# Every reason a DLQ record can carry (the decoder's and the learner's).
DLQ_REASONS: tuple[str, ...] = REJECT_REASONS + (TOO_MANY_CLASSES,)

Label = int | str
_FLOAT32_MAX = float(np.finfo(np.float32).max)


class _Event(msgspec.Struct):
    features: list[float] | dict[str, float]
    label: int | str | None = None
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
                 max_bytes: int = 1_048_576) -> None:
        self.feature_names: tuple[str, ...] | None = tuple(feature_names) if feature_names else None
        self.n_features = n_features or (len(self.feature_names) if self.feature_names else None)
        self.max_bytes = max_bytes

    def decode(self, values: Sequence[bytes | None]) -> DecodedBatch:
        rejects: list[Reject] = []
        events: list[_Event] = []
        index: list[int] = []
        for i, value in enumerate(values):
            if value is None:
                rejects.append(Reject(i, NOT_JSON, "message value is null (tombstone)"))
                continue
            if len(value) > self.max_bytes:
                rejects.append(Reject(i, TOO_LARGE,
                                      f"{len(value)} bytes > max_event_bytes {self.max_bytes}"))
                continue
            try:
                events.append(_DECODER.decode(value))
                index.append(i)
            except (msgspec.DecodeError, UnicodeDecodeError) as exc:
                rejects.append(classify(i, value, str(exc)))
        rows = [self._row(e) for e in events]
        keep, x = self._to_matrix(rows, index, rejects)
        kept = [events[k] for k in keep]
        rejects.sort(key=lambda r: r.index)
        return DecodedBatch(
            x=x,
            labels=[e.label for e in kept],
            ids=[e.id for e in kept],
            ts=np.array([np.nan if e.ts is None else e.ts for e in kept], dtype=np.float64),
            index=np.asarray([index[k] for k in keep], dtype=np.int64),
            rejects=rejects)

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


def classify(index: int, value: bytes, fast_error: str) -> Reject:
    """Name the reason a message failed the strict fast-path decode."""
    try:
        obj = json.loads(value, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        return Reject(index, NOT_JSON, _short(str(exc)))
    if not isinstance(obj, dict):
        return Reject(index, NOT_OBJECT, f"top-level JSON is {type(obj).__name__}, not an object")
    if "features" not in obj:
        return Reject(index, MISSING_FEATURES, "no 'features' field")
    feats = obj["features"]
    items = list(feats.values()) if isinstance(feats, dict) else feats
    if not isinstance(items, list):
        return Reject(index, NON_NUMERIC, f"features is {type(feats).__name__}")
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (int, float)):
            return Reject(index, NON_NUMERIC, f"feature value {_short(repr(item))} is not a number")
        if abs(item) > _FLOAT32_MAX:   # also JSON integers beyond float64 (no OverflowError)
            return Reject(index, NON_FINITE, "a feature is out of range or infinite")
    label = obj.get("label")
    if label is not None and (isinstance(label, bool) or not isinstance(label, (int, str))):
        return Reject(index, BAD_LABEL, f"label must be int, string or null, "
                                        f"got {type(label).__name__}")
    if "id" in obj and obj["id"] is not None and not isinstance(obj["id"], str):
        return Reject(index, BAD_METADATA, "id must be a string")
    ts = obj.get("ts")
    if ts is not None and (isinstance(ts, bool) or not isinstance(ts, (int, float))):
        return Reject(index, BAD_METADATA, "ts must be epoch seconds")
    return Reject(index, NOT_JSON, _short(fast_error))


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "..."
