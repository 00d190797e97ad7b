"""La-MAML: look-ahead meta-learning with learned per-parameter learning rates
(Gupta, Yadav & Paull, NeurIPS 2020), first-order.

Every parameter ``theta`` has a learning-rate tensor ``alpha`` of its shape (init
``lamaml.alpha_init``, keyed by parameter name).  For one chunk ``B`` of new events
(config ``lamaml``)::

    R = memory.sample(replay.batch_size)                 # once per chunk
    theta' = theta0 = theta
    for B_i in split(B, inner_steps):                     # look-ahead on new events only
        g_i = clamp(grad L(theta'; B_i), -2, 2)
        theta' = theta' - alpha * g_i
    g_meta = grad L(theta'; B + R)                        # meta-loss, new + replayed
    alpha  = alpha + lr_alpha * clip_norm(g_meta * sum_i g_i, 2)
    theta  = theta0 - relu(alpha) * clip_norm(g_meta, 2)

``L`` is ``learner.loss_fn`` plus the plugins' penalties.

**First-order approximation.**  The exact meta-gradients differentiate through the
inner trajectory: ``dL/dtheta0 = prod_i (I - alpha H_i) g_meta`` and
``dL/dalpha = -sum_i g_i * (prod_{j>i} (I - alpha H_j) g_meta)``.  Dropping every
Hessian ``H`` (the inner gradients ``g_i`` are constants) leaves
``dL/dtheta0 ~ g_meta`` and ``dL/dalpha ~ -g_meta * sum_i g_i``: an ``alpha`` grows where
the meta-gradient on old + new events agrees with the gradients of the look-ahead on
the new ones (the paper's "gradient alignment") and shrinks where they conflict.  This
is what Avalanche's ``LaMAML_v2(second_order=False)`` computes too.

Differences from the paper (Algorithm 2) and Avalanche:

* The inner loop uses ``alpha`` as is, the weight update ``relu(alpha)`` (as the paper
  and Avalanche); ``alpha`` itself is never clipped, so a negative one can recover.
* The meta-loss is taken once, at the end of the look-ahead (the paper); Avalanche
  ``LaMAML_v2`` averages a meta-loss after each inner step.
* Clipping as Avalanche's defaults (``grad_clip_norm=2``): inner gradients clamped
  element-wise to [-2, 2], the meta-gradient and the ``alpha`` gradient each clipped
  to total norm 2 (the latter by our choice: it is a product of two gradients).
* ``alpha`` is updated with plain SGD (``lr_alpha``), then the weights with the *new*
  ``relu(alpha)``, written straight into the parameters: the learner's Adam is
  bypassed and its moments are left untouched.
* When the class head grows, the old ``alpha`` rows are kept (:func:`fit_rows`) and the
  new rows start at ``alpha_init`` (``fit_rows`` alone would zero them, and a zero
  learning rate would keep a new class's head rows from learning).
* Plugins: ``penalty`` enters the inner and the meta-loss; ``after_backward`` and
  ``after_step`` run once per chunk, around the real weight update (the weights are
  back at ``theta0`` and ``.grad`` holds the clipped meta-gradient when
  ``after_backward`` runs, so A-GEM projects what is applied, and the projected
  gradient is also what updates ``alpha``).
* A non-finite inner or meta loss/gradient skips the whole chunk: weights and
  ``alpha`` stay exactly as they were, ``learner.skipped_steps`` counts it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..config import Settings
from .base import Batch, Plugin, Trainable, fit_rows
from ..finite import gradients, step_is_finite
from .mer import plugin_loss

GRAD_CLIP = 2.0


def _clip_norm_(tensors: list[torch.Tensor], max_norm: float) -> None:
    norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(tensors)))
    torch._foreach_mul_(tensors, torch.clamp(max_norm / (norm + 1e-6), max=1.0))


class LaMAML:
    name = "lamaml"

    def __init__(self, alpha_init: float, lr_alpha: float, inner_steps: int,
                 replay_batch_size: int) -> None:
        self.alpha_init, self.lr_alpha = alpha_init, lr_alpha
        self.inner_steps = inner_steps
        self.replay_batch_size = replay_batch_size
        self.alpha: dict[str, torch.Tensor] = {}   # per-parameter learning rates
        self.updates = 0

    def _alphas(self, model: nn.Module) -> list[torch.Tensor]:
        """Learning rates aligned with ``model.named_parameters()`` (created/padded)."""
        out = []
        for name, p in model.named_parameters():
            a = self.alpha.get(name)
            if a is None:
                a = torch.full_like(p, self.alpha_init)
            elif a.shape != p.shape or a.device != p.device:
                old_rows = a.shape[0]
                a = fit_rows(a.to(p.device, p.dtype), p.detach()).clone()
                a[old_rows:] = self.alpha_init
            self.alpha[name] = a
            out.append(a)
        return out

    def update(self, learner: Trainable, chunk: Batch, memory: Any,
               plugins: list[Plugin]) -> tuple[torch.Tensor, int]:
        model = learner.model
        assert model is not None
        params = list(model.parameters())
        alphas = self._alphas(model)
        theta0 = [p.detach().clone() for p in params]
        if memory is not None and len(memory):
            rx, ry = memory.sample(self.replay_batch_size)
        else:
            rx, ry = chunk.x[:0], chunk.y[:0]
        for p in params:
            p.grad = None

        # Look-ahead on the new events: theta' = theta - alpha * g_i, no graph kept.
        sum_g = [torch.zeros_like(p) for p in params]
        for x, y in zip(torch.tensor_split(chunk.x, min(self.inner_steps, len(chunk))),
                        torch.tensor_split(chunk.y, min(self.inner_steps, len(chunk)))):
            loss, _ = plugin_loss(learner, x, y, int(x.shape[0]), plugins, memory)
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
            if not step_is_finite(loss, grads):
                return self._skip(learner, params, theta0, loss)
            torch._foreach_clamp_min_(grads, -GRAD_CLIP)
            torch._foreach_clamp_max_(grads, GRAD_CLIP)
            torch._foreach_add_(sum_g, grads)
            with torch.no_grad():
                torch._foreach_addcmul_(params, alphas, grads, value=-1.0)

        # Meta-loss at theta' on new + replayed events; its gradient is taken at theta0.
        x, y = torch.cat([chunk.x, rx]), torch.cat([chunk.y, ry])
        meta_loss, ctx = plugin_loss(learner, x, y, len(chunk), plugins, memory)
        meta_loss.backward()
        with torch.no_grad():
            torch._foreach_copy_(params, theta0)
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        if not step_is_finite(meta_loss, grads):
            return self._skip(learner, params, theta0, meta_loss)
        for p, g in zip(params, grads):
            p.grad = g
        _clip_norm_(grads, GRAD_CLIP)
        if ctx is not None:
            for plugin in plugins:
                plugin.after_backward(ctx)
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
            if not step_is_finite(meta_loss, gradients(params)):
                return self._skip(learner, params, theta0, meta_loss)

        with torch.no_grad():
            # dL/dalpha ~ -g_meta * sum g_i  ->  alpha += lr_alpha * g_meta * sum g_i
            g_alpha = torch._foreach_mul(grads, sum_g)
            _clip_norm_(g_alpha, GRAD_CLIP)
            torch._foreach_add_(alphas, g_alpha, alpha=self.lr_alpha)
            lr = [torch.relu(a) for a in alphas]
            torch._foreach_addcmul_(params, lr, grads, value=-1.0)
        if ctx is not None:
            for plugin in plugins:
                plugin.after_step(ctx)
        for p in params:
            p.grad = None
        self.updates += 1
        return meta_loss.detach(), int(rx.shape[0])

    @staticmethod
    def _skip(learner: Any, params: list[torch.Tensor], theta0: list[torch.Tensor],
              loss: torch.Tensor) -> tuple[torch.Tensor, int]:
        with torch.no_grad():
            torch._foreach_copy_(params, theta0)
        for p in params:
            p.grad = None
        learner.note_skipped_step()
        return loss.detach(), 0

    def state_dict(self) -> dict[str, Any]:
        return {"alpha": {k: v.detach().cpu().clone() for k, v in self.alpha.items()},
                "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.alpha = {str(k): v.clone() for k, v in state["alpha"].items()}
        self.updates = int(state.get("updates", 0))


def build(settings: Settings, learner: Trainable) -> LaMAML:
    cfg = settings.lamaml
    return LaMAML(cfg.alpha_init, cfg.lr_alpha, cfg.inner_steps,
                  replay_batch_size=settings.replay.batch_size)
