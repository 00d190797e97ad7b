"""How large a micro-batch a young model may be served: the loop's view of what the
learner has been handed.

Every event of a micro-batch is predicted before any label in it is learned, so a whole
batch is served by the model as it was at the batch's start.  A model that knows fewer
than two classes can only ever name one (on ``bench delay``'s random delays a first full
batch served ~1,000 events the minority class, in a diagnostic run on seed 0);
until the warm-up ends, a batch is at most as large as what the model has learned (on a
labelled backlog that doubles it per batch, so full batches come after a few).

"Learned" counts the labelled events *handed* to the learner, not the results that came
back: requests run in order, so everything handed over before a batch is learned before
that batch is predicted, and the count (unlike the results' arrival) does not depend on
timing, so the young batches of a backlog do not either.
"""

from __future__ import annotations

from typing import Any, Sequence

from .config import Settings

COLD_BATCH_SIZE = 64
"""Largest micro-batch while the model knows fewer than two classes."""


def young_batch_limit(classes: int, learned: int, settings: Settings) -> int:
    """Largest micro-batch for a model that knows ``classes`` and has learned ``learned``.

    >>> s = Settings(model={"warmup_events": 4096}, batch={"size": 1024})
    >>> [young_batch_limit(c, n, s) for c, n in ((0, 0), (1, 500), (2, 100), (2, 700), (1, 5000))]
    [64, 64, 100, 700, 1024]
    """
    full = settings.batch.size
    if learned >= settings.model.warmup_events:
        return full
    if classes < 2:
        return min(full, COLD_BATCH_SIZE)
    return min(full, max(COLD_BATCH_SIZE, learned))


class WarmStart:
    """The labelled events and (up to two) classes handed to the learner, and the limit
    they set for the next micro-batch.  A batch that reaches the limit counts as full (a
    backlog) for the step pacer."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.handed_events = 0
        self.classes: set[tuple[str, Any]] = set()   # (type, label): 1 and "1" differ
        self.limit = settings.batch.size

    def handed(self, labels: Sequence[Any]) -> None:
        self.handed_events += len(labels)
        for label in labels:
            if len(self.classes) >= 2:
                break
            self.classes.add((type(label).__name__, label))

    def next_limit(self, known_classes: int, learned: int) -> int:
        """The next batch's limit; ``known_classes`` and ``learned`` are what the learner
        reported (a restored model is warm before anything is handed to it)."""
        self.limit = young_batch_limit(max(known_classes, len(self.classes)),
                                       max(learned, self.handed_events), self.settings)
        return self.limit
