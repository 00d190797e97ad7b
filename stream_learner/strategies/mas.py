"""``mas``: Memory Aware Synapses (Aljundi et al. 2018; Avalanche ``MASPlugin``).

MAS measures how sensitive the learned function is to each parameter, without labels::

    importance_i = mean over batches of | d mean_n ||f(x_n)||_2^2 / d theta_i |

(``f`` = the logits of the known classes; per batch the squared L2 norm is averaged over
the events, the absolute gradients are averaged over the batches, exactly as Avalanche).
The loss gets ``strength * sum_i importance_i * (theta_i - theta*_i) ** 2``.

In a task-free stream there is no dataset to make a second pass over, so, like
:mod:`.ewc`, :meth:`MAS.after_step` keeps the new events of the last :data:`BATCHES`
applied steps, and a consolidation (new class, every K events, drift) computes the
importance on them at the current parameters and merges it as Avalanche does after an
experience: the first time ``importance = new``, then
``importance = alpha * old + (1 - alpha) * new``; ``theta*`` = the current parameters.

State is keyed by parameter name; a grown class head gets zero importance for its new
rows.

>>> from stream_learner.model import MLP
>>> net = MLP(2, (4,), n_classes=2)
>>> x = torch.randn(8, 2); net.scaler.update(x)
>>> mas = MAS(strength=1.0, alpha=0.5)
>>> mas.after_step(Step(net, x, torch.arange(8) % 2, 8)); mas.consolidate(net)
>>> sorted(mas.importance) == sorted(k for k, _ in net.named_parameters())
True
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .anchored import AnchoredPenalty, mean_grad_power
from .base import Step  # noqa: F401 - the doctest builds Steps

BATCHES = 8  # recent steps' events the importance is estimated on (as ewc.fisher_batches)


def output_sq_norm(logits: torch.Tensor, _y: torch.Tensor) -> torch.Tensor:
    """Avalanche's MAS objective: the squared L2 norm of the output, averaged over events."""
    return torch.norm(logits, p="fro", dim=1).pow(2).mean()


class MAS(AnchoredPenalty):
    name = "mas"

    def __init__(self, strength: float, alpha: float, batches: int = BATCHES,
                 device: torch.device | None = None) -> None:
        super().__init__(strength, batches, device)
        self.alpha = alpha

    def consolidate(self, model: nn.Module) -> None:
        new = mean_grad_power(model, self.recent.items, output_sq_norm, power=1)
        self.anchor_at(model, new, lambda old, fresh: self.alpha * old + (1 - self.alpha) * fresh)


def build(settings: Any, learner: Any) -> MAS:
    s = settings.mas
    return MAS(s.strength, s.alpha, device=learner.device)
