"""The one check every update path makes before applying a step.

A NaN or infinite loss or gradient must never reach the weights: the step is skipped and
counted instead. Summing the loss and the gradients' norms costs one host sync, and a
NaN or inf anywhere makes the sum non-finite.

>>> import torch
>>> w = torch.nn.Parameter(torch.ones(2)); (w * 2).sum().backward()
>>> step_is_finite(torch.tensor(1.0), gradients([w]))
True
>>> w.grad[0] = float("nan"); step_is_finite(torch.tensor(1.0), gradients([w]))
False
"""

from __future__ import annotations

from typing import Iterable, Sequence

import torch


def gradients(params: Iterable[torch.Tensor]) -> list[torch.Tensor]:
    """The gradients that exist (parameters without one are not part of the step)."""
    return [p.grad for p in params if p.grad is not None]


def step_is_finite(loss: torch.Tensor, grads: Sequence[torch.Tensor]) -> bool:
    """The loss (summed, if not a scalar) and every gradient are finite."""
    total = loss.detach().sum()
    if grads:
        total = total + torch.stack(torch._foreach_norm(list(grads))).sum()
    return bool(torch.isfinite(total))
