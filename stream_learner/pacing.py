"""How many new events go into one gradient step: as few as the compute budget allows.

A learner that keeps up with its stream has compute to spare, and more, smaller steps
turn it into accuracy: on the drifting streams of ``bench drift``, 8 events per step
instead of 256 is worth 1-27 points.  A learner that is behind must catch up, and big
steps are several times cheaper per event.  So the step size follows two signals:

* a full micro-batch: the log held at least that many unread events (backlog): double;
* the learner's busy share of wall time over the last second (``model.learn_budget``):
  above the budget, double; below ``budget / 2.5``, halve (halving roughly doubles the
  cost, so the margin keeps the size from flapping).

It starts at the largest size, so a daemon that restarts behind catches up first.

>>> pacer = StepPacer(8, 256, budget=0.5)
>>> pacer.value
256
>>> for t in range(1, 5):                 # a slow stream: the learner is busy 5% of the time
...     pacer.learned(0.05)
...     _ = pacer.update(backlogged=False, now=float(t))
>>> pacer.value
16
>>> pacer.update(backlogged=True, now=4.5)
32
"""

from __future__ import annotations

WINDOW_S = 1.0
"""Wall time the busy share is measured over before the size may shrink or grow."""
HYSTERESIS = 2.5


class StepPacer:
    """The daemon's step size: doubled under backlog or over budget, halved when idle."""

    def __init__(self, low: int, high: int, budget: float = 0.5, now: float = 0.0) -> None:
        if not 1 <= low <= high:
            raise ValueError(f"need 1 <= low <= high, got {low}, {high}")
        self.low, self.high, self.budget = low, high, budget
        self.value = high
        self._busy = 0.0          # learner seconds reported since the window opened
        self._since = now

    def learned(self, seconds: float) -> None:
        """The learner spent ``seconds`` on a batch."""
        self._busy += seconds

    def update(self, backlogged: bool, now: float) -> int:
        """The step size for the next batch; ``now`` is a monotonic clock in seconds."""
        if backlogged:
            self._grow()
            self._open(now)
            return self.value
        elapsed = now - self._since
        if elapsed >= WINDOW_S:
            busy = self._busy / elapsed
            if busy > self.budget:
                self._grow()
            elif busy < self.budget / HYSTERESIS:
                self.value = max(self.low, self.value // 2)
            self._open(now)
        return self.value

    def _grow(self) -> None:
        self.value = min(self.high, self.value * 2)

    def _open(self, now: float) -> None:
        self._busy, self._since = 0.0, now
