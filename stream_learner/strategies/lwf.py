"""``lwf``: Learning without Forgetting (Li & Hoiem, 2016) as a ``continual`` plugin.

At every consolidation the model is snapshotted (deep copy, eval mode, no gradients).
Each later step adds ``alpha * KL(p_old || p_new)`` to the loss, where both
distributions are ``softmax(logits / T)`` restricted to the classes the snapshot had
*learned*; the KL is averaged over the rows of ``step.x`` (new and replayed events).
This is exactly avalanche's ``LearningWithoutForgetting`` penalty: ``kl_div(log_softmax(
new / T), softmax(old / T), reduction="batchmean")`` times ``alpha``, with no ``T**2``
factor.

Cost per step: one extra no-grad forward of the snapshot on ``step.x`` plus a softmax
over the old classes; memory: one extra copy of the model.

Task-free streams: there are no experiences, so the "previous model" is the model at
the last consolidation (a new label, every K events, or a drift signal). Before the
first consolidation there is no penalty. The classes distilled are those seen in
applied steps before the consolidation: a consolidation triggered by a new label runs
after the head grew a row for it, and that untrained row must not be distilled.

>>> import torch
>>> from stream_learner.model import MLP
>>> from stream_learner.strategies.base import Step
>>> net = MLP(n_features=2, hidden=(4,), n_classes=3)
>>> lwf = LwF(alpha=1.0, temperature=2.0)
>>> x, y = torch.randn(5, 2), torch.tensor([0, 1, 2, 0, 1])
>>> step = Step(net, x, y, 5, net(x))
>>> lwf.penalty(step) is None                # nothing to distil from yet
True
>>> lwf.after_step(step); lwf.consolidate(net)
>>> float(lwf.penalty(Step(net, x, y, 5, net(x))).detach())  # same model: KL is 0
0.0
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..config import Settings
from ..model import MLP
from .base import PluginBase, Step, Trainable


class LwF(PluginBase):
    """Distils the snapshot taken at the last consolidation into the current model."""

    name = "lwf"

    def __init__(self, alpha: float, temperature: float,
                 device: torch.device | str = "cpu") -> None:
        self.alpha = float(alpha)
        self.temperature = float(temperature)
        self.device = torch.device(device)
        self.snapshot: nn.Module | None = None
        self.classes = 0                        # classes the snapshot had learned
        # Highest class index seen in an applied step, kept on the device so tracking
        # it costs no host sync per step; read once per consolidation.
        self._seen: torch.Tensor | None = None

    # -- hooks --------------------------------------------------------------------------
    def penalty(self, step: Step) -> torch.Tensor | None:
        # One old class: softmax over one column is 1 for both models, the KL is
        # identically 0 (and so is its gradient), so skip the snapshot's forward.
        if self.snapshot is None or self.classes < 2 or step.x.shape[0] == 0:
            return None
        assert step.logits is not None
        k = self.classes
        with torch.no_grad():
            old = self.snapshot(step.x)[:, :k]
        # Same expression (and argument order) as avalanche's _distillation_loss.
        log_p = torch.log_softmax(step.logits[:, :k] / self.temperature, dim=1)
        q = torch.softmax(old / self.temperature, dim=1)
        return self.alpha * F.kl_div(log_p, q, reduction="batchmean")

    def after_step(self, step: Step) -> None:
        # Only applied steps count: a skipped (NaN) step taught the model nothing.
        if step.y.numel():
            top = step.y.max()
            self._seen = top if self._seen is None else torch.maximum(self._seen, top)

    def consolidate(self, model: nn.Module) -> None:
        self.snapshot = self._freeze(copy.deepcopy(model))
        self.classes = self._seen_classes()

    # -- state --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        snap = None
        if self.snapshot is not None:
            # Plain tensors (weights_only loads) rebuilt into an MLP on load.
            snap = {"n_features": int(self.snapshot.n_features),
                    "hidden": [int(h) for h in self.snapshot.hidden],
                    "weights": {k: v.detach().cpu().clone()
                                for k, v in self.snapshot.state_dict().items()}}
        return {"snapshot": snap, "classes": self.classes, "seen": self._seen_classes()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        snap = state["snapshot"]
        self.snapshot = None
        if snap is not None:
            net = MLP(int(snap["n_features"]), tuple(int(h) for h in snap["hidden"]))
            net.load_state_dict(snap["weights"])          # restores head size, n_classes
            self.snapshot = self._freeze(net.to(self.device))
        self.classes = int(state["classes"])
        seen = int(state["seen"])
        self._seen = (torch.tensor(seen - 1, dtype=torch.int64, device=self.device)
                      if seen > 0 else None)

    # -- helpers ------------------------------------------------------------------------
    def _seen_classes(self) -> int:
        return 0 if self._seen is None else int(self._seen) + 1

    @staticmethod
    def _freeze(model: nn.Module) -> nn.Module:
        model.eval()
        model.requires_grad_(False)
        for p in model.parameters():
            p.grad = None                       # deepcopy also copied the last gradients
        return model


def build(settings: Settings, learner: Trainable) -> LwF:
    return LwF(settings.lwf.alpha, settings.lwf.temperature, device=learner.device)
