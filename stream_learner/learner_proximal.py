"""FedProx's proximal term for the learner: a pull toward the last federation aggregate.

Split out of :class:`stream_learner.learner.Learner`, which owns one and calls
:meth:`ProximalAnchor.pull` after every backward pass.
"""

from __future__ import annotations

import torch
from torch import nn


class ProximalAnchor:
    """``mu / 2 * ||w - anchor||^2`` added to local steps; no anchor = no pull."""

    def __init__(self) -> None:
        self.anchor: dict[str, torch.Tensor] | None = None
        self.mu = 0.0

    def set(self, anchor: dict[str, torch.Tensor] | None, mu: float) -> None:
        """``anchor`` is parameter name -> tensor; a parameter whose shape changed since
        (a grown head) is not pulled."""
        self.anchor = None if anchor is None or mu == 0 else anchor
        self.mu = float(mu)

    def pull(self, model: nn.Module) -> None:
        """Add the gradient of ``mu / 2 * ||w - anchor||^2`` to the task gradient.

        Two fused ops on the gradients, where the same term in the loss cost three
        autograd ops per tensor, forward and backward, on every step (measured: the
        largest part of federation's cost on a busy daemon).  The loss the detectors
        see stays the task's.
        """
        if self.anchor is None:
            return
        params, anchors = [], []
        for name, p in model.named_parameters():
            a = self.anchor.get(name)
            if a is not None and a.shape == p.shape and p.grad is not None:
                params.append(p)
                anchors.append(a)
        if params:
            diffs = torch._foreach_sub(params, anchors)
            torch._foreach_add_([p.grad for p in params], diffs, alpha=self.mu)
