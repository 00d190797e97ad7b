"""A real daemon checkpoint state without Kafka: a Learner that learned a drifting
stream (so its drift detectors hold state) plus the decoder, metrics and counters, laid
out as ``Daemon.state_dict`` lays them out.  Shared by the checkpoint security and fuzz
tests."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from stream_learner.config import Settings
from stream_learner.daemon import Counters
from stream_learner.evaluation import PrequentialAccuracy, RollingMean
from stream_learner.events import EventDecoder
from stream_learner.learner import Learner
from stream_learner.lineage import Lineage

SETTINGS = {"kafka": {"bootstrap_servers": "localhost:1"},
            "model": {"device": "cpu", "hidden": (16,), "step_size": 64, "max_step_size": 64},
            "probes": {"per_class": 0},
            "drift": {"warmup_events": 200, "input_detector": "kswin"}}


def settings() -> Settings:
    return Settings(**SETTINGS)


def daemon_state(events: int = 1500, seed: int = 0) -> dict[str, Any]:
    s = settings()
    learner = Learner(s)
    rng = np.random.default_rng(seed)
    for i in range(0, events, 64):
        x = rng.normal(size=(64, 4)).astype(np.float32)
        flip = i >= events // 2                      # a drift halfway
        y = ((x[:, 0] + 0.5 * x[:, 1] > 0) ^ flip).astype(int).tolist()
        learner.observe(learner.to_tensor(x), learner.encode_labels(y))
    decoder = EventDecoder(None, None, s.kafka.max_event_bytes)
    decoder.n_features = 4
    return state_of(s, learner, decoder, events)


def state_of(s: Settings, learner: Learner, decoder: EventDecoder, events: int) -> dict[str, Any]:
    """``Daemon.state_dict``'s layout around a trained learner."""
    return {"version": "test", "created": time.time(), "learner": learner.state_dict(),
            "decoder": decoder.state_dict(),
            "accuracy": PrequentialAccuracy(s.metrics.rolling_window).state_dict(),
            "loss": RollingMean(half_life=s.metrics.rolling_window).state_dict(),
            "counters": Counters().state_dict(), "offsets": {"events": {0: events}},
            "lineage": Lineage().state_dict()}
