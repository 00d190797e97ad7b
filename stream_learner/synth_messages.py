"""The message mix: a stream's events as Kafka message values, with malformed and
unlabeled ones spread evenly among them, each with the reject reason it should get.

Apart from the streams and the producer: both the producer
(:mod:`~stream_learner.synth_kafka`) and the tests' accounting read this sequence.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator, Sequence

from .synth_bad import BAD_REASONS, make_bad_event
from .synth_streams import (DEFAULT_BAD_FRACTION, DRIFT_EVERY, STREAMS, Features,
                            check_drift_every, check_name, dim, encode_event,
                            feature_names)


def _check_fraction(what: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{what} must be within [0, 1], got {value}")


def _due(i: int, fraction: float) -> bool:
    """Whether position ``i`` is one of the evenly spread ``fraction`` share.

    Deterministic spacing gives exact counts, so short runs still see every reason.
    """
    return int((i + 1) * fraction) > int(i * fraction)


def event_messages(name: str, count: int, *, seed: int = 42, bad_fraction: float | None = None,
                   unlabeled_fraction: float = 0.0, start_id: int = 0,
                   drift_every: int = DRIFT_EVERY, dict_features: bool = False,
                   bad_reasons: Sequence[str] | None = None,
                   ) -> Iterator[tuple[bytes, str | None]]:
    """Yield ``(message value, expected reject reason or None)`` for ``count`` events.

    Event ``i`` has id ``str(start_id + i)`` and ``ts`` = generation time.  A bad
    event replaces stream item ``i`` rather than being inserted, so ids stay aligned
    with stream positions (and with drift points).  Bad events cycle through
    ``bad_reasons`` (default: all of :data:`BAD_REASONS`; leave out ``too_large``
    for long runs, each one is 2 MiB).  ``bad_fraction`` defaults to 5 % for
    ``mixed`` and 0 otherwise; ``unlabeled_fraction`` is a share of the *valid*
    events, which get ``"label": null``.  ``dict_features`` emits
    ``{"name": value}`` objects instead of lists.
    """
    messages = tagged_messages(name, count, seed=seed, bad_fraction=bad_fraction,
                         unlabeled_fraction=unlabeled_fraction, start_id=start_id,
                         drift_every=drift_every, dict_features=dict_features,
                         bad_reasons=bad_reasons)
    return ((value, reason) for value, reason, _unlabeled in messages)


def tagged_messages(name: str, count: int, *, seed: int, bad_fraction: float | None,
              unlabeled_fraction: float, start_id: int, drift_every: int,
              dict_features: bool, bad_reasons: Sequence[str] | None,
              ) -> Iterator[tuple[bytes, str | None, bool]]:
    """:func:`event_messages`, plus whether each event was made unlabeled.

    Validates eagerly (not on first ``next``), so callers fail before opening sockets.
    """
    check_name(name)
    if bad_fraction is None:
        bad_fraction = DEFAULT_BAD_FRACTION.get(name, 0.0)
    _check_fraction("bad_fraction", bad_fraction)
    _check_fraction("unlabeled_fraction", unlabeled_fraction)
    check_drift_every(drift_every)
    reasons = tuple(bad_reasons) if bad_reasons is not None else BAD_REASONS
    if bad_fraction and (not reasons or not set(reasons) <= set(BAD_REASONS)):
        raise ValueError(f"bad_reasons must be a non-empty subset of {BAD_REASONS}")
    return _generate(name, count, seed, bad_fraction, unlabeled_fraction, start_id,
                     drift_every, dict_features, reasons)


def _generate(name: str, count: int, seed: int, bad_fraction: float,
              unlabeled_fraction: float, start_id: int, drift_every: int,
              dict_features: bool, reasons: tuple[str, ...],
              ) -> Iterator[tuple[bytes, str | None, bool]]:
    d = dim(name)
    names = feature_names(name)
    # A separate generator, so bad-event variants never perturb the stream itself.
    bad_rng = random.Random(f"bad-events-{seed}")
    n_bad = n_good = 0
    stream = STREAMS[name](seed, drift_every)
    for i, (features, label) in zip(range(count), stream):
        event_id = str(start_id + i)
        ts = time.time()
        if _due(i, bad_fraction):
            reason = reasons[n_bad % len(reasons)]
            n_bad += 1
            yield make_bad_event(reason, d, bad_rng, event_id=event_id, ts=ts), reason, False
            continue
        unlabeled = _due(n_good, unlabeled_fraction)
        n_good += 1
        feats: Features = dict(zip(names, features)) if dict_features else features
        value = encode_event(feats, None if unlabeled else label, event_id=event_id, ts=ts)
        yield value, None, unlabeled
