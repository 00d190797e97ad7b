"""The model as it was a few hundred events ago.

A detector fires some events after the world changed (ADWIN: ~100-800 here), and by
then the model has learned those events of the *new* concept.  Saved at the detection,
the old concept's snapshot carries them: measured on the recurring stream of ``bench
drift``, a recalled snapshot scored .936 on its own concept against .981 before it
left.  So the learner keeps ``count`` copies, refreshed every ``every`` learned events,
and the pool saves the newest copy taken before the change began (estimated by
:func:`change_age`).

>>> import torch
>>> from stream_learner.model import MLP
>>> net = MLP(2, (4,), n_classes=2)
>>> lag = LaggedCopies(every=100, count=3)
>>> for seen in range(0, 1000, 50):
...     lag.after_learning(net, seen)
>>> sorted(lag.seen)                  # the last three refreshes
[700, 800, 900]
>>> lag.before(850) is lag.copies[lag.seen.index(800)]
True
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch

from ..model import MLP


def change_age(errors: np.ndarray) -> int:
    """How many of the newest ``errors`` (0/1, oldest first) followed the change: the
    split that maximises the standardised rise of the error rate (binary segmentation).

    >>> change_age(np.r_[np.zeros(600), np.ones(150)].astype(bool))
    150
    """
    n = int(errors.size)
    if n < 2:
        return n
    c = np.cumsum(errors, dtype=np.float64)
    k = np.arange(1, n, dtype=np.float64)          # split after k events
    before = c[:-1] / k
    after = (c[-1] - c[:-1]) / (n - k)
    score = (after - before) * np.sqrt(k * (n - k) / n)
    return int(n - (int(np.argmax(score)) + 1))


class LaggedCopies:
    """A ring of model copies, taken at batch ends every ``every`` learned events."""

    def __init__(self, every: int, count: int) -> None:
        self.every, self.count = int(every), int(count)
        self.copies: list[MLP] = []
        self.seen: list[int] = []       # learned events when each copy was taken
        self._next = 0                  # slot to overwrite

    def after_learning(self, model: MLP, seen: int) -> None:
        if self.seen and seen - max(self.seen) < self.every:
            return
        if len(self.copies) < self.count:
            self.copies.append(_frozen_copy(model))
            self.seen.append(seen)
            return
        slot = self._next
        self._next = (slot + 1) % self.count
        # In place; MLP.load_state_dict also follows a grown head and drops derived caches.
        self.copies[slot].load_state_dict(model.state_dict())
        _freeze(self.copies[slot])
        self.seen[slot] = seen

    def before(self, seen: int) -> MLP | None:
        """The newest copy taken at or before ``seen`` learned events, if any."""
        best = None
        for s, net in zip(self.seen, self.copies):
            if s <= seen and (best is None or s > best[0]):
                best = (s, net)
        return None if best is None else best[1]

    def clear(self) -> None:
        """The model was swapped (a recall): its past copies are another concept's."""
        self.copies, self.seen, self._next = [], [], 0

    def state_dict(self) -> dict[str, Any]:
        return {"seen": list(self.seen), "next": self._next,
                "copies": [{"n_features": int(m.n_features),
                            "hidden": [int(h) for h in m.hidden],
                            "weights": {k: v.detach().cpu().clone()
                                        for k, v in m.state_dict().items()}}
                           for m in self.copies]}

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        self.copies = []
        for c in state["copies"]:
            net = MLP(int(c["n_features"]), tuple(int(h) for h in c["hidden"]))
            net.load_state_dict(c["weights"])
            self.copies.append(_freeze(net.to(device)))
        self.seen = [int(s) for s in state["seen"]][:len(self.copies)]
        self._next = int(state["next"]) % max(self.count, 1)
        if len(self.copies) > self.count:
            self.clear()


def _frozen_copy(model: MLP) -> MLP:
    return _freeze(copy.deepcopy(model))


def _freeze(model: MLP) -> MLP:
    model.eval()
    model.requires_grad_(False)
    for p in model.parameters():
        p.grad = None
    return model
