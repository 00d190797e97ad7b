"""The one interface every update strategy implements, and what it may call back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence, runtime_checkable

import torch
from torch import nn


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


@dataclass
class Step:
    """One gradient step, as every plugin hook sees it.

    ``x``/``y`` hold the new events first (``n_new`` of them), then replayed ones.
    ``logits`` is set once the forward pass ran; ``memory`` is the replay buffer, if any
    (A-GEM draws its reference sample there).
    """

    model: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    n_new: int
    logits: torch.Tensor | None = None
    memory: Any = None


class Plugin(Protocol):
    """Lifecycle hooks around a gradient step (Avalanche-style, without the subclass tree).

    Subclass :class:`PluginBase` to get no-op defaults and implement only what you need.
    Hooks run in the order the plugins are configured.
    """

    name: str

    def penalty(self, step: Step) -> torch.Tensor | None:
        """A term added to the loss (EWC, SI, MAS, LwF); None adds nothing."""

    def after_backward(self, step: Step) -> None:
        """Gradients are in ``p.grad``; may rewrite them (A-GEM projects)."""

    def after_step(self, step: Step) -> None:
        """The optimiser moved the parameters (SI accumulates its path integral)."""

    def consolidate(self, model: nn.Module) -> None:
        """A task boundary in a task-free stream: freeze what matters so far."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class PluginBase:
    """No-op hooks; a plugin overrides the ones it needs."""

    name = "plugin"

    def penalty(self, step: Step) -> torch.Tensor | None:
        return None

    def after_backward(self, step: Step) -> None:
        pass

    def after_step(self, step: Step) -> None:
        pass

    def consolidate(self, model: nn.Module) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class Trainable(Protocol):
    """What a strategy needs from the learner (its hooks): one gradient step, the step
    size, and the declared knobs strategies read (no attribute probing)."""

    device: torch.device
    step_size: int
    model: nn.Module | None
    loss_fn: Any            # the training loss, looked up per step (it may be swapped)

    @property
    def passes(self) -> int:
        """Gradient steps per new chunk (replay: more while the model is young)."""

    @property
    def lr_factor(self) -> float:
        """Multiplier on the learning rate (drift adaptation); 1.0 normally."""

    @property
    def penalty_scale(self) -> float:
        """Multiplier on the plugins' penalties (drift adaptation); 1.0 normally."""

    def note_skipped_step(self) -> None:
        """A step was dropped by the finiteness guard: count it."""

    def proximal_anchor(self) -> dict[str, torch.Tensor] | None:
        """The federated proximal anchor (parameter name -> tensor), or None."""

    def step(self, x: torch.Tensor, y: torch.Tensor, n_new: int | None = None,
             plugins: "Sequence[Plugin]" = (), memory: Any = None) -> torch.Tensor:
        """One optimiser step on (x, y) with the plugins' hooks; returns the detached loss."""


@runtime_checkable
class Strategy(Protocol):
    """update, memory_events, state_dict, load_state_dict: all a strategy must provide."""

    name: str

    def update(self, batch: Batch) -> UpdateStats: ...

    def memory_events(self) -> int:
        """Events held in its replay memory (0 without one): the replay-buffer gauge."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    # Optional capabilities, declared (defaults in StrategyBase) instead of probed:
    consolidations: dict[str, int]

    def consolidate(self, reason: str = "manual") -> bool:
        """A task boundary: freeze what matters so far; True if it did anything."""

    def clear_memory(self) -> None:
        """Drop the replay memory (drift adaptation "reset")."""


class StrategyBase:
    """Defaults for a strategy's optional capabilities: no consolidation, no memory."""

    name = "strategy"
    consolidations: dict[str, int]

    def __init__(self) -> None:
        self.consolidations = {}

    def consolidate(self, reason: str = "manual") -> bool:
        return False

    def clear_memory(self) -> None:
        pass


def fit_rows(saved: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``saved`` reshaped to ``like``'s rows: a class head that grew gets zero rows.

    Per-parameter state (EWC's Fisher, SI's anchors, learned LRs) is keyed by parameter
    *name*: when the head grows, ``model.head`` is a new tensor with more rows, and the
    rows of classes that did not exist then carry no importance.

    >>> fit_rows(torch.ones(2, 3), torch.zeros(4, 3)).tolist()
    [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
    """
    if saved.shape == like.shape:
        return saved
    out = torch.zeros_like(like)
    rows = min(saved.shape[0], like.shape[0])
    out[:rows] = saved[:rows].to(like.device, like.dtype)
    return out
