"""``si``: Synaptic Intelligence (Zenke, Poole & Ganguli 2017).

SI needs no extra pass over data: while learning it integrates, per parameter, how much
each update lowered the loss (the path integral)::

    w_i += -g_i * (theta_i(after step) - theta_i(before step))

with ``g`` the gradient of the task loss at the step (taken in :meth:`SI.after_backward`,
before the optimiser moves; accumulated in :meth:`SI.after_step`, which a skipped NaN
step never reaches, so a poisoned step adds nothing).

In a task-free stream a consolidation (new class, every K events, drift) closes the
current "task": with ``delta = theta - theta*`` the distance travelled since the last
consolidation, ::

    omega += w / (delta ** 2 + eps);   w = 0;   theta* = theta

and the loss gets ``strength * sum_i max(omega_i, 0) * (theta_i - theta*_i) ** 2``.

Differences from Avalanche's ``SynapticIntelligencePlugin`` (same accumulation
otherwise; ``tests/test_regularisers_vs_avalanche.py`` checks the numbers):

* ``g`` excludes SI's own penalty (its gradient ``2 * strength * omega * delta`` is
  subtracted), as in Zenke's reference code: Avalanche integrates the gradient of the
  total loss, so the penalty pulling back to the anchor counts as "importance".
  Penalties of other plugins, and an A-GEM projection configured before ``si``, are
  still in ``g``.
* ``omega`` is clamped at 0 from below (a negative importance would reward moving away
  from the anchor without bound), and not at 1e-3 from above as Avalanche's hard-coded
  ``clip_to=0.001`` (a Caffe-port artefact that is not in the paper).
* ``strength * sum(...)`` like the paper and our EWC/MAS; Avalanche uses ``lambda / 2``,
  so ``si_lambda = 2 * strength``.

State is keyed by parameter name; a grown class head gets zero importance and path
integral for its new rows, and their current values as the anchor.

>>> from stream_learner.model import MLP
>>> net = MLP(2, (4,), n_classes=2)
>>> si = SI(strength=1.0, eps=1e-3)
>>> si.penalty(Step(net, torch.zeros(1, 2), torch.zeros(1, dtype=torch.long), 1)) is None
True
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .base import PluginBase, Step, fit_rows


def fit_anchor(saved: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Like :func:`fit_rows`, but new rows take ``like``'s values (where they start)."""
    if saved.shape == like.shape:
        return saved
    out = like.detach().clone()
    rows = min(saved.shape[0], like.shape[0])
    out[:rows] = saved[:rows]
    return out


class SI(PluginBase):
    name = "si"

    def __init__(self, strength: float, eps: float, device: torch.device | None = None) -> None:
        self.strength = strength
        self.eps = eps
        self.device = device
        self.anchor: dict[str, torch.Tensor] = {}   # theta* (start of the current task)
        self.path: dict[str, torch.Tensor] = {}     # w since the last consolidation
        self.omega: dict[str, torch.Tensor] = {}    # summed w / (delta^2 + eps), unclamped
        # (grad, theta before the step) of the step in flight; never checkpointed, since
        # a checkpoint is only taken between steps.
        self._pending: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def _fit(self, model: nn.Module) -> list[tuple[str, torch.Tensor]]:
        """The parameters, with the stored state aligned to their current shapes."""
        named = [(k, p) for k, p in model.named_parameters() if p.requires_grad]
        for k, p in named:
            if k not in self.anchor:
                self.anchor[k] = p.detach().clone()
                self.path[k] = torch.zeros_like(p, requires_grad=False)
            elif self.anchor[k].shape != p.shape:
                self.anchor[k] = fit_anchor(self.anchor[k], p)
                self.path[k] = fit_rows(self.path[k], p.detach())
                if k in self.omega:
                    self.omega[k] = fit_rows(self.omega[k], p.detach())
        return named

    def penalty(self, step: Step) -> torch.Tensor | None:
        if not self.omega or self.strength == 0:
            return None
        terms = [(self.omega[k].clamp(min=0) * (p - self.anchor[k]).pow(2)).sum()
                 for k, p in self._fit(step.model) if k in self.omega]
        return self.strength * torch.stack(terms).sum() if terms else None

    @torch.no_grad()
    def after_backward(self, step: Step) -> None:
        self._pending = {}
        for k, p in self._fit(step.model):
            g = torch.zeros_like(p) if p.grad is None else p.grad.clone()
            if k in self.omega and self.strength:
                # Remove SI's own pull towards the anchor: w measures the task loss.
                g -= 2 * self.strength * self.omega[k].clamp(min=0) * (p - self.anchor[k])
            self._pending[k] = (g, p.detach().clone())

    @torch.no_grad()
    def after_step(self, step: Step) -> None:
        for k, p in step.model.named_parameters():
            if k in self._pending:
                g, before = self._pending[k]
                self.path[k] -= g * (p - before)
        self._pending = {}

    @torch.no_grad()
    def consolidate(self, model: nn.Module) -> None:
        for k, p in self._fit(model):
            delta = p - self.anchor[k]
            new = self.path[k] / (delta.pow(2) + self.eps)
            self.omega[k] = self.omega[k] + new if k in self.omega else new
            self.path[k] = torch.zeros_like(self.path[k])
            self.anchor[k] = p.detach().clone()

    def state_dict(self) -> dict[str, Any]:
        # Copies: ``path`` is updated in place, a checkpoint must not change under it.
        return {key: {k: v.detach().to("cpu", copy=True) for k, v in getattr(self, key).items()}
                for key in ("anchor", "path", "omega")}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("anchor", "path", "omega"):
            setattr(self, key, {k: v.to(self.device, copy=True) for k, v in state[key].items()})
        self._pending = {}


def build(settings: Any, learner: Any) -> SI:
    return SI(settings.si.strength, settings.si.eps, device=learner.device)
