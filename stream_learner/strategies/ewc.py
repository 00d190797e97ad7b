"""``ewc``: online Elastic Weight Consolidation (Schwarz et al. 2018; Avalanche ``mode="online"``).

EWC keeps parameters that mattered for past data near where they were, weighting each
by a diagonal Fisher estimate::

    loss += strength * sum_i F_i * (theta_i - theta*_i) ** 2

A task-free stream has no "end of experience" pass over a task's dataset, so:

* during learning, :meth:`EWC.after_step` keeps the new events of the last
  ``ewc.fisher_batches`` gradient steps that were actually applied (a small ring of
  raw inputs and classes; a skipped NaN step adds nothing);
* at a consolidation (new class, every K events, drift) the Fisher diagonal of the
  just-finished "task" is estimated on that ring **at the current parameters**, exactly
  as Avalanche's ``EWCPlugin.compute_importances`` does over a dataset: the mean over
  batches of the squared mini-batch gradient of the cross-entropy.  Then, as in online
  EWC, ``F = decay * F_old + F_new`` and the anchor ``theta*`` becomes the current
  parameters.

The recent data is used rather than squared gradients collected during the steps
because those would be taken at stale parameters and include the penalties' own
gradients; the extra cost is ``fisher_batches`` forward/backward passes per
consolidation, nothing per step beyond keeping a reference copy of the chunk.

State (Fisher, anchor, ring) is keyed by parameter name; when the class head grows,
rows of new classes get zero importance (:func:`~.base.fit_rows`).

>>> from stream_learner.model import MLP
>>> net = MLP(2, (4,), n_classes=2)
>>> ewc = EWC(strength=1.0, decay=0.5, batches=2)
>>> x, y = torch.randn(8, 2), torch.arange(8) % 2
>>> net.scaler.update(x)
>>> ewc.after_step(Step(net, x, y, n_new=8))
>>> ewc.penalty(Step(net, x, y, 8)) is None      # nothing consolidated yet
True
>>> ewc.consolidate(net)
>>> ewc.penalty(Step(net, x, y, 8)).item()      # at the anchor: no penalty
0.0
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

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
        if not all(bool(torch.isfinite(g).all()) for g in grads):
            continue
        for (k, _), g in zip(named, grads):
            total[k] += g.abs() if power == 1 else g.pow(power)
        used += 1
    return {k: t / max(used, 1) for k, t in total.items()}


class EWC(PluginBase):
    name = "ewc"

    def __init__(self, strength: float, decay: float, batches: int,
                 device: torch.device | None = None) -> None:
        self.strength = strength
        self.decay = decay
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
            imp, anchor = self._aligned(k, p)
            terms.append((imp * (p - anchor).pow(2)).sum())
        if not terms:
            return None
        return self.strength * torch.stack(terms).sum()

    def _aligned(self, k: str, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Re-fit once when the head grew, not at every step.
        if self.importance[k].shape != p.shape:
            self.importance[k] = fit_rows(self.importance[k], p.detach())
            self.anchor[k] = fit_rows(self.anchor[k], p.detach())
        return self.importance[k], self.anchor[k]

    def after_step(self, step: Step) -> None:
        self.recent.add(step)

    def consolidate(self, model: nn.Module) -> None:
        new = mean_grad_power(model, self.recent.items, F.cross_entropy, power=2)
        for k, p in model.named_parameters():
            if k in new:
                old = self.importance.get(k)
                merged = new[k] if old is None else self.decay * fit_rows(old, p) + new[k]
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


def build(settings: Any, learner: Any) -> EWC:
    s = settings.ewc
    return EWC(s.strength, s.decay, s.fisher_batches, device=learner.device)
