"""The learner hosts' typed messages: requests, results, replies and their errors.

Split out of :mod:`stream_learner.learner_host` (which re-exports every name): one frozen
dataclass per thing the learner can be asked, per result and per worker reply.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from .drift.report import DriftReport
from .labels import Label

if TYPE_CHECKING:   # federation's types hold tensors; the Kafka loop imports this module
    from .federation.merge import MergeReport, PeerModel, Snapshot

MAX_IN_FLIGHT = 2   # one batch learning while the next is polled; more only adds latency


class LearnerError(RuntimeError):
    """The learner failed (in the worker: its exception text, or that the worker died)."""


# -- results: what a request produced; the daemon reads these -----------------------------
# Plain dataclasses, not msgspec: the pipe is multiprocessing's pickle, which carries the
# numpy arrays as they are and the federation's torch tensors through torch's
# shared-memory reducers; a schema codec would have to copy both.


@dataclass(frozen=True)
class Learned:
    y: np.ndarray          # true class indices
    pred: np.ndarray       # predicted before learning (-1: no class known yet)
    loss: float
    steps: int
    seconds: float         # time the learner spent on this batch
    finished_at: float     # wall clock (time.time()) when the model had learned it
    held_out: int = 0      # events kept as forgetting probes (never learned)
    forgetting: float = 0.0
    backward_transfer: float = 0.0
    probe_accuracy: list[float] = field(default_factory=list)
    skipped_steps: int = 0  # total so far: non-finite steps not applied
    drift: DriftReport | None = None
    # Positions in the request whose label would add a class beyond model.max_classes:
    # not learned, not in y/pred; the daemon dead-letters them as too_many_classes.
    refused: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))


@dataclass(frozen=True)
class Predicted:
    idx: np.ndarray        # class indices (-1: no class known yet)
    proba: np.ndarray
    drift: DriftReport | None = None   # input drift sees unlabeled events too
    top_idx: np.ndarray | None = None  # [n, <=k] with kafka.predictions_top_k > 1
    top_proba: np.ndarray | None = None


@dataclass(frozen=True)
class FedRound:
    snapshot: Snapshot | None    # our model to publish (None: nothing learned yet)
    report: MergeReport          # what merging the peers' models did


@dataclass(frozen=True)
class State:
    """The learner's state as ``torch.save`` bytes.

    Bytes, not the tensors: a checkpoint must be a copy that later learning cannot change,
    and tensors sent through the shared-memory reducers would alias the worker's storage
    (and hold a file descriptor each until the daemon drops them).
    """

    blob: bytes


@dataclass(frozen=True)
class Loaded:
    """A :class:`LoadRequest` was applied; the labels come back in the reply's info."""


@dataclass(frozen=True)
class Saved:
    """A :class:`SaveRequest` was answered: the file written, or why it was not.

    An ``OSError`` in the worker (disk full, read-only) is a result, not a failure: the
    daemon counts it and retries later, as it would its own write.
    """

    path: str | None                 # None: the write failed with errno/error
    errno: int | None = None
    error: str = ""


@dataclass(frozen=True)
class Restored:
    """The newest checkpoint that restores; its learner part is already loaded."""

    path: str | None                 # None: no checkpoint restores
    state: dict[str, Any] | None     # the loop's parts, numpy arrays (no tensors)
    skipped: list[str] = field(default_factory=list)   # newer files that did not restore


Result = Union[Learned, Predicted, FedRound]       # what submit_* produce, in order
CallResult = Union[State, Loaded, Saved, Restored]  # what the synchronous calls produce
CALL_RESULTS: tuple[type, ...] = CallResult.__args__   # type: ignore[attr-defined]


# -- requests: one class per thing the learner can be asked ------------------------------
@dataclass(frozen=True)
class LearnRequest:
    x: np.ndarray
    labels: list[Label]
    step_size: int | None = None     # None: keep the learner's current step size


@dataclass(frozen=True)
class PredictRequest:
    x: np.ndarray
    top_k: int = 1


@dataclass(frozen=True)
class FederateRequest:
    peers: list[PeerModel]


@dataclass(frozen=True)
class StateRequest:
    """Ask for :class:`State`; only between batches (the host checks it is drained)."""


@dataclass(frozen=True)
class LoadRequest:
    blob: bytes                      # ``torch.save`` bytes, as :class:`State` carries them


@dataclass(frozen=True)
class SaveRequest:
    """Write a checkpoint: the worker's learner and ``state``, the loop's parts.

    The worker writes it because it owns the model: the loop never imports torch, which
    the file format (tensors, ``weights_only``) needs. The loop asks only after
    draining and flushing, so the delivery order stays drain → flush → save → commit.
    """

    state: dict[str, Any]            # plain data and numpy arrays, offsets included


@dataclass(frozen=True)
class RestoreRequest:
    """Load the newest checkpoint that passes the trial restore (worker side)."""


@dataclass(frozen=True)
class StopRequest:
    """Tell the worker to exit; it sends no reply (the daemon is closing the pipe)."""


Request = Union[LearnRequest, PredictRequest, FederateRequest, StateRequest, LoadRequest,
                SaveRequest, RestoreRequest]
SYNC_REQUESTS = (StateRequest, LoadRequest, SaveRequest, RestoreRequest)


# -- replies: what the worker writes back, one per request -------------------------------
@dataclass(frozen=True)
class InfoUpdate:
    """What changed in :class:`LearnerInfo`; sent with every answer so it is never stale."""

    new_labels: list[Label]          # labels added since the last reply (usually none)
    buffer_events: int
    gpu_memory_allocated_bytes: int = 0
    gpu_memory_reserved_bytes: int = 0


@dataclass(frozen=True)
class Ready:
    """The worker's first message: warmed up, learner built, serving."""

    device: str


@dataclass(frozen=True)
class Answer:
    """A request ran: its result, and the info update taken right after it."""

    result: Result | CallResult
    info: InfoUpdate


@dataclass(frozen=True)
class Rejected:
    """The request was not run (unknown type, unreadable bytes); the worker keeps serving."""

    error: str


@dataclass(frozen=True)
class Failed:
    """The learner raised; the worker exits after this (its state may be half-updated)."""

    error: str
    traceback: str


Reply = Union[Ready, Answer, Rejected, Failed]


@dataclass
class LearnerInfo:
    """What the daemon shows about the learner; updated with every result."""

    device: str
    labels: list[Label] = field(default_factory=list)
    buffer_events: int = 0
    gpu_memory_allocated_bytes: int = 0   # torch's CUDA allocator; 0 on the CPU
    gpu_memory_reserved_bytes: int = 0

    def apply(self, update: InfoUpdate) -> None:
        self.labels.extend(update.new_labels)
        self.buffer_events = update.buffer_events
        self.gpu_memory_allocated_bytes = update.gpu_memory_allocated_bytes
        self.gpu_memory_reserved_bytes = update.gpu_memory_reserved_bytes


class RequestRejected(LearnerError):
    """The learner did not run the request (nothing changed); it keeps serving."""


class UnknownRequest(RequestRejected):
    """A message that is not one of the :data:`Request` classes."""

    def __init__(self, request: object) -> None:
        super().__init__(f"unknown learner request {type(request).__qualname__}: "
                         f"expected one of {', '.join(t.__name__ for t in REQUESTS)}")


REQUESTS: tuple[type, ...] = Request.__args__   # type: ignore[attr-defined]


def check_queueable(request: object) -> None:
    """State, load, save and restore are synchronous: a checkpoint is taken from a
    drained learner.

    Raised here, before anything runs, so the in-process host cannot load a state it
    would then refuse to queue.  Any other type is queued and answered in order: an
    unknown one by the learner's own :class:`UnknownRequest`, as both hosts do it.
    """
    if isinstance(request, SYNC_REQUESTS):
        raise TypeError(f"{type(request).__name__} goes through call(), not submit()")
