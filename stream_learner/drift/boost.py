"""Plasticity boost: after a drift, learn faster and hold on to the past less, for a while.

At a drift the learning-rate multiplier jumps to ``adapt.boost_lr_factor`` and the plugin
penalties (EWC, SI, MAS, LwF) are scaled by ``adapt.boost_regularisation_scale``; both
return to 1 linearly over ``adapt.boost_events`` learned events.  With
``adapt.boost_reset_optimizer`` the optimiser's moments are cleared too (Adam's running
second moment otherwise keeps the step small exactly when the gradients jump).

The learner reads ``lr_factor`` (Adam's lr, MER's inner lr) and ``penalty_scale`` (every
plugin penalty) before each update.

>>> b = PlasticityBoost(lr_factor=3.0, events=1000, regularisation_scale=0.1)
>>> b.start(); b.lr_factor, round(b.penalty_scale, 2)
(3.0, 0.1)
>>> b.advance(500); round(b.lr_factor, 2), round(b.penalty_scale, 2)
(2.0, 0.55)
>>> b.advance(600); b.lr_factor, b.penalty_scale, b.active
(1.0, 1.0, False)
"""

from __future__ import annotations

from typing import Any


class PlasticityBoost:
    def __init__(self, lr_factor: float, events: int, regularisation_scale: float,
                 reset_optimizer: bool = False) -> None:
        self.peak_lr = float(lr_factor)
        self.events = int(events)
        self.peak_scale = float(regularisation_scale)
        self.reset_optimizer = bool(reset_optimizer)
        self.remaining = 0          # learned events until the boost is over

    @property
    def active(self) -> bool:
        return self.remaining > 0

    @property
    def _left(self) -> float:
        return self.remaining / self.events if self.events else 0.0

    @property
    def lr_factor(self) -> float:
        return 1.0 + (self.peak_lr - 1.0) * self._left

    @property
    def penalty_scale(self) -> float:
        return 1.0 - (1.0 - self.peak_scale) * self._left

    def start(self) -> None:
        self.remaining = self.events

    def advance(self, learned: int) -> None:
        self.remaining = max(0, self.remaining - int(learned))

    def state_dict(self) -> dict[str, Any]:
        return {"remaining": self.remaining}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.remaining = min(int(state["remaining"]), self.events)
