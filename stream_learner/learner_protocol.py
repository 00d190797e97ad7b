"""What the daemon asks of a learner host, and checkpoint files through one.

Torch-free, like everything the Kafka loop imports: the hosts' torch halves live in
:mod:`~stream_learner.learner_core` (the in-process host) and
:mod:`~stream_learner.worker_main` (the worker process).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence

import numpy as np

from .labels import Label
from .learner_messages import (CallResult, LearnerError, LearnerInfo, Request, RestoreRequest,
                               Restored, Result, SaveRequest, Saved)

if TYPE_CHECKING:   # tensors: only with federation on
    from .federation.merge import PeerModel


class HostCheckpoints:
    """Checkpoint files, written and read where the model is (worker or inline core).

    The daemon hands over its own parts (plain data, offsets included) and gets back the
    file's path; the file format (tensors, ``weights_only``) stays the worker's business.
    """

    def __init__(self, call: Callable[[Request], Result | CallResult]) -> None:
        self._call = call

    def save(self, state: dict[str, Any]) -> str:
        """Write ``state`` and the learner; ``OSError`` when the write failed."""
        saved = self._call(SaveRequest(state=state))
        if not isinstance(saved, Saved):
            raise LearnerError(f"learner answered {type(saved).__name__} to SaveRequest")
        if saved.path is None:
            raise OSError(saved.errno, saved.error)
        return saved.path

    def restore(self) -> Restored:
        """Load the newest checkpoint that restores (its learner part applied there)."""
        restored = self._call(RestoreRequest())
        if not isinstance(restored, Restored):
            raise LearnerError(f"learner answered {type(restored).__name__} to "
                               f"RestoreRequest")
        return restored


class LearnerHost(Protocol):
    """Submit work, collect results in submission order, checkpoint between batches."""

    info: LearnerInfo
    checkpoints: HostCheckpoints

    @property
    def in_flight(self) -> int: ...

    def submit_learn(self, x: np.ndarray, labels: Sequence[Label], ctx: Any,
                     step_size: int | None = None) -> None: ...

    def submit_predict(self, x: np.ndarray, ctx: Any, top_k: int = 1) -> None: ...

    def submit_federate(self, peers: list[PeerModel], ctx: Any) -> None: ...

    def submit(self, request: Request, ctx: Any) -> None: ...

    def call(self, request: Request) -> Result | CallResult: ...

    def completed(self, wait: bool = False) -> list[tuple[Any, Result]]: ...

    def drain(self) -> list[tuple[Any, Result]]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def close(self) -> None: ...
