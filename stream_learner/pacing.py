"""How many new events go into one gradient step: as few as the compute budget allows.

A learner that keeps up with its stream has compute to spare, and more, smaller steps
turn it into accuracy: on the drifting streams of ``bench drift``, 8 events per step
instead of 256 is worth 1-27 points.  A learner that is behind must catch up, but only as
fast as it has to: doubling on every full batch cost accuracy on a backlog the small step
would have cleared in minutes.  So the step size follows two signals:

* a full micro-batch (backlog): :func:`catch_up_step` -- the smallest step that clears
  the consumer lag by a deadline ``model.catch_up_seconds`` after the backlog was first
  seen, at the learner's measured rate at the small step (``model.step_size``), a power
  of two times it, at most the largest (past the deadline: the largest);
* otherwise the learner's busy share of wall time over the last second
  (``model.learn_budget``): above the budget, double; below ``budget / 2.5``, halve
  (halving roughly doubles the cost, so the margin keeps the size from flapping).

It starts at the largest size (a fresh daemon has no rate yet); the first full batch
measures the small step.

>>> pacer = StepPacer(8, 256, budget=0.5)
>>> pacer.value
256
>>> for t in range(1, 5):                 # a slow stream: the learner is busy 5% of the time
...     pacer.learned(0.05)
...     _ = pacer.update(backlogged=False, now=float(t))
>>> pacer.value
16
>>> pacer.learned(0.01, events=100)      # 10,000 events/s at step 16, not the small one
>>> pacer.update(backlogged=True, now=4.5, lag=5_000_000)   # no rate at 8 yet: measure it
8
>>> pacer.learned(0.01, events=100)      # 10,000 events/s at step 8
>>> pacer.update(backlogged=True, now=4.6, lag=5_000_000)   # 500 s at 8: needs 2x
16
>>> catch_up_step(lag=2_000_000, rate_small=10_000, low=8, high=256, catch_up_seconds=300)
8
"""

from __future__ import annotations

WINDOW_S = 1.0
"""Wall time the busy share is measured over before the size may shrink or grow."""
HYSTERESIS = 2.5


RATE_SMOOTHING = 0.2
"""Weight of the newest batch in the smoothed small-step rate (one slow batch, e.g. a
checkpoint pause, should not make the pacer jump)."""


def catch_up_step(lag: int, rate_small: float, low: int, high: int,
                  catch_up_seconds: float) -> int:
    """Step size under backlog: ``low`` while ``lag / rate_small <= catch_up_seconds``.

    Otherwise the factor the rate must grow by (``lag / catch_up_seconds / rate_small``),
    rounded up to a power of two, times ``low``, capped at ``high``. A bigger step is
    assumed to speed the learner up in proportion at most, so this is the least growth
    that can clear the lag in time. ``rate_small`` <= 0 (not measured yet): ``low``.
    """
    if rate_small <= 0 or lag <= rate_small * catch_up_seconds:
        return low
    factor = lag / (catch_up_seconds * rate_small)
    step = low
    while step < high and step < low * factor:
        step *= 2
    return min(step, high)


class StepPacer:
    """The daemon's step size: just enough to clear a backlog in time, else the budget."""

    def __init__(self, low: int, high: int, budget: float = 0.5, now: float = 0.0,
                 catch_up_seconds: float = 300.0) -> None:
        if not 1 <= low <= high:
            raise ValueError(f"need 1 <= low <= high, got {low}, {high}")
        self.low, self.high, self.budget = low, high, budget
        self.catch_up_seconds = catch_up_seconds
        self.value = high
        self.rate_small = 0.0     # smoothed events/s at step ``low``; 0 = not measured
        self.deadline: float | None = None   # when the current backlog must be cleared
        self._busy = 0.0          # learner seconds reported since the window opened
        self._since = now

    def learned(self, seconds: float, events: int = 0) -> None:
        """The learner spent ``seconds`` on a batch of ``events``."""
        self._busy += seconds
        # Results come back in order, right after the step size they were sent with, so
        # the current value is (near enough) the one this batch used.
        if self.value == self.low and events > 0 and seconds > 0:
            rate = events / seconds
            self.rate_small = rate if self.rate_small == 0 else (
                (1 - RATE_SMOOTHING) * self.rate_small + RATE_SMOOTHING * rate)

    def update(self, backlogged: bool, now: float, lag: int = 0) -> int:
        """The step size for the next batch; ``now`` is a monotonic clock in seconds,
        ``lag`` the events the consumer is behind the log's end."""
        if backlogged:
            # The deadline is set once, when the backlog is first seen: a horizon that
            # starts afresh at every batch recedes, and the backlog is never cleared
            # within it (bench quality measured 1.2-1.6x catch_up_seconds, ending at
            # the small step).  Past the deadline: the largest step.
            if self.deadline is None:
                self.deadline = now + self.catch_up_seconds
            left = self.deadline - now
            self.value = (self.high if left <= 0 else
                          catch_up_step(lag, self.rate_small, self.low, self.high, left))
            self._open(now)
            return self.value
        self.deadline = None                     # caught up: the next backlog starts anew
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
