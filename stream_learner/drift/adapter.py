"""Drift detection and adaptation for one learner (config ``drift`` and ``adapt``).

Every labeled batch goes through :meth:`DriftAdapter.before_learning` (its prequential
errors and its features feed the detectors, :class:`~.monitor.DriftMonitor`), then
:meth:`DriftAdapter.adapt` if it revealed a drift (between learning the events before
the detection and those after), and, once learned, :meth:`DriftAdapter.after_learning`
(its training loss; the pool's window).  A drift acts only when the error signal (the loss
signal when there is no error detector) *rose*: an error rate that fell is a change too,
and is counted, but calls for no adaptation.  Nor does a drift within
``drift.cooldown_events`` of the last adaptation, so adaptation cannot make the detector
thrash.  An adaptation runs, in this order, each policy that is enabled:

1. ``pool``: save the model as the concept that ended; as soon as the events since the
   drift show a snapshot clearly doing better, switch to it (:mod:`.pool`; at most
   ``adapt.pool_decide_events`` later).  A recall cancels the boost (the model already
   fits) and starts the learning rate at ``adapt.recall_lr_factor``, fading back to
   normal, so the first steps on an emptied replay memory do not knock it off;
2. ``consolidate``: the continual strategy's task boundary (EWC, SI, MAS and LwF treat
   the model as it is now, recalled or not, as a finished task);
3. ``boost``: a higher learning rate and weaker penalties, fading out (:mod:`.boost`).

Every policy that acted is counted in :attr:`DriftAdapter.adaptations` (exported as
``stream_learner_drift_adaptations_total{policy}``).  Input drift is exported, not acted
on: without labels there is no evidence that the model got worse.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..config import Settings
from .boost import PlasticityBoost
from .monitor import DriftMonitor, Signal
from .lagged import LaggedCopies
from .pool import ConceptPool
from .report import DriftReport

LAGGED_COPIES = 4       # with adapt.pool_lag_events 256: a copy from up to ~1,000 events ago


class DriftAdapter:
    def __init__(self, settings: Settings, learner: Any) -> None:
        d, a = settings.drift, settings.adapt
        self.learner = learner
        self.monitor = DriftMonitor(d, seed=settings.model.seed)
        self.warmup, self.cooldown = d.warmup_events, d.cooldown_events
        self.grace = d.new_class_grace_events
        self.replay_reset = a.boost and a.boost_replay_reset
        self._births: list[int] = []             # learner.seen when each class first came
        self.boost = (PlasticityBoost(a.boost_lr_factor, a.boost_events,
                                      a.boost_regularisation_scale, a.boost_reset_optimizer)
                      if a.boost else None)
        self.consolidate = a.consolidate
        self.pool = (ConceptPool(a.pool_size, a.pool_window, a.pool_margin, learner.device)
                     if a.pool else None)
        self.check_every = a.pool_check_events
        # After a recall: smaller steps, fading back to normal (a boost below 1).
        self.calm = (PlasticityBoost(a.recall_lr_factor, a.boost_events, 1.0)
                     if a.pool and a.recall_lr_factor != 1.0 else None)
        self.lagged = (LaggedCopies(a.pool_lag_events, LAGGED_COPIES)
                       if a.pool and a.pool_lag_events else None)
        self._age = 0                            # of the drift being acted on
        self.decide_after = a.pool_decide_events
        self.decide_early = min(a.pool_early_events, a.pool_decide_events)
        self.adaptations: dict[str, int] = {}
        self.signals: list[Signal] = []          # of the last batch
        self._quiet = 0                          # learned events left in the cooldown
        self._since_check = 0

    # -- what the learner reads ----------------------------------------------------------
    @property
    def lr_factor(self) -> float:
        factor = self.boost.lr_factor if self.boost is not None else 1.0
        return factor * self.calm.lr_factor if self.calm is not None else factor

    @property
    def penalty_scale(self) -> float:
        return self.boost.penalty_scale if self.boost is not None else 1.0

    # -- feeding ------------------------------------------------------------------------
    def before_learning(self, x: torch.Tensor, y: torch.Tensor,
                        pred: torch.Tensor) -> int | None:
        """A labeled batch and its prequential predictions, before the model learns it.

        Returns None, or, when the batch reveals a drift to act on, the index of the
        event after the one that fired the detector: the learner then learns the events
        before it (they belong to the concept that ends), calls :meth:`adapt`, and
        learns the rest with the adapted model.  So the pool's snapshot of the old
        concept has not learned the events after the detection, and a recalled or
        boosted model learns exactly those."""
        self.signals = []
        model = self.learner.model
        if int(y.shape[0]) == 0 or model is None:
            return None
        y_np = y.cpu().numpy()
        self._note_births(y_np)
        if self.learner.seen >= self.warmup:
            errors = (pred.cpu().numpy() != y_np) & ~self._young(y_np)
            self.signals += self.monitor.update(errors)
            self.signals += self.monitor.update_inputs(x, model.scaler)
        acting = [s for s in self.signals if self._acts_on(s)]
        if not acting or self._quiet:
            return None
        at = acting[-1].at
        self._age = acting[-1].age
        return int(y.shape[0]) if at < 0 else at + 1

    def adapt(self, x: torch.Tensor, y: torch.Tensor, pred: torch.Tensor, cut: int) -> None:
        """Act on the drift :meth:`before_learning` found; events from ``cut`` on followed
        its detection and are the pool's first evidence."""
        self._adapt(cut, (x[cut:], y[cut:], pred[cut:] == y[cut:]))

    def after_learning(self, x: torch.Tensor, y: torch.Tensor, pred: torch.Tensor,
                       loss: float) -> list[Signal]:
        """The same batch, learned; ``loss`` is its mean training loss."""
        n = int(y.shape[0])
        model = self.learner.model
        if n == 0 or model is None:
            return []
        if self.pool is not None:
            self.pool.remember(x, y, pred == y)
        if self.lagged is not None:
            self.lagged.after_learning(model, self.learner.seen)
        if self.boost is not None:
            self.boost.advance(n)
        if self.calm is not None:
            self.calm.advance(n)
        self._quiet = max(0, self._quiet - n)
        found = self.monitor.update_loss(loss) if self.learner.seen >= self.warmup else []
        self.signals += found
        if any(self._acts_on(s) for s in found) and self._quiet == 0:
            self._adapt(0)
        elif self.pool is not None and self.pool.pending:
            entry = self.pool.decide(model, self.decide_early, self.decide_after)
            if entry is not None:
                self._recall(entry)
        elif self.pool is not None and self.check_every:
            self._since_check += n
            if self._since_check >= self.check_every:
                self._since_check = 0
                entry = self.pool.check(model)
                if entry is not None:
                    self._recall(entry)
        return found

    def _note_births(self, y: np.ndarray) -> None:
        top = int(y.max()) + 1 if y.size else 0
        if top > len(self._births):
            self._births += [self.learner.seen] * (top - len(self._births))

    def _young(self, y: np.ndarray) -> np.ndarray:
        """Events of classes too new to count their errors as drift evidence."""
        seen = self.learner.seen
        young = [c for c, born in enumerate(self._births) if seen - born < self.grace]
        return np.isin(y, young) if young and self._births[0] < seen - self.grace \
            else np.zeros(y.shape, dtype=bool)

    def observe_inputs(self, x: torch.Tensor) -> list[Signal]:
        """Unlabeled events: only the input detectors see them."""
        model = self.learner.model
        if model is None or self.learner.seen < self.warmup:
            return []
        return self.monitor.update_inputs(x, model.scaler)

    def _acts_on(self, s: Signal) -> bool:
        if s.kind != "drift" or not s.rising:
            return False
        return s.signal == "error" or (s.signal == "loss" and self.monitor.error is None)

    # -- adapting -----------------------------------------------------------------------
    def _adapt(self, unseen: int, evidence: tuple[torch.Tensor, ...] | None = None) -> None:
        """``unseen``: events of the revealing batch up to the detection, not learned yet
        and not evidence for the pool; ``evidence``: the rest (x, y, hits)."""
        recalled = None
        if self.pool is not None:
            # The old concept as it was before the change began, if a copy that old is
            # kept: the model has learned the events the detector needed since.
            model = self.learner.model
            age, self._age = self._age, 0
            if self.lagged is not None:
                model = self.lagged.before(self.learner.seen - age) or model
            self.pool.on_drift(model, unseen, age)
            if evidence is not None and int(evidence[1].shape[0]):
                recalled = self.pool.decide(self.learner.model, self.decide_early,
                                            self.decide_after, events=evidence)
        if self.consolidate and self.learner.consolidate("drift"):
            self._count("consolidate")
        if recalled is not None:
            # Before the boost: its optimiser reset would jolt the recalled weights.
            self._recall(recalled)
        elif self.boost is not None:
            self.boost.start()
            if self.boost.reset_optimizer:
                self.learner.reset_optimizer()
            if self.replay_reset:
                self._clear_replay()
            self._count("boost")
        self._quiet = self.cooldown
        self._since_check = 0

    def _recall(self, entry: Any) -> None:
        assert self.pool is not None
        self.pool.switch(entry, self.learner.model)
        if self.lagged is not None:
            self.lagged.clear()             # copies of the model just replaced
        if self.boost is not None:
            self.boost.remaining = 0        # the recalled model fits: no extra plasticity
        if self.calm is not None:
            self.calm.start()               # measured: +1-2 points on the returning concept
        if self.replay_reset:
            self._clear_replay()            # it holds the concept just left
        # The optimiser keeps its moments: a fresh Adam's first steps are ~lr on every
        # weight whatever the gradient, a jolt that knocked recalled models off (measured).
        self.monitor.restart_error()
        self._since_check = 0
        self._count("pool")

    def _clear_replay(self) -> None:
        self.learner.strategy.clear_memory()

    def _count(self, policy: str) -> None:
        self.adaptations[policy] = self.adaptations.get(policy, 0) + 1

    # -- reporting ----------------------------------------------------------------------
    def report(self) -> DriftReport:
        m, pool = self.monitor, self.pool
        return DriftReport(
            drifts=dict(m.drifts), warnings=dict(m.warnings),
            adaptations=dict(self.adaptations),
            concept_reuse=pool.reuse if pool is not None else 0,
            concept_id=pool.current if pool is not None else 0,
            concepts_known=len(pool.entries) if pool is not None else 0,
            last_drift_time=m.last_drift_time, window_events=m.window_events,
            accuracy_before=m.accuracy_before, accuracy_since=m.accuracy_since,
            lr_factor=self.lr_factor)

    # -- state --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"monitor": self.monitor.state_dict(),
                "boost": None if self.boost is None else self.boost.state_dict(),
                "calm": None if self.calm is None else self.calm.state_dict(),
                "pool": None if self.pool is None else self.pool.state_dict(),
                "adaptations": dict(self.adaptations), "quiet": self._quiet,
                "births": torch.tensor(self._births, dtype=torch.int64),
                "since_check": self._since_check,
                "lagged": None if self.lagged is None else self.lagged.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.monitor.load_state_dict(state["monitor"], self.learner.device)
        if self.boost is not None and state["boost"] is not None:
            self.boost.load_state_dict(state["boost"])
        if self.calm is not None and state.get("calm") is not None:
            self.calm.load_state_dict(state["calm"])
        if self.pool is not None and state["pool"] is not None:
            self.pool.load_state_dict(state["pool"])
        self.adaptations = {str(k): int(v) for k, v in state["adaptations"].items()}
        self._quiet, self._since_check = int(state["quiet"]), int(state["since_check"])
        self._births = [int(v) for v in state["births"].tolist()]
        if self.lagged is not None and state.get("lagged") is not None:
            self.lagged.load_state_dict(state["lagged"], self.learner.device)
