"""The event contract's vocabulary: every reject reason a DLQ record can carry, the
policy limits, and the shapes a decode returns (valid rows as one matrix, rejects by
index).

Apart from the decoder so the modules that only name reasons or read a decoded batch
(the sink, the label join, the metrics) need neither msgspec nor the slow path.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
