"""Experience replay: every step mixes new events with a sample of a reservoir."""

from __future__ import annotations

from typing import Any

import torch

from ..memory import ReservoirBuffer
from .base import Batch, StrategyBase, Trainable, UpdateStats


class Replay(StrategyBase):
    name = "replay"

    def __init__(self, learner: Trainable, capacity: int, replay_batch_size: int,
                 seed: int = 0) -> None:
        super().__init__()
        self.learner = learner
        self.replay_batch_size = replay_batch_size
        self.buffer = ReservoirBuffer(capacity, learner.device, seed=seed)

    def update(self, batch: Batch) -> UpdateStats:
        losses, replayed = [], 0
        passes = self.learner.passes
        for chunk in batch.chunks(self.learner.step_size):
            # Repeated steps only with something to mix in: one chunk alone, stepped on
            # again and again, is memorised rather than learned.
            for _ in range(passes if len(self.buffer) else 1):
                x, y = chunk.x, chunk.y
                if len(self.buffer):
                    rx, ry = self.buffer.sample(self.replay_batch_size)
                    x, y = torch.cat([x, rx]), torch.cat([y, ry])
                    replayed += rx.shape[0]
                losses.append(self.learner.step(x, y))
            # Added after the step so a chunk never replays itself.
            self.buffer.add(chunk.x, chunk.y)
        return UpdateStats(loss=float(torch.stack(losses).mean()) if losses else 0.0,
                           steps=len(losses), replayed=replayed)

    def memory_events(self) -> int:
        return len(self.buffer)

    def clear_memory(self) -> None:
        self.buffer.clear()

    def state_dict(self) -> dict[str, Any]:
        return {"buffer": self.buffer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.buffer.load_state_dict(state["buffer"])
