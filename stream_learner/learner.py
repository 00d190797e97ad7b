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

from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from .config import Settings
from .drift import DriftAdapter
from .federation.merge import Federated
from .finite import gradients, step_is_finite
from .forgetting import ForgettingProbes
from .labels import REFUSED, Label, LabelMap
from .model import MLP, select_device
from .strategies import Batch, Plugin, Step, Strategy, UpdateStats, make_strategy


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
        self._consolidations = 0
        self.drift = DriftAdapter(settings, self)
        self._lr_factor = 1.0      # the optimiser's lr is model.lr times this
        # FedProx: the last federation aggregate, pulled toward while learning locally.
        self._anchor: dict[str, torch.Tensor] | None = None
        self._mu = 0.0
        self.federated = Federated(settings.federation, self)
        torch.manual_seed(settings.model.seed)

    # -- construction ------------------------------------------------------------
    def build(self, n_features: int) -> None:
        """Create the model once the feature count is known (first valid event)."""
        if self.model is not None:
            return
        m = self.settings.model
        self.model = MLP(n_features, m.hidden, clip_sigmas=m.scaler_clip_sigmas).to(self.device)
        self.optimizer = self._make_optimizer(self.model.parameters())

    def _make_optimizer(self, params: Any) -> torch.optim.Optimizer:
        m = self.settings.model
        if m.optimizer == "sgd":
            return torch.optim.SGD(params, lr=m.lr, momentum=0.9)
        # fused: one kernel per step instead of a Python loop over parameters (~1.2x here).
        return torch.optim.Adam(params, lr=m.lr, fused=self.device.type in ("cpu", "cuda"))

    def _grow(self, n_classes: int) -> None:
        assert self.model is not None and self.optimizer is not None
        old_params = list(self.model.parameters())
        if not self.model.add_classes(n_classes):
            return
        # The head was replaced: carry the optimiser state over, zero-padded for new rows.
        old_state = self.optimizer.state
        self.optimizer = self._make_optimizer(self.model.parameters())
        for old, new in zip(old_params, self.model.parameters()):
            for key, value in old_state.get(old, {}).items():
                if torch.is_tensor(value) and value.shape == old.shape and old.shape != new.shape:
                    padded = torch.zeros_like(new)
                    padded[: old.shape[0]] = value
                    value = padded
                self.optimizer.state[new][key] = value
        self._apply_lr_factor(force=True)

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

    @torch.inference_mode()
    def predict_top(self, x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``k`` likeliest class indices per row and their probabilities, best first;
        fewer columns while fewer classes are known (none: zero columns)."""
        if self.model is None or self.model.n_classes == 0:
            n = x.shape[0]
            return (torch.empty((n, 0), dtype=torch.int64, device=x.device),
                    torch.empty((n, 0), device=x.device))
        proba = torch.softmax(self.model(x), dim=1)
        p, idx = proba.topk(min(k, proba.shape[1]), dim=1)
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
        self._apply_lr_factor()
        return self.strategy.update(Batch(x, y))

    @property
    def lr_factor(self) -> float:
        """Plasticity boost after a drift: >1 while it fades (MER's inner lr reads it)."""
        return self.drift.lr_factor

    @property
    def penalty_scale(self) -> float:
        """Every plugin penalty is multiplied by this (<1 during a plasticity boost)."""
        return self.drift.penalty_scale

    def _apply_lr_factor(self, force: bool = False) -> None:
        factor = self.drift.lr_factor
        if (force or factor != self._lr_factor) and self.optimizer is not None:
            for group in self.optimizer.param_groups:
                group["lr"] = self.settings.model.lr * factor
            self._lr_factor = factor

    def reset_optimizer(self) -> None:
        """Fresh optimiser state (moments), e.g. after the weights were swapped."""
        if self.model is not None:
            self.optimizer = self._make_optimizer(self.model.parameters())
            self._apply_lr_factor(force=True)

    def prequential(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, UpdateStats]:
        """Test then train ``(x, y)``; returns the predictions (-1: no class known yet).

        After the warm-up the whole micro-batch is predicted, then learned.  During the
        warm-up it goes in growing chunks (half the events seen so far), each predicted
        by the model that learned every earlier chunk: a first micro-batch of 1024
        predicted by an empty model would score nothing, where chunks make the model
        useful after a few events.  (Chunking every batch costs ~35% of the learner's
        rate for no measurable accuracy once warm.)
        """
        if self.seen >= self.warmup_events:
            pred = self.predict_indices(x)[0]
            return pred, self.learn_tensors(x, y)
        preds: list[torch.Tensor] = []
        stats: list[UpdateStats] = []
        i, n = 0, int(x.shape[0])
        while i < n:
            size = n - i
            if self.seen < self.warmup_events:
                size = max(1, min(size, self.step_size, self.seen // 2))
            xc, yc = x[i:i + size], y[i:i + size]
            preds.append(self.predict_indices(xc)[0])
            stats.append(self.learn_tensors(xc, yc))
            i += size
        if not preds:
            return torch.empty(0, dtype=torch.int64, device=x.device), UpdateStats(0.0, 0)
        return torch.cat(preds), UpdateStats.combine(stats)

    def observe(self, x: torch.Tensor, y: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, UpdateStats]:
        """The daemon's step: hold probe events out, test then train the rest, and
        re-score the forgetting probes when due.  Returns (learned mask, predictions of
        the learned events, stats)."""
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
            if done != self._consolidations:   # a task boundary: a new probe period
                self._consolidations = done
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
        if self._anchor is not None:
            self._pull_toward_anchor()
        if not self._finite(loss):
            self.skipped_steps += 1
            self.optimizer.zero_grad(set_to_none=True)
            return loss.detach()
        self.optimizer.step()
        if ctx is not None:
            for plugin in plugins:
                plugin.after_step(ctx)
        return loss.detach()

    def set_proximal_anchor(self, anchor: dict[str, torch.Tensor] | None, mu: float) -> None:
        """Pull local steps toward ``anchor`` (parameter name -> tensor) by
        ``mu / 2 * ||w - anchor||^2``; a parameter whose shape changed since (a grown
        head) is not pulled."""
        self._anchor = None if anchor is None or mu == 0 else anchor
        self._mu = float(mu)

    @torch.no_grad()
    def proximal_anchor(self) -> dict[str, torch.Tensor] | None:
        """The federated proximal anchor, or None (read by the federation merge)."""
        return self._anchor

    def note_skipped_step(self) -> None:
        """A step the finiteness guard dropped (strategies with their own step loop)."""
        self.skipped_steps += 1

    def _pull_toward_anchor(self) -> None:
        """Add the gradient of ``mu / 2 * ||w - anchor||^2`` to the task gradient.

        Two fused ops on the gradients, where the same term in the loss cost three
        autograd ops per tensor, forward and backward, on every step (measured: the
        largest part of federation's cost on a busy daemon).  The loss the detectors
        see stays the task's.
        """
        assert self.model is not None and self._anchor is not None
        params, anchors = [], []
        for name, p in self.model.named_parameters():
            a = self._anchor.get(name)
            if a is not None and a.shape == p.shape and p.grad is not None:
                params.append(p)
                anchors.append(a)
        if params:
            diffs = torch._foreach_sub(params, anchors)
            torch._foreach_add_([p.grad for p in params], diffs, alpha=self._mu)

    def _finite(self, loss: torch.Tensor) -> bool:
        assert self.model is not None
        return step_is_finite(loss, gradients(self.model.parameters()))

    # -- checkpointing ------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "labels": self.labels.state_dict(),
            "n_features": None if self.model is None else self.model.n_features,
            "model": None if self.model is None else _to_cpu(self.model.state_dict()),
            # The standardiser's first rows until its robust re-estimate (raw events:
            # kept out of the model's state_dict, which peers receive).
            "scaler_start_rows": None if self.model is None else
            _to_cpu(self.model.scaler.start_rows),
            "optimizer": None if self.optimizer is None else _to_cpu(self.optimizer.state_dict()),
            "strategy_name": self.strategy.name,
            "strategy": self.strategy.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "seen": self.seen,
            "skipped_steps": self.skipped_steps,
            "probes": self.probes.state_dict(),
            "consolidations": self._consolidations,
            "drift": self.drift.state_dict(),
            "proximal": None if self._anchor is None else
            {"mu": self._mu, "anchor": _to_cpu(self._anchor)},
            "federated": self.federated.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["strategy_name"] != self.strategy.name:
            raise ValueError(f"checkpoint was written by strategy {state['strategy_name']!r}, "
                             f"config asks for {self.strategy.name!r}")
        self.labels.load_state_dict(state["labels"])
        if state["model"] is not None:
            self.model = None
            self.build(state["n_features"])
            assert self.model is not None
            self.model.load_state_dict(state["model"])
            rows = state.get("scaler_start_rows")
            self.model.scaler.start_rows = None if rows is None else rows.to(self.device)
            self.optimizer = self._make_optimizer(self.model.parameters())
            self.optimizer.load_state_dict(state["optimizer"])
        self.strategy.load_state_dict(state["strategy"])
        self.seen = int(state.get("seen", 0))
        self.skipped_steps = int(state.get("skipped_steps", 0))
        if "probes" in state:
            self.probes.load_state_dict(state["probes"], self.device)
            self._consolidations = int(state["consolidations"])
        if "drift" in state:
            self.drift.load_state_dict(state["drift"])
        self.federated.load_state_dict(state.get("federated", {}))
        prox = state.get("proximal")
        self.set_proximal_anchor(None if prox is None else
                                 {k: v.to(self.device) for k, v in prox["anchor"].items()},
                                 0.0 if prox is None else float(prox["mu"]))
        self._apply_lr_factor(force=True)
        # Last: rebuilding the drift monitor and the pool draws from the generator.
        torch.set_rng_state(state["torch_rng"])


def _consolidation_count(strategy: Any) -> int:
    return sum(strategy.consolidations.values())


def _to_cpu(obj: Any) -> Any:
    if torch.is_tensor(obj):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj
