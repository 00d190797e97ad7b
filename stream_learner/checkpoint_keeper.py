"""The model's side of a checkpoint: the file holds the learner and the loop's parts.

Runs where the model is (the worker process, or the daemon's own with
``model.worker=inline``), so the Kafka loop never imports torch: it hands over its parts
as plain data and numpy arrays (:class:`~stream_learner.learner_messages.SaveRequest`)
and gets them back the same way after a restore. The file format is unchanged: the
arrays are stored as tensors (:mod:`~stream_learner.checkpoint_codec`), every file is
loaded with ``weights_only`` and must pass the trial restore of
:mod:`~stream_learner.restore_check`, here, before anything is applied.
"""

from __future__ import annotations

import functools
from typing import Any

from .checkpoint import CheckpointStore
from .checkpoint_codec import to_loop
from .config import Settings
from .learner_messages import Restored, Saved
from .restore_check import check_restorable


class CheckpointKeeper:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._store: CheckpointStore | None = None

    @property
    def store(self) -> CheckpointStore:
        # Made on first use: a learner built for a test or a benchmark writes no
        # checkpoint and must not create checkpoint.dir.
        if self._store is None:
            c = self.settings.checkpoint
            self._store = CheckpointStore(c.dir, c.keep)
        return self._store

    def save(self, learner_state: dict[str, Any], loop_state: dict[str, Any]) -> Saved:
        try:
            path = self.store.save({**loop_state, "learner": learner_state})
        except OSError as exc:      # the daemon counts it and retries, as for its own write
            return Saved(path=None, errno=exc.errno, error=str(exc))
        return Saved(path=str(path))

    def restore(self) -> tuple[dict[str, Any] | None, Restored]:
        """The learner part to load (None: none restores) and the loop's answer."""
        found = self.store.latest(validate=functools.partial(check_restorable,
                                                             self.settings))
        skipped = [str(p) for p in self.store.skipped]
        if found is None:
            return None, Restored(path=None, state=None, skipped=skipped)
        path, state = found
        loop = to_loop({k: v for k, v in state.items() if k != "learner"})
        return state["learner"], Restored(path=str(path), state=loop, skipped=skipped)
