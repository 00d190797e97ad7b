"""The learner core: label map + model + optimiser + strategy, without any Kafka.

Prequential use: :meth:`Learner.prequential` tests then trains a micro-batch chunk by
chunk, so every event is predicted by a model that has learned every earlier chunk.

>>> import numpy as np
>>> from stream_learner.config import Settings
>>> lrn = Learner(Settings(model={"device": "cpu"}))
>>> x = np.random.default_rng(0).normal(size=(256, 2)).astype("float32")
>>> y = ["pos" if a > 0 else "neg" for a in x[:, 0]]
>>> for _ in range(30): _ = lrn.learn(x, y)
>>> labels, proba = lrn.predict(x)
>>> float(np.mean([p == t for p, t in zip(labels, y)])) > 0.9
True
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from . import learner_state
from .config import ModelSettings, Settings
from .drift import DriftAdapter
from .federation.merge import Federated
from .finite import gradients, step_is_finite
from .forgetting import ForgettingProbes
from .labels import REFUSED, Label, LabelMap
from .model import MLP, select_device
from .strategies import Batch, Plugin, Step, Strategy, UpdateStats, make_strategy
from .learner_proximal import ProximalAnchor


class Learner:
    """Owns the model and its optimiser; strategies call back into :meth:`step`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.device = select_device(settings.model.device)
        # New events per gradient step.  The daemon's pacer sets it per batch, between
        # model.step_size (time to spare) and this, the size for learning at full rate.
        self.step_size = settings.model.max_step_size
        self.warmup_events = settings.model.warmup_events
        self.seen = 0          # labeled events learned so far (drives the warm-up)
        self.labels = LabelMap(max_size=settings.model.max_classes)
        self.model: MLP | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.strategy: Strategy = make_strategy(settings, self)
        self.loss_fn = nn.CrossEntropyLoss()
        self.skipped_steps = 0  # non-finite loss or gradient: step not applied
        pr = settings.probes
        self.probes = ForgettingProbes(pr.per_class, pr.max_probes, pr.eval_every)
        self.consolidations = 0
        self.drift = DriftAdapter(settings, self)
        self._lr_factor = 1.0      # the optimiser's lr is model.lr times this
        # FedProx: the last federation aggregate, pulled toward while learning locally.
        self.proximal = ProximalAnchor()
        self.federated = Federated(settings.federation, self)
        torch.manual_seed(settings.model.seed)

    # -- construction ------------------------------------------------------------
    def build(self, n_features: int) -> None:
        """Create the model once the feature count is known (first valid event)."""
        if self.model is not None:
            return
        m = self.settings.model
        self.model = MLP(n_features, m.hidden, clip_sigmas=m.scaler_clip_sigmas).to(self.device)
        self.optimizer = self.make_optimizer(self.model.parameters())

    def make_optimizer(self, params: Any) -> torch.optim.Optimizer:
        """A fresh optimiser over ``params`` (also used when restoring a checkpoint)."""
        return make_optimizer(self.settings.model, self.device, params)

    def _grow(self, n_classes: int) -> None:
        assert self.model is not None and self.optimizer is not None
        old_params = list(self.model.parameters())
        if not self.model.add_classes(n_classes):
            return
        # The head was replaced: carry the optimiser state over, zero-padded for new rows.
        old_state = self.optimizer.state
        self.optimizer = self.make_optimizer(self.model.parameters())
        _carry_state(old_state, old_params, list(self.model.parameters()), self.optimizer)
        self.apply_lr_factor(force=True)

    # -- prequential API ----------------------------------------------------------
    def to_tensor(self, x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(x).to(self.device, non_blocking=True)

    @torch.inference_mode()
    def predict_indices(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Class indices and their probabilities; -1 while no class is known."""
        if self.model is None or self.model.n_classes == 0:
            n = x.shape[0]
            return (torch.full((n,), -1, dtype=torch.int64, device=x.device),
                    torch.zeros(n, device=x.device))
        proba = torch.softmax(self.model(x), dim=1)
        p, idx = proba.max(dim=1)
        return idx, p

    def predict(self, x: np.ndarray) -> tuple[list[Label | None], list[float]]:
        idx, p = self.predict_indices(self.to_tensor(x))
        labels = self.labels.labels
        return ([labels[i] if i >= 0 else None for i in idx.tolist()], p.tolist())

    def encode_labels(self, labels: Sequence[Label]) -> torch.Tensor:
        """Class indices; raises when a label would exceed ``model.max_classes``."""
        y, refused = self.admit_labels(labels)
        if refused.size:
            raise ValueError(f"label {labels[int(refused[0])]!r} would be class "
                             f"{len(self.labels) + 1}, beyond model.max_classes "
                             f"{self.labels.max_size}")
        return y

    def admit_labels(self, labels: Sequence[Label]) -> tuple[torch.Tensor, np.ndarray]:
        """Class indices of the admitted events, and the positions refused because their
        label would add a class beyond ``model.max_classes`` (the daemon dead-letters
        those as too_many_classes)."""
        idx = np.asarray(self.labels.encode(labels), dtype=np.int64)
        refused = np.flatnonzero(idx == REFUSED)
        if refused.size:
            idx = idx[idx != REFUSED]
        return torch.from_numpy(idx).to(self.device, non_blocking=True), refused

    def learn_tensors(self, x: torch.Tensor, y: torch.Tensor) -> UpdateStats:
        """Learn already-encoded classes (``y`` from :meth:`encode_labels`)."""
        self.build(x.shape[1])
        assert self.model is not None
        self._grow(len(self.labels))
        self.model.scaler.update(x)
        self.model.train()
        self.seen += int(x.shape[0])
        self.apply_lr_factor()
        return self.strategy.update(Batch(x, y))

    @property
    def passes(self) -> int:
        """Gradient steps per chunk: model.warmup_passes while young, then one."""
        return self.settings.model.warmup_passes if self.seen < self.warmup_events else 1

    @property
    def lr_factor(self) -> float:
        """Plasticity boost after a drift: >1 while it fades (MER's inner lr reads it)."""
        return self.drift.lr_factor

    @property
    def penalty_scale(self) -> float:
        """Every plugin penalty is multiplied by this (<1 during a plasticity boost)."""
        return self.drift.penalty_scale

    def apply_lr_factor(self, force: bool = False) -> None:
        """Set the optimiser's lr to model.lr times the drift adapter's factor."""
        factor = self.drift.lr_factor
        if (force or factor != self._lr_factor) and self.optimizer is not None:
            for group in self.optimizer.param_groups:
                group["lr"] = self.settings.model.lr * factor
            self._lr_factor = factor

    def reset_optimizer(self) -> None:
        """Fresh optimiser state (moments), e.g. after the weights were swapped."""
        if self.model is not None:
            self.optimizer = self.make_optimizer(self.model.parameters())
            self.apply_lr_factor(force=True)

    def prequential(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, UpdateStats]:
        """Test then train ``(x, y)``; returns the predictions (-1: no class known yet).

        After the warm-up the whole of ``(x, y)`` is predicted, then learned (the daemon
        bounds it with ``model.predict_block``, see :func:`in_blocks`).  During the
        warm-up it goes in growing chunks (half the events seen so far), each predicted
        by the model that learned every earlier chunk: a first micro-batch of 1024
        predicted by an empty model would score nothing, where chunks make the model
        useful after a few events.  (Chunks of step_size in every batch would cost ~35%
        of the learner's rate; blocks of predict_block bound the staleness cheaply.)
        """
        if self.seen >= self.warmup_events:
            pred = self.predict_indices(x)[0]
            return pred, self.learn_tensors(x, y)
        return _young_prequential(self, x, y)

    def observe(self, x: torch.Tensor, y: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, UpdateStats]:
        """The daemon's step: hold probe events out, test then train the rest, and
        re-score the forgetting probes when due, block by block (``model.predict_block``
        events, at least a step: a bigger step updates the model no more often anyway).
        Returns (learned mask, predictions of the learned events, stats)."""
        block = self.settings.model.predict_block
        return in_blocks(self._observe_block, x, y, block and max(block, self.step_size))

    def _observe_block(self, x: torch.Tensor, y: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor, UpdateStats]:
        keep = self.probes.holdout(x, y)
        if not bool(keep.all()):
            x, y = x[keep], y[keep]
        if self.model is not None and self.seen >= self.warmup_events:
            # prequential() split in two, so a drift this batch reveals is acted on
            # between the events before its detection and those after.
            pred = self.predict_indices(x)[0]
            cut = self.drift.before_learning(x, y, pred)
            if cut is None:
                stats = self.learn_tensors(x, y)
            else:
                parts = [self.learn_tensors(x[:cut], y[:cut])] if cut else []
                self.drift.adapt(x, y, pred, cut)
                if cut < int(y.shape[0]):
                    parts.append(self.learn_tensors(x[cut:], y[cut:]))
                stats = UpdateStats.combine(parts)
        else:
            pred, stats = self.prequential(x, y)
            cut = self.drift.before_learning(x, y, pred)   # warm-up: the model learned them
            if cut is not None:
                self.drift.adapt(x, y, pred, cut)
        self.drift.after_learning(x, y, pred, stats.loss)
        if self.model is not None:
            done = _consolidation_count(self.strategy)
            if done != self.consolidations:   # a task boundary: a new probe period
                self.consolidations = done
                self.probes.new_period(self.model)
            self.probes.after_learning(self.model, int(y.shape[0]))
        return keep, pred, stats

    def learn(self, x: np.ndarray, labels: Sequence[Label]) -> UpdateStats:
        return self.learn_tensors(self.to_tensor(x), self.encode_labels(labels))

    def consolidate(self, reason: str = "manual") -> bool:
        """A task boundary (e.g. a drift): strategies that care freeze what they know."""
        return bool(self.strategy.consolidate(reason))

    # -- callback for strategies ----------------------------------------------------
    def step(self, x: torch.Tensor, y: torch.Tensor, n_new: int | None = None,
             plugins: Sequence[Plugin] = (), memory: Any = None) -> torch.Tensor:
        """One optimiser step on ``(x, y)`` with the plugins' hooks; returns the loss.

        A step whose loss or gradient is NaN/inf is skipped (the weights stay finite)
        and counted in ``skipped_steps``.
        """
        assert self.model is not None and self.optimizer is not None
        self.optimizer.zero_grad(set_to_none=True)
        logits = self.model(x)
        loss = self.loss_fn(logits, y)
        ctx = None
        if plugins:
            ctx = Step(self.model, x, y, x.shape[0] if n_new is None else n_new, logits, memory)
            scale = self.penalty_scale
            for plugin in plugins:
                term = plugin.penalty(ctx)
                if term is not None:
                    loss = loss + (term if scale == 1.0 else scale * term)
        loss.backward()
        if ctx is not None:
            for plugin in plugins:
                plugin.after_backward(ctx)
        self.proximal.pull(self.model)
        if not step_is_finite(loss, gradients(self.model.parameters())):
            self.skipped_steps += 1
            self.optimizer.zero_grad(set_to_none=True)
            return loss.detach()
        self.optimizer.step()
        if ctx is not None:
            for plugin in plugins:
                plugin.after_step(ctx)
        return loss.detach()

    def set_proximal_anchor(self, anchor: dict[str, torch.Tensor] | None, mu: float) -> None:
        """Pull local steps toward ``anchor`` by ``mu / 2 * ||w - anchor||^2``."""
        self.proximal.set(anchor, mu)

    @torch.no_grad()
    def proximal_anchor(self) -> dict[str, torch.Tensor] | None:
        """The federated proximal anchor, or None (read by the federation merge)."""
        return self.proximal.anchor

    def note_skipped_step(self) -> None:
        """A step the finiteness guard dropped (strategies with their own step loop)."""
        self.skipped_steps += 1

    # -- checkpointing (keys and their meaning: learner_state) ---------------------------
    def state_dict(self) -> dict[str, Any]:
        return learner_state.dump(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        learner_state.load(self, state)


def make_optimizer(m: ModelSettings, device: torch.device, params: Any) -> torch.optim.Optimizer:
    if m.optimizer == "sgd":
        return torch.optim.SGD(params, lr=m.lr, momentum=0.9)
    # fused: one kernel per step instead of a Python loop over parameters (~1.2x here).
    return torch.optim.Adam(params, lr=m.lr, fused=device.type in ("cpu", "cuda"))


def _carry_state(old_state: Any, old_params: list[nn.Parameter], new_params: list[nn.Parameter],
                 optimizer: torch.optim.Optimizer) -> None:
    """Each old parameter's optimiser state onto its replacement (a grown head's new rows
    start from zero moments)."""
    for old, new in zip(old_params, new_params):
        for key, value in old_state.get(old, {}).items():
            if torch.is_tensor(value) and value.shape == old.shape and old.shape != new.shape:
                padded = torch.zeros_like(new)
                padded[: old.shape[0]] = value
                value = padded
            optimizer.state[new][key] = value


Observe = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor, UpdateStats]]


def in_blocks(observe: Observe, x: torch.Tensor, y: torch.Tensor, block: int
              ) -> tuple[torch.Tensor, torch.Tensor, UpdateStats]:
    """``observe`` over consecutive blocks of ``block`` events (0: the whole batch), so
    each block is predicted by a model that learned every earlier one.  A backlog's
    micro-batch of a thousand events predicted whole is judged by a model up to that
    many events old: on a stream the model is still learning that costs accuracy
    (``model.predict_block``)."""
    n = int(x.shape[0])
    if block <= 0 or n <= block:
        return observe(x, y)
    parts = [observe(x[i:i + block], y[i:i + block]) for i in range(0, n, block)]
    return (torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]),
            UpdateStats.combine([p[2] for p in parts]))


def _young_prequential(lrn: Learner, x: torch.Tensor, y: torch.Tensor
                       ) -> tuple[torch.Tensor, UpdateStats]:
    """:meth:`Learner.prequential` during the warm-up: chunks of at most half the events
    seen so far (and step_size), each predicted, then learned."""
    preds: list[torch.Tensor] = []
    stats: list[UpdateStats] = []
    i, n = 0, int(x.shape[0])
    while i < n:
        size = n - i
        if lrn.seen < lrn.warmup_events:
            size = max(1, min(size, lrn.step_size, lrn.seen // 2))
        xc, yc = x[i:i + size], y[i:i + size]
        preds.append(lrn.predict_indices(xc)[0])
        stats.append(lrn.learn_tensors(xc, yc))
        i += size
    if not preds:
        return torch.empty(0, dtype=torch.int64, device=x.device), UpdateStats(0.0, 0)
    return torch.cat(preds), UpdateStats.combine(stats)


def _consolidation_count(strategy: Any) -> int:
    return sum(strategy.consolidations.values())

