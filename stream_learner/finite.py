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
    return finite_grad_norm(loss, grads) is not None


def finite_grad_norm(loss: torch.Tensor, grads: Sequence[torch.Tensor]) -> torch.Tensor | None:
    """The gradients' global L2 norm (a device tensor) if the step is finite, else None.

    The same check as :func:`step_is_finite` (one host sync), for a path that also clips
    by the norm (MER's inner steps).
    """
    total = loss.detach().sum()
    norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(list(grads)))) \
        if grads else torch.zeros((), device=total.device)
    return norm if bool(torch.isfinite(total + norm)) else None
