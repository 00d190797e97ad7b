"""Exactly-once accounting shared by the daemon, its output sink and its checkpoints."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Counters:
    """Exactly-once accounting: restored from the checkpoint, so replays don't double count."""

    consumed: int = 0
    learned: int = 0
    predicted: int = 0
    held_out: int = 0      # kept as forgetting probes: consumed, never learned
    rejected: dict[str, int] = field(default_factory=dict)

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    def state_dict(self) -> dict[str, Any]:
        return {"consumed": self.consumed, "learned": self.learned,
                "predicted": self.predicted, "held_out": self.held_out,
                "rejected": dict(self.rejected)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.consumed, self.learned = int(state["consumed"]), int(state["learned"])
        self.predicted = int(state["predicted"])
        self.held_out = int(state.get("held_out", 0))
        self.rejected = dict(state["rejected"])
