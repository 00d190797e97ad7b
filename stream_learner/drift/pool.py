"""Recurring-concept pool: snapshots of past concepts, recalled when they come back.

The model is always "on" a concept (``current``, an id).  At a drift the model is saved
as that concept's snapshot and the stream is taken to be on a new concept (the next id).
The events after the drift (those of the revealing batch after the event that fired
the detector, then every later batch; at most ``adapt.pool_window``) are the evidence:
a window reaching back before the drift would favour the concept that just ended.
From ``adapt.pool_early_events`` of them on, after every batch (the first look is at
the revealing batch's events after the detection, before they are learned), a snapshot
that is better by three standard errors is recalled at once; at
``adapt.pool_decide_events`` the plain rule below decides, and the wait ends.  The
model is scored by its prequential hits on them (predicted before it learned them; its
accuracy after learning them is a training score).  A snapshot is recalled when it beats
those hits by ``adapt.pool_margin`` *and* its accuracy on them is statistically no
worse than its own prequential accuracy when it was saved (within two standard errors,
at least :data:`RECALL_TOLERANCE`): the concept is really back, not merely less wrong
than a model that is lost too; a wrong recall would let the next drift overwrite that
concept's snapshot.  The concept that just ended is not a candidate at that decision
(the detector says the world moved away from it; right after the boost's resets the
model can briefly score below it even so).  It is loaded into the model (its weights and
its standardisation; head rows of classes it never knew keep the current ones) and
becomes ``current``: a concept that came back is *recalled* instead of relearned.  Every
``adapt.pool_check_events`` learned events the same scoring runs on the whole window
without a drift, so a recall does not wait for the detector.

Memory: at most ``adapt.pool_size`` model copies (the least recently used goes) plus the
window, all on the device.  Everything is in the checkpoint as plain tensors.

>>> import torch
>>> from stream_learner.model import MLP
>>> net = MLP(2, (8,), n_classes=2)
>>> pool = ConceptPool(size=4, window=32, margin=0.05, device=torch.device("cpu"))
>>> def events(n): return torch.randn(n, 2), torch.randint(0, 2, (n,)), torch.ones(n, dtype=torch.bool)
>>> pool.remember(*events(40))
>>> pool.on_drift(net, unseen=40); pool.current, len(pool.entries)
(1, 1)
>>> pool.remember(*events(40)); pool.remember(*events(40))
>>> pool.decide(net, early=16, after=32) is None   # nothing else to recall yet
True
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..model import MLP


RECALL_TOLERANCE = 0.02
"""The least shortfall from its accuracy at save time that a recalled snapshot may show
(the allowed shortfall is two standard errors of the difference, at least this)."""


@dataclass
class Entry:
    id: int
    model: nn.Module
    last_used: int
    reference: float = 1.0      # the model's prequential accuracy on the window when saved
    reference_n: int = 0        # ...over this many events


class ConceptPool:
    def __init__(self, size: int, window: int, margin: float, device: torch.device) -> None:
        self.pending = False      # a drift waits for its decision
        self.ended = -1           # the concept that ended at that drift
        self.post = 0             # labeled events remembered since that drift's batch
        self.size, self.window, self.margin = int(size), int(window), float(margin)
        self.device = device
        self.entries: list[Entry] = []
        self.current = 0
        self.next_id = 1
        self.reuse = 0
        self.tick = 0
        self._x: torch.Tensor | None = None     # ring buffer of recent labeled events
        self._y: torch.Tensor | None = None
        self._hit: torch.Tensor | None = None   # ...and the model's prequential hits
        self._pos = 0
        self._filled = 0

    # -- the window ---------------------------------------------------------------------
    def remember(self, x: torch.Tensor, y: torch.Tensor, hit: torch.Tensor) -> None:
        """Learned events and whether the model predicted each right before learning it."""
        n = int(x.shape[0])
        if n == 0:
            return
        if self._x is None or self._x.shape[1] != x.shape[1]:
            self._x = torch.zeros(self.window, x.shape[1], dtype=x.dtype, device=x.device)
            self._y = torch.zeros(self.window, dtype=torch.int64, device=x.device)
            self._hit = torch.zeros(self.window, dtype=torch.bool, device=x.device)
            self._pos = self._filled = 0
        assert self._y is not None and self._hit is not None
        if n >= self.window:
            x, y, hit, n = x[-self.window:], y[-self.window:], hit[-self.window:], self.window
        # At most two contiguous runs of the ring: slice copies, no index tensors.
        first = min(n, self.window - self._pos)
        for dst, src in ((self._x, x), (self._y, y), (self._hit, hit)):
            dst[self._pos:self._pos + first] = src[:first]
            if first < n:
                dst[:n - first] = src[first:]
        self._pos = (self._pos + n) % self.window
        self._filled = min(self.window, self._filled + n)
        if self.pending:
            self.post += n

    def recent(self, n: int | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """The last ``n`` (default: all) remembered events, oldest first: x, y, hits."""
        n = self._filled if n is None else min(n, self._filled)
        if self._x is None or self._y is None or self._hit is None or n < min(self.window, 16):
            return None
        idx = (torch.arange(self._pos - n, self._pos, device=self._x.device)) % self.window
        return self._x[idx], self._y[idx], self._hit[idx]

    # -- decisions ----------------------------------------------------------------------
    def on_drift(self, model: nn.Module, unseen: int, age: int = 0) -> None:
        """Save the model as the concept that just ended; the stream is on a new one.

        Called once the first ``unseen`` events of the batch that revealed the drift (up
        to the one that fired the detector) are learned: they are not evidence for the
        decision, as some predate the change.  The rest, not learned yet, are.  ``age``:
        the newest remembered events that followed the change (estimated), left out of
        the snapshot's reference accuracy.
        """
        self._save(model, age)
        self.ended = self.current
        self.current, self.next_id = self.next_id, self.next_id + 1
        self.pending, self.post = True, -int(unseen)

    def decide(self, model: nn.Module, early: int, after: int,
               events: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
               ) -> Entry | None:
        """While a drift waits for its decision: a snapshot to switch to, if any.

        Scored on the events since the drift (or on ``events``: x, y, hits of the
        revealing batch after the detection, not remembered yet).  From ``early`` events
        on, a snapshot is chosen only if it beats the model by three standard errors
        as well as the margin: the decision is looked at after every batch, and each
        look is a chance for a wrong recall.  At ``after`` events the plain margin rule
        decides, and the wait ends.
        """
        if not self.pending:
            return None
        window = events if events is not None else self.recent(max(self.post, 0))
        n = 0 if window is None else int(window[1].shape[0])
        if window is None or n < early:
            return None
        final = events is None and n >= after
        choice = self._better_than(model, *window, exclude=self.ended, strict=not final)
        if choice is not None or final:
            self.pending, self.post = False, 0
        return choice

    def check(self, model: nn.Module) -> Entry | None:
        """Without a drift: a snapshot to switch to (the model is saved first), if any."""
        window = self.recent()
        if window is None or not any(e.id != self.current for e in self.entries):
            return None
        choice = self._better_than(model, *window)
        if choice is not None:
            self._save(model)
        return choice

    def switch(self, entry: Entry, model: nn.Module) -> None:
        """Load ``entry`` into ``model`` (in place) and make it the current concept."""
        with torch.no_grad():
            params = dict(entry.model.named_parameters())
            for name, p in model.named_parameters():
                src = params[name]
                rows = min(src.shape[0], p.shape[0])
                p[:rows].copy_(src[:rows])
        model.scaler.load_state_dict(entry.model.scaler.state_dict())  # drops its cache
        self.tick += 1
        entry.last_used = self.tick
        self.current = entry.id
        self.reuse += 1

    def _better_than(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                     hit: torch.Tensor, exclude: int = -1, strict: bool = False
                     ) -> Entry | None:
        hits = float(hit.float().mean())
        best, best_acc = None, hits + self.margin
        n = int(y.shape[0])
        for entry in self.entries:
            if entry.id in (self.current, exclude):
                continue
            acc = _accuracy(entry.model, x, y)
            if strict and acc - hits < 3.0 * math.sqrt((acc * (1 - acc) + hits * (1 - hits))
                                                       / max(n, 1)):
                continue
            if acc > best_acc and acc >= entry.reference - _shortfall(entry, acc, n):
                best, best_acc = entry, acc
        return best

    def _save(self, model: nn.Module, age: int = 0) -> None:
        self.tick += 1
        snap = _frozen(copy.deepcopy(model))
        window = self.recent()
        if window is not None and age and window[2].shape[0] - age >= 16:
            window = tuple(w[:-age] for w in window)   # type: ignore[assignment]
        reference = float(window[2].float().mean()) if window is not None else 1.0
        ref_n = int(window[2].shape[0]) if window is not None else 0
        for entry in self.entries:
            if entry.id == self.current:
                entry.model, entry.last_used = snap, self.tick
                entry.reference, entry.reference_n = reference, ref_n
                return
        self.entries.append(Entry(self.current, snap, self.tick, reference, ref_n))
        if len(self.entries) > self.size:
            victim = min((e for e in self.entries if e.id != self.current),
                         key=lambda e: e.last_used)
            self.entries.remove(victim)

    # -- state --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "entries": [{"id": e.id, "last_used": e.last_used, "reference": e.reference,
                         "reference_n": e.reference_n,
                         "n_features": int(e.model.n_features),
                         "hidden": [int(h) for h in e.model.hidden],
                         "weights": {k: v.detach().cpu().clone()
                                     for k, v in e.model.state_dict().items()}}
                        for e in self.entries],
            "current": self.current, "next_id": self.next_id, "reuse": self.reuse,
            "tick": self.tick, "pos": self._pos, "filled": self._filled, "post": self.post,
            "pending": self.pending, "ended": self.ended,
            "x": None if self._x is None else self._x.cpu().clone(),
            "y": None if self._y is None else self._y.cpu().clone(),
            "hit": None if self._hit is None else self._hit.cpu().clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.entries = []
        for e in state["entries"]:
            net = MLP(int(e["n_features"]), tuple(int(h) for h in e["hidden"]))
            net.load_state_dict(e["weights"])
            self.entries.append(Entry(int(e["id"]), _frozen(net.to(self.device)),
                                      int(e["last_used"]), float(e["reference"]),
                                      int(e["reference_n"])))
        self.entries = sorted(self.entries, key=lambda e: e.last_used)[-self.size:]
        self.current, self.next_id = int(state["current"]), int(state["next_id"])
        self.reuse, self.tick = int(state["reuse"]), int(state["tick"])
        x, y = state["x"], state["y"]
        if x is not None and y is not None and x.shape[0] == self.window:
            self._x, self._y = x.to(self.device), y.to(self.device)
            self._hit = state["hit"].to(self.device)
            self._pos, self._filled = int(state["pos"]), int(state["filled"])
            self.post, self.pending = int(state["post"]), bool(state["pending"])
            self.ended = int(state["ended"])
        else:                   # pool_window changed: start the window afresh
            self._x = self._y = self._hit = None
            self._pos = self._filled = 0
            self.post, self.pending = 0, False


def _shortfall(entry: Entry, acc: float, n: int) -> float:
    """Two standard errors of (accuracy at save time - accuracy now), at least the floor."""
    ref, m = entry.reference, max(entry.reference_n, 1)
    se = math.sqrt(ref * (1 - ref) / m + acc * (1 - acc) / max(n, 1))
    return max(RECALL_TOLERANCE, 2.0 * se)


@torch.no_grad()
def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    if int(model.n_classes) == 0:
        return 0.0
    was_training = model.training
    model.eval()
    acc = float((model(x).argmax(1) == y).float().mean())
    model.train(was_training)
    return acc


def _frozen(model: nn.Module) -> nn.Module:
    model.eval()
    model.requires_grad_(False)
    for p in model.parameters():
        p.grad = None
    return model
