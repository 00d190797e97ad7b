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

The parts: :mod:`~stream_learner.synth_streams` (the streams, feature names, encoding),
:mod:`~stream_learner.synth_bad` (malformed messages), :mod:`~stream_learner.synth_messages`
(the mix) and :mod:`~stream_learner.synth_kafka` (producer, topics); this module names
them all, so ``from stream_learner.synth import ...`` and ``synth.<name>`` keep working.
"""

from __future__ import annotations

from .synth_bad import (BAD_EVENT_KINDS, BAD_REASONS, MAX_EVENT_BYTES, TOO_LARGE_BYTES,
                        BadEventBuilder, make_bad_event)
from .synth_kafka import PRODUCER_DEFAULTS, ProduceReport, RateLimiter, ensure_topics, produce
from .synth_messages import event_messages
from .synth_streams import (DRIFT_EVERY, MIXED_BAD_FRACTION, SEA_NOISE, STREAMS, Features,
                            Label, Sample, StreamFactory, dim, encode_event, feature_names,
                            take)

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
