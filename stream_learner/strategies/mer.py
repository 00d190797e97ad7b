"""MER: Meta-Experience Replay (Riemer et al., ICLR 2019), first-order Reptile form.

What one :meth:`MER.update` does for a chunk of new events ``B`` (config ``mer``)::

    theta0 = theta
    for i in range(inner_steps):                       # "s" batches in the paper
        R_i = memory.sample(replay.batch_size)         # a fresh replay sample per batch
        thetaA = theta
        for j in range(mini_batches):                  # sequential plain-SGD steps
            b_j = B[part j] + R_i[part j]              # new events first, then replayed
            theta -= inner_lr * grad(loss_fn(b_j) + plugin penalties)
        theta = thetaA + beta * (theta - thetaA)       # within-batch Reptile
    theta = theta0 + gamma * (theta - theta0)          # across-batch Reptile

The defaults (``inner_steps=1``, ``mini_batches=4``, ``inner_lr=0.25``, ``beta=0.8``)
are one inner batch: four sequential SGD steps over slices of the chunk and its replay
sample, then 80% of the way from ``theta0`` to where they led.  ``bench continual``
picked them: the net step ``beta * inner_lr`` mattered most, and five inner batches were
not more accurate on average, at 3-4x the cost.

Reptile is first-order by construction: the gradient-alignment term of MER's objective
comes from taking several *sequential* SGD steps on different examples and moving only
part of the way (beta, gamma) towards where they led; no second derivatives are taken.

Differences from the paper (Algorithm 1 / 6) and from Avalanche's ``MER``:

* The paper runs MER per incoming example, each batch being that example plus
  ``k - 1`` replayed ones, with one SGD step per example.  Here a "batch" is the whole
  chunk of new events (``model.step_size``) plus ``replay.batch_size`` replayed ones,
  split into ``mer.mini_batches`` mini-batches (each = a slice of the new events + a
  slice of the replay sample) for the sequential SGD steps: ``inner_steps *
  mini_batches`` small steps per chunk instead of ``inner_steps * (k + 1)`` per event.
  The paper's ordering is random; here the new events keep their stream order.
* Inner steps are plain SGD with ``mer.inner_lr`` written straight into the parameters;
  the learner's optimiser (Adam) is bypassed, so its moments are left untouched (not
  advanced, not reset) and resume as they were if the config later drops ``meta``.
  (Avalanche calls the model's optimiser in the inner loop.)
* The reservoir update after the chunk is done by :class:`~.continual.Continual` (a
  chunk never replays itself), with whichever memory is configured.
* Plugins: ``penalty`` is added to every inner loss (EWC, SI, MAS, LwF pull each inner
  step).  ``after_backward`` / ``after_step`` run once per chunk, around the *net* move:
  the weights go back to ``theta0``, ``.grad`` is set to ``(theta0 - theta) / lr_eff``
  with ``lr_eff = gamma * beta * inner_lr * steps`` (the rate at which the inner steps'
  mean gradient moved the weights), the hooks may rewrite it (A-GEM projects the whole
  MER update against its reference gradient), and ``theta = theta0 - lr_eff * .grad``.
  Calling the hooks per inner step instead made SI integrate the inner trajectory,
  ``1 / (beta * gamma)`` times longer than the net move: its importances blew up and
  the explicit SGD on its penalty diverged.  Without plugins the Reptile result is
  kept as is.
* Each inner gradient is clipped to total norm :data:`GRAD_CLIP` (neither the paper nor
  Avalanche's MER clip): with plugin penalties the inner plain-SGD steps otherwise
  diverge (EWC at strength 100 did, within a few hundred events).
* A mini-batch whose loss or gradients are NaN/inf is not applied and counts in
  ``learner.skipped_steps``; if every inner step of the chunk is skipped the weights are
  unchanged, bit for bit.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from ..config import Settings
from ..finite import finite_grad_norm, gradients, step_is_finite
from .base import Batch, Plugin, Step, Trainable

MINI_BATCHES = 4
"""Default sequential SGD steps per inner batch, ``mer.mini_batches`` (the paper: one
per example of the batch)."""
GRAD_CLIP = 2.0
"""Total-norm clip of each inner SGD gradient (Avalanche's La-MAML default)."""


def plugin_loss(learner: Any, x: torch.Tensor, y: torch.Tensor, n_new: int,
                plugins: Sequence[Plugin], memory: Any) -> tuple[torch.Tensor, Step | None]:
    """``learner.loss_fn`` on ``(x, y)`` plus every plugin penalty, as in ``Learner.step``."""
    model = learner.model
    logits = model(x)
    loss = learner.loss_fn(logits, y)
    ctx = None
    if plugins:
        ctx = Step(model, x, y, n_new, logits, memory)
        scale = learner.penalty_scale
        for plugin in plugins:
            term = plugin.penalty(ctx)
            if term is not None:
                loss = loss + (term if scale == 1.0 else scale * term)
    return loss, ctx


class MER:
    name = "mer"

    def __init__(self, beta: float, gamma: float, inner_steps: int, inner_lr: float,
                 replay_batch_size: int, mini_batches: int = MINI_BATCHES) -> None:
        self.beta, self.gamma = beta, gamma
        self.inner_steps, self.inner_lr = inner_steps, inner_lr
        self.replay_batch_size = replay_batch_size
        self.mini_batches = mini_batches
        self.updates = 0            # chunks learned

    def update(self, learner: Trainable, chunk: Batch, memory: Any,
               plugins: list[Plugin]) -> tuple[torch.Tensor, int]:
        model = learner.model
        assert model is not None
        params = list(model.parameters())
        theta0 = [p.detach().clone() for p in params]
        losses: list[torch.Tensor] = []     # of the applied steps
        skipped: list[torch.Tensor] = []
        replayed, steps = 0, 0
        rx, ry = chunk.x[:0], chunk.y[:0]
        for _ in range(self.inner_steps):
            if memory is not None and len(memory):
                rx, ry = memory.sample(self.replay_batch_size)
            else:
                rx, ry = chunk.x[:0], chunk.y[:0]
            replayed += int(rx.shape[0])
            # Until a step is applied theta is still theta0: no second copy.
            theta_a = theta0 if steps == 0 else [p.detach().clone() for p in params]
            parts = min(self.mini_batches, len(chunk))
            applied = False
            for nx, ny, bx, by in zip(torch.tensor_split(chunk.x, parts),
                                      torch.tensor_split(chunk.y, parts),
                                      torch.tensor_split(rx, parts),
                                      torch.tensor_split(ry, parts)):
                x, y = torch.cat([nx, bx]), torch.cat([ny, by])
                loss, ok = self._sgd(learner, params, x, y, int(nx.shape[0]), plugins, memory)
                (losses if ok else skipped).append(loss)
                applied = applied or ok
                steps += ok
            if applied:
                with torch.no_grad():   # theta = thetaA + beta * (theta - thetaA)
                    torch._foreach_lerp_(params, theta_a, 1.0 - self.beta)
        if steps:
            with torch.no_grad():       # theta = theta0 + gamma * (theta - theta0)
                torch._foreach_lerp_(params, theta0, 1.0 - self.gamma)
            if plugins:
                lr = self.gamma * self.beta * self.inner_lr * steps
                self._as_one_step(learner, params, theta0, lr, chunk, rx, ry, plugins, memory)
        for p in params:
            p.grad = None
        self.updates += 1
        return torch.stack(losses or skipped).mean(), replayed

    def _as_one_step(self, learner: Any, params: list[torch.Tensor],
                     theta0: list[torch.Tensor], lr: float, chunk: Batch, rx: torch.Tensor,
                     ry: torch.Tensor, plugins: Sequence[Plugin], memory: Any) -> None:
        """Show the chunk's net move to the plugins' hooks as one SGD step of rate ``lr``.

        ``.grad = (theta0 - theta) / lr`` at ``theta0``; ``after_backward`` may rewrite it
        (A-GEM projects the net MER update), then ``theta = theta0 - lr * .grad`` and
        ``after_step``.  ``lr`` is the rate at which the inner steps' mean gradient moved
        the weights (``gamma * beta * inner_lr * steps``, ignoring curvature), so SI's
        path integral ``-g * dtheta`` has the scale of ordinary steps.
        """
        with torch.no_grad():
            for p, p0 in zip(params, theta0):
                p.grad = (p0 - p) / lr
            torch._foreach_copy_(params, theta0)
            x, y = torch.cat([chunk.x, rx]), torch.cat([chunk.y, ry])
            # logits=None: no forward ran at theta0 (the hooks here read p.grad, x and y;
            # only penalty() needs logits), and one would cost as much as a mini-step.
            ctx = Step(learner.model, x, y, len(chunk), None, memory)
        for plugin in plugins:
            plugin.after_backward(ctx)
        if not step_is_finite(torch.zeros(()), gradients(params)):
            learner.note_skipped_step()         # weights stay at theta0
            return
        with torch.no_grad():
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
            torch._foreach_add_(params, grads, alpha=-lr)
        for plugin in plugins:
            plugin.after_step(ctx)

    def _sgd(self, learner: Any, params: list[torch.Tensor], x: torch.Tensor,
             y: torch.Tensor, n_new: int, plugins: Sequence[Plugin],
             memory: Any) -> tuple[torch.Tensor, bool]:
        """One plain-SGD step: (detached loss, applied); a non-finite one is skipped."""
        for p in params:
            p.grad = None
        loss, _ = plugin_loss(learner, x, y, n_new, plugins, memory)
        loss.backward()
        with torch.no_grad():
            live = [p for p in params if p.grad is not None]
            grads = [p.grad for p in live]
            # One norm serves the shared finite check and the clip: one host sync per step.
            norm = finite_grad_norm(loss, grads)
            if norm is None:
                learner.note_skipped_step()
                for p in params:
                    p.grad = None
                return loss.detach(), False
            # Norm clipping: plain SGD on a stiff penalty (EWC's strength * Fisher) diverges
            # once inner_lr * 2 * strength * F > 2, where Adam's normalised steps would not.
            torch._foreach_mul_(grads, torch.clamp(GRAD_CLIP / (norm + 1e-6), max=1.0))
            torch._foreach_add_(live, grads,
                                alpha=-self.inner_lr * learner.lr_factor)
        return loss.detach(), True

    def state_dict(self) -> dict[str, Any]:
        # No RNG of its own: replay samples come from the memory's generator.
        return {"updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.updates = int(state.get("updates", 0))


def build(settings: Settings, learner: Trainable) -> MER:
    cfg = settings.mer
    return MER(cfg.beta, cfg.gamma, cfg.inner_steps, cfg.inner_lr,
               replay_batch_size=settings.replay.batch_size, mini_batches=cfg.mini_batches)
