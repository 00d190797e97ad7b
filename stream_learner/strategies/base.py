"""The one interface every update strategy implements, and what it may call back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch


@dataclass(frozen=True)
class Batch:
    """Labeled events on the model's device: features [n, d] float32, classes [n] int64."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def chunks(self, size: int) -> list["Batch"]:
        return [Batch(self.x[i:i + size], self.y[i:i + size]) for i in range(0, len(self), size)]


@dataclass(frozen=True)
class UpdateStats:
    loss: float          # mean training loss over the steps of this update
    steps: int           # gradient steps taken
    replayed: int = 0    # replayed events mixed in

    @staticmethod
    def combine(parts: "list[UpdateStats]") -> "UpdateStats":
        """One stats record for several updates (loss weighted by steps)."""
        steps = sum(p.steps for p in parts)
        loss = sum(p.loss * p.steps for p in parts) / steps if steps else 0.0
        return UpdateStats(loss=loss, steps=steps, replayed=sum(p.replayed for p in parts))


class Trainable(Protocol):
    """What a strategy needs from the learner: one gradient step and the step size."""

    device: torch.device
    step_size: int

    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One optimiser step on (x, y); returns the detached loss."""


@runtime_checkable
class Strategy(Protocol):
    """update, state_dict, load_state_dict: nothing else is required of a strategy."""

    name: str

    def update(self, batch: Batch) -> UpdateStats: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...
