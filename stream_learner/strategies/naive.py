"""Plain incremental steps on the new events only (the baseline; it forgets)."""

from __future__ import annotations

from typing import Any

import torch

from .base import Batch, StrategyBase, Trainable, UpdateStats


class Naive(StrategyBase):
    name = "naive"

    def __init__(self, learner: Trainable) -> None:
        super().__init__()
        self.learner = learner

    def update(self, batch: Batch) -> UpdateStats:
        losses = [self.learner.step(c.x, c.y) for c in batch.chunks(self.learner.step_size)]
        return UpdateStats(loss=float(torch.stack(losses).mean()) if losses else 0.0,
                           steps=len(losses))

    def memory_events(self) -> int:
        return 0

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
