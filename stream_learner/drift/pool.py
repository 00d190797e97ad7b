"""Recurring-concept pool: snapshots of past concepts, recalled when they come back.

The model is always "on" a concept (``current``, an id).  At a drift the model is saved
as that concept's snapshot and the stream is taken to be on a new concept (the next id).
Once ``adapt.pool_decide_events`` labeled events have arrived after the batch that
revealed the drift (that batch may still hold events of the old concept), every
snapshot and the model are scored on *those* events (at most ``adapt.pool_window``): a
window reaching back before the drift would favour the concept that just ended.  The
model is scored by its prequential hits on them (predicted before it learned them; its
accuracy after learning them is a training score).  A snapshot is recalled when it beats
those hits by ``adapt.pool_margin`` *and* scores within :data:`RECALL_TOLERANCE` of its
own prequential accuracy when it was saved: the concept is really back, not merely less
wrong than a model that is lost too (recalling then would let the next drift overwrite
that concept's snapshot).  It is loaded into the model (its weights and
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
>>> pool.on_drift(net, batch=40); pool.current, len(pool.entries)
(1, 1)
>>> pool.remember(*events(40)); pool.remember(*events(40))
>>> pool.decide(net, after=16) is None   # nothing else to recall yet
True
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..model import MLP


RECALL_TOLERANCE = 0.1
"""How far below its accuracy at save time a snapshot may score and still be recalled."""


@dataclass
class Entry:
    id: int
    model: nn.Module
    last_used: int
    reference: float = 1.0      # the model's prequential accuracy on the window when saved


class ConceptPool:
    def __init__(self, size: int, window: int, margin: float, device: torch.device) -> None:
        self.pending = False      # a drift waits for its decision
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
        idx = (torch.arange(n, device=x.device) + self._pos) % self.window
        self._x[idx] = x
        self._y[idx] = y
        self._hit[idx] = hit
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
    def on_drift(self, model: nn.Module, batch: int) -> None:
        """Save the model as the concept that just ended; the stream is on a new one.

        Called before the ``batch`` events that revealed the drift are learned; they are
        not evidence for the decision (some may predate the change).
        """
        self._save(model)
        self.current, self.next_id = self.next_id, self.next_id + 1
        self.pending, self.post = True, -int(batch)

    def decide(self, model: nn.Module, after: int) -> Entry | None:
        """Once ``after`` events followed the drift: a snapshot to switch to, if any."""
        if not self.pending or self.post < after:
            return None
        window = self.recent(self.post)
        self.pending, self.post = False, 0
        return None if window is None else self._better_than(model, *window)

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
            buffers = dict(entry.model.named_buffers())
            for name, b in model.named_buffers():
                if name.startswith("scaler.") and name in buffers:
                    b.copy_(buffers[name])
        scaler = getattr(model, "scaler", None)
        if scaler is not None:
            scaler._cache = None
        self.tick += 1
        entry.last_used = self.tick
        self.current = entry.id
        self.reuse += 1

    def _better_than(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                     hit: torch.Tensor) -> Entry | None:
        best, best_acc = None, float(hit.float().mean()) + self.margin
        for entry in self.entries:
            if entry.id == self.current:
                continue
            acc = _accuracy(entry.model, x, y)
            if acc > best_acc and acc >= entry.reference - RECALL_TOLERANCE:
                best, best_acc = entry, acc
        return best

    def _save(self, model: nn.Module) -> None:
        self.tick += 1
        snap = _frozen(copy.deepcopy(model))
        window = self.recent()
        reference = float(window[2].float().mean()) if window is not None else 1.0
        for entry in self.entries:
            if entry.id == self.current:
                entry.model, entry.last_used, entry.reference = snap, self.tick, reference
                return
        self.entries.append(Entry(self.current, snap, self.tick, reference))
        if len(self.entries) > self.size:
            victim = min((e for e in self.entries if e.id != self.current),
                         key=lambda e: e.last_used)
            self.entries.remove(victim)

    # -- state --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "entries": [{"id": e.id, "last_used": e.last_used, "reference": e.reference,
                         "n_features": int(getattr(e.model, "n_features")),
                         "hidden": [int(h) for h in getattr(e.model, "hidden")],
                         "weights": {k: v.detach().cpu().clone()
                                     for k, v in e.model.state_dict().items()}}
                        for e in self.entries],
            "current": self.current, "next_id": self.next_id, "reuse": self.reuse,
            "tick": self.tick, "pos": self._pos, "filled": self._filled, "post": self.post,
            "pending": self.pending,
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
                                      int(e["last_used"]), float(e["reference"])))
        self.entries = sorted(self.entries, key=lambda e: e.last_used)[-self.size:]
        self.current, self.next_id = int(state["current"]), int(state["next_id"])
        self.reuse, self.tick = int(state["reuse"]), int(state["tick"])
        x, y = state["x"], state["y"]
        if x is not None and y is not None and x.shape[0] == self.window:
            self._x, self._y = x.to(self.device), y.to(self.device)
            self._hit = state["hit"].to(self.device)
            self._pos, self._filled = int(state["pos"]), int(state["filled"])
            self.post, self.pending = int(state["post"]), bool(state["pending"])
        else:                   # pool_window changed: start the window afresh
            self._x = self._y = self._hit = None
            self._pos = self._filled = 0
            self.post, self.pending = 0, False


@torch.no_grad()
def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    if int(getattr(model, "n_classes", 1)) == 0:
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
