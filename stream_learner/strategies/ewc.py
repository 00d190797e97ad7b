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

from .anchored import AnchoredPenalty, RecentBatches, mean_grad_power
from .base import Step  # noqa: F401 - the doctest builds Steps

__all__ = ["EWC", "RecentBatches", "mean_grad_power", "build"]


class EWC(AnchoredPenalty):
    name = "ewc"

    def __init__(self, strength: float, decay: float, batches: int,
                 device: torch.device | None = None) -> None:
        super().__init__(strength, batches, device)
        self.decay = decay

    def consolidate(self, model: nn.Module) -> None:
        new = mean_grad_power(model, self.recent.items, F.cross_entropy, power=2)
        self.anchor_at(model, new, lambda old, fresh: self.decay * old + fresh)


def build(settings: Any, learner: Any) -> EWC:
    s = settings.ewc
    return EWC(s.strength, s.decay, s.fisher_batches, device=learner.device)
