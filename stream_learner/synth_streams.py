"""The synthetic streams themselves: river's generators shaped into drifting streams of
``(features in fixed order, label)``, their feature names, and one event's encoding.

Apart from :mod:`~stream_learner.synth` (the facade) so a benchmark that only wants
arrays (:func:`take`) reads just this; the message mix is
:mod:`~stream_learner.synth_messages`.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol

import msgspec
import numpy as np
from river.datasets import synth as river_synth

DRIFT_EVERY = 25_000
"""Default number of events between abrupt concept switches."""

SEA_NOISE = 0.1
MIXED_BAD_FRACTION = 0.05

Label = int | str
Features = Sequence[float] | Mapping[str, float]
Sample = tuple[list[float], int]


class StreamFactory(Protocol):
    """Builds an endless iterator of ``(features in fixed order, label)``."""

    def __call__(self, seed: int = 42, drift_every: int = DRIFT_EVERY) -> Iterator[Sample]: ...


# --------------------------------------------------------------------------- streams

_AGRAWAL_FEATURES = ("age", "car", "commission", "elevel", "hvalue", "hyears",
                     "loan", "salary", "zipcode")
_HYPERPLANE_DIM = 10


def _segment_seeds(seed: int) -> Iterator[int]:
    """Fresh seeds per drift segment, so neighbouring ``seed`` values never share data."""
    rng = random.Random(seed)
    while True:
        yield rng.randrange(2**31)


def check_drift_every(drift_every: int) -> None:
    if drift_every <= 0:
        raise ValueError(f"drift_every must be positive, got {drift_every}")


def _sea(seed: int = 42, drift_every: int = DRIFT_EVERY) -> Iterator[Sample]:
    """SEA whose threshold (variant 0→1→2→3→0…) switches every ``drift_every`` events."""
    check_drift_every(drift_every)
    for segment, segment_seed in enumerate(_segment_seeds(seed)):
        gen = river_synth.SEA(variant=segment % 4, noise=SEA_NOISE, seed=segment_seed)
        for x, y in itertools.islice(gen, drift_every):
            yield [x[0], x[1], x[2]], int(y)


def _hyperplane(seed: int = 42, drift_every: int = DRIFT_EVERY) -> Iterator[Sample]:
    """Rotating hyperplane; drift is incremental, so ``drift_every`` is unused."""
    check_drift_every(drift_every)
    gen = river_synth.Hyperplane(seed=seed, n_features=_HYPERPLANE_DIM, n_drift_features=2,
                                 mag_change=0.001, noise_percentage=0.05, sigma=0.1)
    keys = range(_HYPERPLANE_DIM)
    for x, y in gen:
        yield [x[k] for k in keys], int(y)


def _agrawal(seed: int = 42, drift_every: int = DRIFT_EVERY) -> Iterator[Sample]:
    """Agrawal whose classification function (0…9) switches every ``drift_every`` events."""
    check_drift_every(drift_every)
    for segment, segment_seed in enumerate(_segment_seeds(seed)):
        gen = river_synth.Agrawal(classification_function=segment % 10, seed=segment_seed,
                                  balance_classes=False, perturbation=0.0)
        for x, y in itertools.islice(gen, drift_every):
            # Agrawal's categorical columns arrive as ints; the contract wants floats.
            yield [float(x[k]) for k in _AGRAWAL_FEATURES], int(y)


STREAMS: dict[str, StreamFactory] = {
    "sea": _sea,
    "hyperplane": _hyperplane,
    "agrawal": _agrawal,
    # The malformed 5 % are injected at the message level by event_messages().
    "mixed": _sea,
}

_FEATURE_NAMES: dict[str, tuple[str, ...]] = {
    "sea": ("x0", "x1", "x2"),
    "hyperplane": tuple(f"x{i}" for i in range(_HYPERPLANE_DIM)),
    "agrawal": _AGRAWAL_FEATURES,
    "mixed": ("x0", "x1", "x2"),
}

DEFAULT_BAD_FRACTION: dict[str, float] = {"mixed": MIXED_BAD_FRACTION}


def check_name(name: str) -> None:
    if name not in STREAMS:
        raise ValueError(f"unknown stream {name!r}; choose one of {sorted(STREAMS)}")


def feature_names(name: str) -> list[str]:
    """Names of stream ``name``'s features, in the order the feature lists use."""
    check_name(name)
    return list(_FEATURE_NAMES[name])


def dim(name: str) -> int:
    """Number of features per event of stream ``name``."""
    return len(feature_names(name))


def take(name: str, n: int, seed: int = 42,
         drift_every: int = DRIFT_EVERY) -> tuple[np.ndarray, np.ndarray]:
    """Materialise the first ``n`` events: ``X`` float32 ``[n, d]`` and ``y`` int64 ``[n]``.

    Meant for benchmarks, which should not time river's per-item generator overhead.
    """
    check_name(name)
    check_drift_every(drift_every)
    X = np.empty((n, dim(name)), dtype=np.float32)
    y = np.empty(n, dtype=np.int64)
    for i, (features, label) in enumerate(itertools.islice(STREAMS[name](seed, drift_every), n)):
        X[i] = features
        y[i] = label
    return X, y


# --------------------------------------------------------------------------- encoding

_encoder = msgspec.json.Encoder()


def encode_event(features: Features, label: Label | None, *, event_id: str | None = None,
                 ts: float | None = None) -> bytes:
    """Encode one contract event as compact UTF-8 JSON.

    ``label=None`` gives an unlabeled event (``"label": null``); ``id`` and ``ts`` are
    omitted when ``None``.  Values are coerced to ``float`` because numpy scalars
    (float32 in particular) are not JSON-encodable as they are.
    """
    feats: list[float] | dict[str, float]
    if isinstance(features, Mapping):
        feats = {str(k): float(v) for k, v in features.items()}
    else:
        feats = [float(v) for v in features]
    event: dict[str, Any] = {"features": feats, "label": label}
    if event_id is not None:
        event["id"] = event_id
    if ts is not None:
        event["ts"] = ts
    return _encoder.encode(event)
