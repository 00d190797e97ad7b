"""Update strategies behind one protocol; ``make_strategy`` builds one from settings."""

from __future__ import annotations

from ..config import Settings
from .base import Batch, Strategy, Trainable, UpdateStats
from .naive import Naive
from .replay import Replay

__all__ = ["Batch", "Naive", "Replay", "Strategy", "Trainable", "UpdateStats", "make_strategy",
           "STRATEGIES"]

STRATEGIES = ("naive", "replay")


def make_strategy(settings: Settings, learner: Trainable) -> Strategy:
    name = settings.strategy.name
    if name == "naive":
        return Naive(learner)
    if name == "replay":
        return Replay(learner, settings.replay.capacity, settings.replay.batch_size,
                      seed=settings.model.seed)
    raise ValueError(f"unknown strategy {name!r}; choose one of {STRATEGIES}")
