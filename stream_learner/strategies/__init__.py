"""Update strategies behind one protocol; ``make_strategy`` builds one from settings."""

from __future__ import annotations

from ..config import Settings
from .base import Batch, Plugin, PluginBase, Step, Strategy, StrategyBase, Trainable, UpdateStats
from .continual import META_NAMES, PLUGIN_NAMES, Continual
from .naive import Naive
from .replay import Replay

__all__ = ["Batch", "Continual", "META_NAMES", "PLUGIN_NAMES", "Naive", "Plugin", "PluginBase", "Replay", "Step", "Strategy", "StrategyBase", "Trainable",
           "UpdateStats", "make_strategy", "STRATEGIES"]

STRATEGIES = ("naive", "replay", "continual")


def make_strategy(settings: Settings, learner: Trainable) -> Strategy:
    name = settings.strategy.name
    if name == "naive":
        return Naive(learner)
    if name == "replay":
        return Replay(learner, settings.replay.capacity, settings.replay.batch_size,
                      seed=settings.model.seed)
    if name == "continual":
        return Continual(learner, settings)
    if name.startswith("avalanche:"):
        from .avalanche_backend import build as build_avalanche
        return build_avalanche(settings, learner, name.removeprefix("avalanche:"))
    raise ValueError(f"unknown strategy {name!r}; choose one of {STRATEGIES}")
