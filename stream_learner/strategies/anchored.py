"""What EWC and MAS share: a quadratic pull towards anchored parameters.

Both keep, per parameter name, an ``importance`` and an ``anchor`` and add
``strength * sum_i importance_i * (theta_i - anchor_i) ** 2`` to the loss; both estimate
the importance at a consolidation from the new events of the last few applied steps
(:class:`RecentBatches`, :func:`mean_grad_power`).  They differ only in the objective
whose gradients give the importance and in how old and new importance merge.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from ..finite import step_is_finite
from .base import PluginBase, Step, fit_rows


class RecentBatches:
    """The new events of the last ``size`` applied steps (a ring of raw ``(x, y)``)."""

    def __init__(self, size: int, device: torch.device | None = None) -> None:
        self.size = size
        self.device = device
        self.items: list[tuple[torch.Tensor, torch.Tensor]] = []

    def add(self, step: Step) -> None:
        if step.n_new == 0:
            return
        # Cloned: x may be a view of a caller's numpy buffer, or keep a larger tensor alive.
        self.items.append((step.x[: step.n_new].detach().clone(),
                           step.y[: step.n_new].detach().clone()))
        del self.items[: -self.size]

    def state_dict(self) -> list[dict[str, torch.Tensor]]:
        return [{"x": x.cpu(), "y": y.cpu()} for x, y in self.items]

    def load_state_dict(self, state: list[dict[str, torch.Tensor]]) -> None:
        self.items = [(b["x"].to(self.device), b["y"].to(self.device)) for b in state]


def mean_grad_power(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]],
                         loss_of: Any, power: int) -> dict[str, torch.Tensor]:
    """Mean over batches of ``|d loss_of(model(x), y) / d theta| ** power``, per parameter.

    Batches whose gradient is not finite are left out (a poisoned event must not poison
    the importance for good); ``p.grad`` is not touched (torch.autograd.grad).
    """
    named = [(k, p) for k, p in model.named_parameters() if p.requires_grad]
    total = {k: torch.zeros_like(p) for k, p in named}
    used = 0
    for x, y in batches:
        with torch.enable_grad():   # a drift hook may call in from under no_grad
            loss = loss_of(model(x), y)
            grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
        grads = [torch.zeros_like(p) if g is None else g for (_, p), g in zip(named, grads)]
        if not step_is_finite(loss, grads):
            continue
        for (k, _), g in zip(named, grads):
            total[k] += g.abs() if power == 1 else g.pow(power)
        used += 1
    return {k: t / max(used, 1) for k, t in total.items()}


class AnchoredPenalty(PluginBase):
    """Importance-weighted quadratic penalty; subclasses define :meth:`merge`."""

    def __init__(self, strength: float, batches: int, device: torch.device | None = None) -> None:
        self.strength = strength
        self.device = device
        self.recent = RecentBatches(batches, device)
        self.importance: dict[str, torch.Tensor] = {}
        self.anchor: dict[str, torch.Tensor] = {}

    def penalty(self, step: Step) -> torch.Tensor | None:
        if not self.importance or self.strength == 0:
            return None
        terms = []
        for k, p in step.model.named_parameters():
            if k not in self.importance:
                continue    # a parameter born after the last consolidation
            if self.importance[k].shape != p.shape:   # the head grew: re-fit once
                self.importance[k] = fit_rows(self.importance[k], p.detach())
                self.anchor[k] = fit_rows(self.anchor[k], p.detach())
            terms.append((self.importance[k] * (p - self.anchor[k]).pow(2)).sum())
        return self.strength * torch.stack(terms).sum() if terms else None

    def after_step(self, step: Step) -> None:
        self.recent.add(step)

    def anchor_at(self, model: nn.Module, new: dict[str, torch.Tensor],
                  merge: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
        """Merge ``new`` importance into the old (``merge(old, new)``) and re-anchor."""
        for k, p in model.named_parameters():
            if k in new:
                old = self.importance.get(k)
                merged = new[k] if old is None else merge(fit_rows(old, p), new[k])
                self.importance[k] = merged.detach()
                self.anchor[k] = p.detach().clone()

    def state_dict(self) -> dict[str, Any]:
        return {"importance": {k: v.cpu() for k, v in self.importance.items()},
                "anchor": {k: v.cpu() for k, v in self.anchor.items()},
                "recent": self.recent.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.importance = {k: v.to(self.device) for k, v in state["importance"].items()}
        self.anchor = {k: v.to(self.device) for k, v in state["anchor"].items()}
        self.recent.load_state_dict(state["recent"])
