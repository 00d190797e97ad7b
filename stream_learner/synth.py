"""Synthetic drifting event streams and a rate-limited Kafka producer.

The streams come from :mod:`river.datasets.synth` and are shaped into the daemon's
event contract, one JSON object per Kafka message value::

    {"features": [floats] | {"name": float}, "label": int | str | null,
     "id": "optional string", "ts": epoch-seconds float}

Streams (all factories take ``(seed=42, drift_every=DRIFT_EVERY)``):

``sea``         SEA with an abrupt concept switch (variant 0→1→2→3→0…) every
                ``drift_every`` events; 3 features, labels 0/1.
``hyperplane``  Rotating hyperplane, incremental drift; 10 features, labels 0/1.
``agrawal``     Agrawal with an abrupt switch of classification function (0…9)
                every ``drift_every`` events; 9 features in sorted-name order.
``mixed``       ``sea`` again, but :func:`event_messages` turns about 5 % of the
                messages into malformed ones, cycling through every rejection reason.

Malformed messages are keyed by the exact rejection reason the daemon's strict
decoder reports (see :data:`BAD_REASONS`); each one carries exactly one defect so
that the expected reason is unambiguous whatever order the decoder checks in.
"""

from __future__ import annotations

import itertools
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec
import numpy as np
from river.datasets import synth as river_synth

from .events import MAX_DEPTH

log = logging.getLogger(__name__)

__all__ = [
    "BAD_EVENT_KINDS",
    "BAD_REASONS",
    "DRIFT_EVERY",
    "MAX_EVENT_BYTES",
    "STREAMS",
    "TOO_LARGE_BYTES",
    "ProduceReport",
    "RateLimiter",
    "dim",
    "encode_event",
    "ensure_topics",
    "event_messages",
    "feature_names",
    "make_bad_event",
    "produce",
    "take",
]

DRIFT_EVERY = 25_000
"""Default number of events between abrupt concept switches."""

SEA_NOISE = 0.1
MIXED_BAD_FRACTION = 0.05

MAX_EVENT_BYTES = 1 << 20
"""The daemon's default maximum message size; ``too_large`` events exceed it."""

TOO_LARGE_BYTES = 2 << 20
"""Size of ``too_large`` events: twice the daemon default, so a raised limit still trips."""

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


def _check_drift_every(drift_every: int) -> None:
    if drift_every <= 0:
        raise ValueError(f"drift_every must be positive, got {drift_every}")


def _sea(seed: int = 42, drift_every: int = DRIFT_EVERY) -> Iterator[Sample]:
    """SEA whose threshold (variant 0→1→2→3→0…) switches every ``drift_every`` events."""
    _check_drift_every(drift_every)
    for segment, segment_seed in enumerate(_segment_seeds(seed)):
        gen = river_synth.SEA(variant=segment % 4, noise=SEA_NOISE, seed=segment_seed)
        for x, y in itertools.islice(gen, drift_every):
            yield [x[0], x[1], x[2]], int(y)


def _hyperplane(seed: int = 42, drift_every: int = DRIFT_EVERY) -> Iterator[Sample]:
    """Rotating hyperplane; drift is incremental, so ``drift_every`` is unused."""
    _check_drift_every(drift_every)
    gen = river_synth.Hyperplane(seed=seed, n_features=_HYPERPLANE_DIM, n_drift_features=2,
                                 mag_change=0.001, noise_percentage=0.05, sigma=0.1)
    keys = range(_HYPERPLANE_DIM)
    for x, y in gen:
        yield [x[k] for k in keys], int(y)


def _agrawal(seed: int = 42, drift_every: int = DRIFT_EVERY) -> Iterator[Sample]:
    """Agrawal whose classification function (0…9) switches every ``drift_every`` events."""
    _check_drift_every(drift_every)
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

_DEFAULT_BAD_FRACTION: dict[str, float] = {"mixed": MIXED_BAD_FRACTION}


def _check_name(name: str) -> None:
    if name not in STREAMS:
        raise ValueError(f"unknown stream {name!r}; choose one of {sorted(STREAMS)}")


def feature_names(name: str) -> list[str]:
    """Names of stream ``name``'s features, in the order the feature lists use."""
    _check_name(name)
    return list(_FEATURE_NAMES[name])


def dim(name: str) -> int:
    """Number of features per event of stream ``name``."""
    return len(feature_names(name))


def take(name: str, n: int, seed: int = 42,
         drift_every: int = DRIFT_EVERY) -> tuple[np.ndarray, np.ndarray]:
    """Materialise the first ``n`` events: ``X`` float32 ``[n, d]`` and ``y`` int64 ``[n]``.

    Meant for benchmarks, which should not time river's per-item generator overhead.
    """
    _check_name(name)
    _check_drift_every(drift_every)
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


# --------------------------------------------------------------------------- bad events

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


# --------------------------------------------------------------------------- messages

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
    messages = _messages(name, count, seed=seed, bad_fraction=bad_fraction,
                         unlabeled_fraction=unlabeled_fraction, start_id=start_id,
                         drift_every=drift_every, dict_features=dict_features,
                         bad_reasons=bad_reasons)
    return ((value, reason) for value, reason, _unlabeled in messages)


def _messages(name: str, count: int, *, seed: int, bad_fraction: float | None,
              unlabeled_fraction: float, start_id: int, drift_every: int,
              dict_features: bool, bad_reasons: Sequence[str] | None,
              ) -> Iterator[tuple[bytes, str | None, bool]]:
    """:func:`event_messages`, plus whether each event was made unlabeled.

    Validates eagerly (not on first ``next``), so callers fail before opening sockets.
    """
    _check_name(name)
    if bad_fraction is None:
        bad_fraction = _DEFAULT_BAD_FRACTION.get(name, 0.0)
    _check_fraction("bad_fraction", bad_fraction)
    _check_fraction("unlabeled_fraction", unlabeled_fraction)
    _check_drift_every(drift_every)
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


# --------------------------------------------------------------------------- kafka

class RateLimiter:
    """Paces calls to ``rate`` per second on average (GCRA-style token bucket).

    Each :meth:`acquire` books the next slot on an absolute schedule, so sleep
    overshoot is paid back by later calls instead of drifting the average.  After
    a stall, at most ``burst`` calls go out back to back to catch up.
    """

    def __init__(self, rate: float, burst: float | None = None, *,
                 min_sleep: float = 0.001,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        self.interval = 1.0 / rate
        # Default credit: 50 ms worth of events, never less than one.
        self.burst = max(1.0, rate * 0.05) if burst is None else max(1.0, burst)
        # Sleeping for a few µs costs more than it paces; let small debts accrue.
        self.min_sleep = min_sleep
        self._clock = clock
        self._sleep = sleep
        self._next = clock()

    def acquire(self) -> None:
        """Block until the next call is allowed."""
        now = self._clock()
        ahead = self._next - now
        if ahead >= self.min_sleep:
            self._sleep(ahead)
        elif ahead < 0:
            # Cap banked credit so a long stall does not become a long burst.
            self._next = max(self._next, now - self.burst * self.interval)
        self._next += self.interval


@dataclass
class ProduceReport:
    """Outcome of :func:`produce`.

    ``sent`` counts acknowledged messages; ``failed`` those the producer gave up on
    (so ``sent + failed`` is the number handed to the producer).  ``bad``,
    ``unlabeled`` and ``by_reason`` count what was generated.
    """

    sent: int
    bad: int
    unlabeled: int
    seconds: float
    by_reason: dict[str, int] = field(default_factory=dict)
    failed: int = 0

    @property
    def rate(self) -> float:
        """Achieved messages per second."""
        return self.sent / self.seconds if self.seconds > 0 else 0.0


class _DeliveryTally:
    """Counts delivery outcomes reported from the producer's I/O thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.ok = 0
        self.failed = 0
        self.first_error: BaseException | None = None

    def success(self, _metadata: Any) -> None:
        with self._lock:
            self.ok += 1

    def failure(self, exc: BaseException) -> None:
        with self._lock:
            self.failed += 1
            if self.first_error is None:
                self.first_error = exc


PRODUCER_DEFAULTS: dict[str, Any] = {
    "linger_ms": 5,
    "batch_size": 256 * 1024,
    "acks": 1,
    # Room for the 2 MiB too_large events, with headroom for batch framing.
    "max_request_size": 4 << 20,
}


def produce(bootstrap_servers: str, topic: str, name: str, count: int, *,
            rate: float | None = None, seed: int = 42, partitions: int | None = None,
            bad_fraction: float | None = None, unlabeled_fraction: float = 0.0,
            producer_config: dict[str, Any] | None = None, start_id: int = 0,
            drift_every: int = DRIFT_EVERY, dict_features: bool = False,
            bad_reasons: Sequence[str] | None = None) -> ProduceReport:
    """Send ``count`` events of stream ``name`` to ``topic``; flush, close and report.

    ``rate`` caps events per second on average (``None``: as fast as possible).
    Messages have no key, so the producer spreads them; with ``partitions`` given,
    event ``i`` goes to partition ``i % partitions`` explicitly instead.
    ``producer_config`` overrides :data:`PRODUCER_DEFAULTS` for the KafkaProducer.
    """
    from kafka import KafkaProducer  # deferred: the streams are useful without kafka

    if partitions is not None and partitions < 1:
        raise ValueError(f"partitions must be >= 1, got {partitions}")
    messages = _messages(name, count, seed=seed, bad_fraction=bad_fraction,
                         unlabeled_fraction=unlabeled_fraction, start_id=start_id,
                         drift_every=drift_every, dict_features=dict_features,
                         bad_reasons=bad_reasons)
    limiter = RateLimiter(rate) if rate is not None else None
    tally = _DeliveryTally()
    by_reason: Counter[str] = Counter()
    unlabeled = 0
    config = {**PRODUCER_DEFAULTS, **(producer_config or {})}
    producer = KafkaProducer(bootstrap_servers=bootstrap_servers, **config)
    started = time.monotonic()
    try:
        for i, (value, reason, is_unlabeled) in enumerate(messages):
            if limiter is not None:
                limiter.acquire()
            if reason is not None:
                by_reason[reason] += 1
            unlabeled += is_unlabeled
            partition = i % partitions if partitions is not None else None
            future = producer.send(topic, value=value, partition=partition)
            future.add_callback(tally.success)
            future.add_errback(tally.failure)
        producer.flush()
    finally:
        producer.close()
    seconds = time.monotonic() - started
    if tally.failed:
        log.warning("%d of %d messages to %s failed; first error: %r", tally.failed,
                    tally.ok + tally.failed, topic, tally.first_error)
    report = ProduceReport(sent=tally.ok, bad=sum(by_reason.values()), unlabeled=unlabeled,
                           seconds=seconds, by_reason=dict(by_reason), failed=tally.failed)
    log.info("produced %d %s events to %s in %.2fs (%.0f/s, %d bad, %d unlabeled)",
             report.sent, name, topic, seconds, report.rate, report.bad, unlabeled)
    return report


def ensure_topics(bootstrap_servers: str, topics: Mapping[str, int], *,
                  timeout_ms: int = 10_000) -> None:
    """Create each ``topic → partitions`` (replication factor 1) unless it exists."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=timeout_ms)
    try:
        # One request per topic: a batch fails as a whole if any one already exists.
        for topic, num_partitions in topics.items():
            try:
                admin.create_topics([NewTopic(topic, num_partitions=num_partitions,
                                              replication_factor=1)], timeout_ms=timeout_ms)
            except TopicAlreadyExistsError:
                log.debug("topic %s already exists", topic)
    finally:
        admin.close()
