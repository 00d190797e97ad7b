"""``agem``: Averaged Gradient Episodic Memory (Chaudhry et al., 2019) as a plugin.

After the backward pass, a reference gradient ``g_ref`` is computed on
``sample_size`` events drawn from the replay memory. If the step's gradient ``g``
points against it (``g . g_ref < 0``) it is projected onto the half-space where the
memory loss does not increase to first order::

    g <- g - (g . g_ref / g_ref . g_ref) g_ref

over the flattened vector of every parameter that has a gradient. This is avalanche's
``AGEMPlugin`` projection, expression for expression. Unlike avalanche, ``g_ref`` is
computed in the same hook with ``torch.autograd.grad`` on a fresh forward (avalanche
runs ``backward`` before the step's forward and keeps the vector): ``.grad`` is never
clobbered, and ``g_ref`` is taken at exactly the weights ``g`` was.

Cost per step: one extra forward + backward on ``sample_size`` memory events and a few
passes over a parameter-sized vector; no host sync (the projection is branch-free).

Task-free streams: there are no experiences, so "episodic memory" is the strategy's
replay buffer, filled continuously; the constraint is "do not increase the loss on
what the buffer holds". With an empty buffer (or ``memory: none``) it does nothing.
Consolidation is a no-op. A non-finite ``g`` or ``g_ref`` is never projected: a NaN
step stays NaN (so the learner skips it), and a NaN reference does not poison a finite
step.

>>> g, g_ref = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])
>>> new, projected = project(g, g_ref)
>>> new.tolist(), bool(projected), float(new @ g_ref)
([0.5, 0.5], True, 0.0)
>>> project(g, -g_ref)[0].tolist()          # already agrees: unchanged
[1.0, 0.0]
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F

from ..config import Settings
from .base import PluginBase, Step, Trainable


@torch.no_grad()
def project(g: torch.Tensor, g_ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``g`` projected against ``g_ref`` when they conflict; also the bool "projected".

    Same arithmetic as avalanche's ``AGEMPlugin.after_backward`` (so the numbers match
    bit for bit), with ``torch.where`` instead of a Python ``if`` so no host sync.
    """
    dotg = torch.dot(g, g_ref)
    # A non-finite dot product means g or g_ref holds NaN/inf: leave g as it is.
    conflict = (dotg < 0) & torch.isfinite(dotg)
    alpha2 = dotg / torch.dot(g_ref, g_ref)
    # where() picks g on the other branch, so alpha2's 0/0 for g_ref == 0 never leaks.
    return torch.where(conflict, g - g_ref * alpha2, g), conflict


class AGEM(PluginBase):
    """Projects each step's gradient so it does not increase the memory's loss."""

    name = "agem"

    def __init__(self, sample_size: int,
                 criterion: Callable[[], Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]
                 = lambda: F.cross_entropy) -> None:
        self.sample_size = int(sample_size)
        # Returns the loss for g_ref; avalanche uses the strategy's criterion too.
        self._criterion = criterion
        # Device-side counters (no sync per step); read only for state/metrics.
        self._checks = 0                           # steps where g_ref was computed
        self._projections: torch.Tensor | int = 0  # ... and g was projected

    @property
    def projections(self) -> int:
        return int(self._projections)

    @property
    def checks(self) -> int:
        return int(self._checks)

    def after_backward(self, step: Step) -> None:
        memory = step.memory
        if memory is None or len(memory) == 0:
            return
        model = step.model
        # By name each step: the head is replaced when new classes appear.
        params = [p for _, p in model.named_parameters() if p.grad is not None]
        if not params:
            return
        xr, yr = memory.sample(self.sample_size)
        ref_loss = self._criterion()(model(xr), yr)
        # autograd.grad, not backward(): the step's gradients in .grad stay untouched.
        ref = torch.autograd.grad(ref_loss, params, allow_unused=True)
        with torch.no_grad():
            g_ref = torch.cat([r.reshape(-1) if r is not None else p.new_zeros(p.numel())
                               for r, p in zip(ref, params)])
            g = torch.cat([p.grad.reshape(-1) for p in params])
            new, conflict = project(g, g_ref)
            offset = 0
            for p in params:
                n = p.numel()
                p.grad.copy_(new[offset:offset + n].view_as(p))
                offset += n
        self._checks = self._checks + 1
        self._projections = self._projections + conflict.to(torch.int64)

    def state_dict(self) -> dict[str, Any]:
        return {"checks": self.checks, "projections": self.projections}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._checks = int(state.get("checks", 0))
        self._projections = int(state.get("projections", 0))


def build(settings: Settings, learner: Trainable) -> AGEM:
    # The learner's loss function, looked up per step (it may be swapped at run time).
    return AGEM(settings.agem.sample_size,
                lambda: learner.loss_fn)
