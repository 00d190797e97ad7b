"""What the learner hands back, accounted for in submission order.

The learner runs one batch behind the loop (:mod:`~stream_learner.learner_host`), so every
submission carries a context that comes back with its result: a learned batch updates
accuracy and pacing and dead-letters the events the learner refused; a prediction is
published and remembered for the label join; a finished federation round is recorded.
Apart from the loop because results arrive from three places (the loop, the drain before
a checkpoint, shutdown) and must be handled the same way from each.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from .label_side import LabelSide
from .learn_accounting import LearnAccounting
from .learner_host import FedRound, Learned, LearnerHost, Predicted, Result
from .metrics import Metrics
from .output_sink import OutputSink

if TYPE_CHECKING:    # imported only with federation on: it needs torch
    from .federation.transport import Federation


class ResultHandler:
    def __init__(self, metrics: Metrics, learner: LearnerHost, accounting: LearnAccounting,
                 labels: LabelSide, sink: OutputSink, federation: Federation | None,
                 refresh_gauges: Callable[[], None],
                 last_checkpoint: Callable[[], str | None]) -> None:
        """``last_checkpoint`` is read per prediction: each names the checkpoint that was
        current when it was published (the coordinator drains through this handler, so it
        is passed as a function, not an object)."""
        self.metrics, self.learner, self.accounting = metrics, learner, accounting
        self.labels, self.sink, self.federation = labels, sink, federation
        self.refresh_gauges, self.last_checkpoint = refresh_gauges, last_checkpoint

    def handle(self, results: list[tuple[Any, Result]]) -> None:
        """Account for what the learner finished: metrics, predictions to publish."""
        for ctx, result in results:
            if isinstance(result, Learned):
                ts, records, rows, joined = ctx
                if result.refused.size:
                    self.sink.dead_letter_refused(result, records, rows)
                    ts = np.delete(ts, result.refused)
                self.accounting.learned(result, ts)
                if joined is None:
                    self.labels.scored_inline(result.y, result.pred)
                else:     # the served predictions were answered before this batch
                    self.labels.scored_joined(joined.entries, joined.labels)
            elif isinstance(result, FedRound):
                assert self.federation is not None
                self.federation.finish_round(result.snapshot, result.report)
            elif isinstance(result, Predicted):
                ids, keys, sources, kept = ctx
                self.labels.predicted(kept, result.idx, self.learner.info.labels)
                self.sink.publish_predictions(result, self.learner.info.labels, ids, keys,
                                              sources, self.last_checkpoint())
                if result.drift is not None:
                    self.metrics.drift.apply(result.drift)
        if results:
            self.refresh_gauges()
