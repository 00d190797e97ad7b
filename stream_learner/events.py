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

import math
import time
from typing import Annotated, Any, Callable, Sequence

import msgspec
import numpy as np

# The vocabulary and the slow path live beside this module; every name is re-exported,
# so `from stream_learner.events import REJECT_REASONS, classify, ...` keeps working.
from .event_checks import (bad_label, bad_meta, bad_ts, classify, duplicates_in,
                           nesting_depth, undecodable)
from .event_contract import (BAD_LABEL, BAD_METADATA, DLQ_REASONS, DUPLICATE_FEATURE,
                             DUPLICATE_LABEL, EMPTY_FEATURES, FEATURE_NAMES_MISMATCH,
                             JOIN_REASONS, LABEL_EXPIRED, MAX_DEPTH, MISSING_FEATURES,
                             NON_FINITE, NON_NUMERIC, NOT_JSON, NOT_OBJECT, OUT_OF_RANGE,
                             REJECT_REASONS, TOO_DEEP, TOO_LARGE, TOO_MANY_CLASSES,
                             UNDECODABLE, UNKNOWN_ID, WRONG_LENGTH, DecodedBatch, Label,
                             Limits, Reject)

__all__ = ["BAD_LABEL", "BAD_METADATA", "DLQ_REASONS", "DUPLICATE_FEATURE", "DUPLICATE_LABEL",
           "EMPTY_FEATURES", "FEATURE_NAMES_MISMATCH", "JOIN_REASONS", "LABEL_EXPIRED",
           "MAX_DEPTH", "MISSING_FEATURES", "NON_FINITE", "NON_NUMERIC", "NOT_JSON",
           "NOT_OBJECT", "OUT_OF_RANGE", "REJECT_REASONS", "TOO_DEEP", "TOO_LARGE",
           "TOO_MANY_CLASSES", "UNDECODABLE", "UNKNOWN_ID", "WRONG_LENGTH", "DecodedBatch",
           "EventDecoder", "Label", "Limits", "Reject", "bad_label", "bad_meta", "bad_ts",
           "classify", "duplicates_in", "nesting_depth", "undecodable"]

# msgspec checks the 64-bit bound in C; a failure goes to classify(), which says bad_label.
_Int64 = Annotated[int, msgspec.Meta(ge=-2 ** 63, le=2 ** 63 - 1)]


class _Event(msgspec.Struct):
    features: list[float] | dict[str, float]
    label: _Int64 | str | None = None
    id: str | None = None
    ts: float | None = None


_DECODER = msgspec.json.Decoder(_Event)


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
                    dup = duplicates_in(value)
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
                rejects.append(undecodable(i, exc))
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
                 BAD_LABEL, lambda k: bad_label(labels[k], lim) or "")
        if lim.max_id_length is not None and longest > lim.max_id_length:
            cap_id = lim.max_id_length
            flag([k for k, v in enumerate(ids) if v is not None and len(v) > cap_id],
                 BAD_METADATA, lambda k: bad_meta(ids[k], None, lim, None) or "")
        if lim.max_event_age_seconds is not None or lim.max_event_future_seconds is not None:
            now = self.clock()
            with np.errstate(invalid="ignore"):
                out = ((ts < now - (lim.max_event_age_seconds or math.inf))
                       | (ts > now + (lim.max_event_future_seconds or math.inf)))
            flag(np.flatnonzero(out), BAD_METADATA,
                 lambda k: bad_ts(float(ts[k]), lim, now) or "")
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
