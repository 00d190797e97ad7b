"""Live forgetting: small probe sets held out of the stream, re-scored as the model learns.

A *probe* is up to ``per_class`` events of one class from one concept *period*; periods
are cut by consolidation points (a new class, every K events, a drift), so a probe is a
sample of "what the stream looked like then".  Probe events are never learned (the
daemon counts them as held out).  Every ``eval_every`` learned events all probes are
scored with one forward pass, which bounds the cost: at most ``max_probes * per_class``
rows per evaluation.

* ``forgetting``: mean over probes of (best accuracy it ever had − accuracy now);
* ``backward_transfer``: mean over probes of closed periods of (accuracy now − accuracy
  when their period closed) — negative when learning later periods hurt earlier ones.

When ``max_probes`` is reached the oldest probe is dropped.

>>> import torch
>>> p = ForgettingProbes(per_class=2, max_probes=4, eval_every=1)
>>> keep = p.holdout(torch.zeros(5, 1), torch.tensor([0, 0, 0, 1, 1]))
>>> keep.tolist()                 # two of class 0 and two of class 1 held out
[False, False, True, False, False]
>>> len(p.probes), p.held_out
(2, 4)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass
class Probe:
    period: int
    label: int                  # class index
    x: torch.Tensor
    y: torch.Tensor
    best: float = float("nan")  # best accuracy seen
    now: float = float("nan")   # accuracy at the last evaluation
    at_close: float = float("nan")  # accuracy when its period closed

    def state_dict(self) -> dict[str, Any]:
        return {"period": self.period, "label": self.label, "x": self.x.cpu(),
                "y": self.y.cpu(), "best": self.best, "now": self.now,
                "at_close": self.at_close}


class ForgettingProbes:
    def __init__(self, per_class: int = 32, max_probes: int = 16, eval_every: int = 5_000) -> None:
        self.per_class = per_class
        self.max_probes = max_probes
        self.eval_every = eval_every
        self.probes: list[Probe] = []
        self.period = 0
        self.held_out = 0
        self._since_eval = 0

    @property
    def enabled(self) -> bool:
        return self.per_class > 0 and self.max_probes > 0

    def _probe(self, label: int) -> Probe | None:
        for probe in self.probes:
            if probe.period == self.period and probe.label == label:
                return probe
        return None

    @torch.no_grad()
    def holdout(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Take what the current period's probes still lack; returns the mask to learn."""
        keep = torch.ones(y.shape[0], dtype=torch.bool, device=y.device)
        if not self.enabled or y.numel() == 0:
            return keep
        for label in torch.unique(y).tolist():
            probe = self._probe(label)
            have = 0 if probe is None else probe.y.shape[0]
            if have >= self.per_class:
                continue
            rows = torch.nonzero(y == label).flatten()[: self.per_class - have]
            if probe is None:
                probe = Probe(self.period, int(label), x[rows].clone(), y[rows].clone())
                self.probes.append(probe)
                if len(self.probes) > self.max_probes:
                    self.probes.pop(0)
            else:
                probe.x = torch.cat([probe.x, x[rows]])
                probe.y = torch.cat([probe.y, y[rows]])
            keep[rows] = False
            self.held_out += int(rows.numel())
        return keep

    def new_period(self, model: nn.Module | None) -> None:
        """A consolidation point: close the current period (its probes' accuracy is kept)."""
        if model is not None:
            self.evaluate(model)
        for probe in self.probes:
            if probe.period == self.period:
                probe.at_close = probe.now
        self.period += 1

    def after_learning(self, model: nn.Module, n: int) -> bool:
        """Evaluate every ``eval_every`` learned events; True when it did."""
        self._since_eval += n
        if not self.enabled or self._since_eval < self.eval_every or not self.probes:
            return False
        self.evaluate(model)
        return True

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> None:
        self._since_eval = 0
        if not self.probes:
            return
        was_training = model.training
        model.eval()
        x = torch.cat([p.x for p in self.probes])
        pred = model(x).argmax(1) if x.shape[0] else x.new_zeros(0, dtype=torch.int64)
        model.train(was_training)
        hits = (pred == torch.cat([p.y for p in self.probes])).float()
        for probe, acc in zip(self.probes, _segment_means(hits, [p.y.shape[0] for p in self.probes])):
            probe.now = acc
            probe.best = acc if probe.best != probe.best else max(probe.best, acc)

    # -- summaries ------------------------------------------------------------------------
    @property
    def forgetting(self) -> float:
        drops = [p.best - p.now for p in self.probes if p.now == p.now]
        return sum(drops) / len(drops) if drops else 0.0

    @property
    def backward_transfer(self) -> float:
        deltas = [p.now - p.at_close for p in self.probes
                  if p.at_close == p.at_close and p.now == p.now]
        return sum(deltas) / len(deltas) if deltas else 0.0

    def accuracies(self) -> list[float]:
        """Accuracy now of each probe slot (oldest first); NaN before its first evaluation."""
        return [p.now for p in self.probes]

    # -- state ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"probes": [p.state_dict() for p in self.probes], "period": self.period,
                "held_out": self.held_out, "since_eval": self._since_eval}

    def load_state_dict(self, state: dict[str, Any], device: torch.device | None = None) -> None:
        self.probes = [Probe(int(s["period"]), int(s["label"]), s["x"].to(device or "cpu"),
                             s["y"].to(device or "cpu"), float(s["best"]), float(s["now"]),
                             float(s["at_close"])) for s in state["probes"]]
        self.period = int(state["period"])
        self.held_out = int(state["held_out"])
        self._since_eval = int(state["since_eval"])


def _segment_means(values: torch.Tensor, sizes: list[int]) -> list[float]:
    out, start = [], 0
    for size in sizes:
        seg = values[start:start + size]
        out.append(float(seg.mean()) if size else float("nan"))
        start += size
    return out
