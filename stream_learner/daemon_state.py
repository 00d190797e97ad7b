"""What a checkpoint holds and how it is put back: the daemon's parts, named once.

The coordinator (:mod:`~stream_learner.checkpoint_coordinator`) decides *when* a
checkpoint is taken; this knows *what* goes in (learner, decoder, accuracy, loss,
counters, next offsets, lineage, the label join, the peers' last versions) and restores
the same parts in the same shape, so the two cannot drift apart.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Callable

from kafka import TopicPartition

from . import __version__
from .config import Settings
from .consumer_side import ConsumerSide
from .counters import Counters
from .evaluation import PrequentialAccuracy, RollingMean
from .events import EventDecoder
from .label_side import LabelSide
from .learner_host import LearnerHost
from .lineage import Lineage
from .metrics import Metrics

if TYPE_CHECKING:    # imported only with federation on: it needs torch
    from .federation.transport import Federation

log = logging.getLogger(__name__)


class DaemonState:
    def __init__(self, settings: Settings, metrics: Metrics, learner: LearnerHost, decoder: EventDecoder, accuracy: PrequentialAccuracy,
                 loss: RollingMean, counters: Counters, positions: ConsumerSide,
                 lineage: Lineage, labels: LabelSide, federation: Federation | None,
                 refresh_gauges: Callable[[], None]) -> None:
        self.settings, self.metrics = settings, metrics
        self.learner, self.decoder = learner, decoder
        self.accuracy, self.loss, self.counters = accuracy, loss, counters
        self.positions, self.lineage, self.labels = positions, lineage, labels
        self.federation = federation
        self.refresh_gauges = refresh_gauges

    def state_dict(self) -> dict[str, Any]:
        """The whole state, the learner's tensors too (tools and tests; the checkpoint
        is :meth:`loop_state`, completed where the model is)."""
        return {**self.loop_state(), "learner": self.learner.state_dict()}

    def loop_state(self) -> dict[str, Any]:
        """Every part but the learner: plain data and numpy arrays, offsets included."""
        offsets: dict[str, dict[int, int]] = {}
        for tp, off in self.positions.offsets.items():
            offsets.setdefault(tp.topic, {})[tp.partition] = off
        state = {"version": __version__, "created": time.time(),
                 "decoder": self.decoder.state_dict(),
                 "accuracy": self.accuracy.state_dict(), "loss": self.loss.state_dict(),
                 "counters": self.counters.state_dict(), "offsets": offsets,
                 "lineage": self.lineage.state_dict(), "labels": self.labels.state_dict()}
        if self.federation is not None:     # peers' last versions: replays stay replays
            state["federation"] = self.federation.state_dict()
        return state

    def restore(self) -> None:
        # Where the model is, a checkpoint that would not restore cleanly counts as
        # corrupt (the trial restore): an older one is tried. Its learner part is loaded
        # there; we get the rest.
        restored = self.learner.checkpoints.restore()
        state = restored.state
        if state is None:
            if restored.skipped:
                log.warning("no readable checkpoint in %s: starting a fresh model at the "
                            "group's committed offsets (reset the group to relearn the log)",
                            self.settings.checkpoint.dir)
            return
        log.info("restored checkpoint %s", restored.path)
        self.decoder.load_state_dict(state["decoder"])
        if "lineage" in state:        # older checkpoints have none
            self.lineage.load_state_dict(state["lineage"])
        self.accuracy.load_state_dict(state["accuracy"])
        self.loss.load_state_dict(state["loss"])
        self.counters.load_state_dict(state["counters"])
        if "labels" in state:         # older checkpoints have none
            self.labels.load_state_dict(state["labels"])
        if self.federation is not None:
            self.federation.load_state_dict(state.get("federation"))
        self.metrics.checkpoint_last_success.set(float(state.get("created", 0.0)))
        self.positions.restored({TopicPartition(t, p): o for t, parts in state["offsets"].items()
                                 for p, o in parts.items()}, fallback=bool(restored.skipped))
        self.refresh_gauges()
        log.info("resumed at %s after %d events", self.positions.offsets_text(),
                 self.counters.consumed)
