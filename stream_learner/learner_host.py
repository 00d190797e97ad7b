"""Where the learner runs: in the daemon's process, or in a worker process beside it.

On CPU the daemon's main thread is the bottleneck: kafka-python parses every record in
pure Python, and a second *thread* cannot help because torch releases and re-takes the
GIL around every op (measured: a learner thread beside a parsing thread falls from
~170k to ~30k events/s).  A worker *process* learns micro-batch ``k`` while the daemon
polls and decodes ``k+1``, so the two run on two cores.

Both hosts have one interface.  Requests are answered strictly in submission order, so a
prediction is made by the model that learned every batch submitted before it, and
:meth:`LearnerHost.drain` followed by :meth:`LearnerHost.state_dict` is a state that has
learned exactly what was submitted: the daemon's checkpoint order stays
drain → flush → checkpoint → commit.

Every request is one frozen dataclass (:class:`LearnRequest`, :class:`PredictRequest`,
:class:`FederateRequest`, :class:`StateRequest`, :class:`LoadRequest`; the worker also
reads :class:`StopRequest`), built with keywords and dispatched on its class; the worker
answers each with an :class:`Answer` (the result and an :class:`InfoUpdate`), a
:class:`Rejected` (not run: an unknown type; it keeps serving) or a :class:`Failed` (the
learner raised; it exits).  Both hosts run the same :class:`_Core`, so they take the same
requests and give the same results.

>>> import numpy as np
>>> from stream_learner.config import Settings
>>> host = InlineLearner(Settings(model={"device": "cpu"}, probes={"per_class": 0}))
>>> x = np.random.default_rng(0).normal(size=(8, 2)).astype("float32")
>>> host.submit_learn(x, ["a"] * 4 + ["b"] * 4, ctx="batch-1")
>>> [(ctx, type(r).__name__, r.y.tolist()) for ctx, r in host.drain()]
[('batch-1', 'Learned', [0, 0, 0, 0, 1, 1, 1, 1])]
>>> host.info.labels
['a', 'b']
"""

from __future__ import annotations

import gc
import io
import logging
import multiprocessing as mp
import queue
import signal
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.reduction import ForkingPickler
from typing import Any, Protocol, Sequence, Union

import numpy as np
import torch

from .config import Settings
from .drift import DriftReport
from .federation.merge import MergeReport, PeerModel, Snapshot
from .labels import Label
from .learner import Learner
from .strategies import UpdateStats

log = logging.getLogger(__name__)

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


Result = Union[Learned, Predicted, FedRound]       # what submit_* produce, in order
CallResult = Union[State, Loaded]                   # what the synchronous calls produce


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
class StopRequest:
    """Tell the worker to exit; it sends no reply (the daemon is closing the pipe)."""


Request = Union[LearnRequest, PredictRequest, FederateRequest, StateRequest, LoadRequest]


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


def _check_queueable(request: object) -> None:
    """State and load are synchronous: a checkpoint is taken from a drained learner.

    Raised here, before anything runs, so the in-process host cannot load a state it
    would then refuse to queue.  Any other type is queued and answered in order: an
    unknown one by the learner's own :class:`UnknownRequest`, as both hosts do it.
    """
    if isinstance(request, (StateRequest, LoadRequest)):
        raise TypeError(f"{type(request).__name__} goes through call(), not submit()")


class _Core:
    """Runs requests against a :class:`Learner`; shared by both hosts."""

    def __init__(self, settings: Settings) -> None:
        if settings.model.threads:
            torch.set_num_threads(settings.model.threads)
        self.learner = Learner(settings)
        self._labels_sent = 0

    def handle(self, request: Request) -> Answer:
        """Run one request; :class:`UnknownRequest` (before anything ran) for any other type.

        A ``match`` on the class: a field is read by name, so a request built with a field
        missing fails where it is built, not as an IndexError in the other process.
        """
        match request:
            case LearnRequest():
                result: Result | CallResult = self._learn(request)
            case PredictRequest(x=x_np, top_k=top_k):
                lrn = self.learner
                x = lrn.to_tensor(x_np)
                idx, proba = lrn.predict_indices(x)
                top = lrn.predict_top(x, top_k) if top_k > 1 else None
                result = Predicted(idx=idx.cpu().numpy(), proba=proba.cpu().numpy(),
                                   drift=lrn.drift.report() if lrn.drift.observe_inputs(x)
                                   else None,
                                   top_idx=None if top is None else top[0].cpu().numpy(),
                                   top_proba=None if top is None else top[1].cpu().numpy())
            case FederateRequest(peers=peers):
                # Snapshot first: what we publish is our own learning, not the peers' echo.
                fed = self.learner.federated
                snapshot = fed.snapshot()
                result = FedRound(snapshot=snapshot, report=fed.merge(peers))
            case StateRequest():
                buf = io.BytesIO()
                torch.save(self.learner.state_dict(), buf)
                result = State(blob=buf.getvalue())
            case LoadRequest(blob=blob):
                self.learner.load_state_dict(torch.load(io.BytesIO(blob), weights_only=True))
                self._labels_sent = 0      # the reply carries every label of the new state
                result = Loaded()
            case _:
                raise UnknownRequest(request)
        return Answer(result=result, info=self.info_update())

    def _learn(self, request: LearnRequest) -> Learned:
        t0 = time.perf_counter()
        lrn = self.learner
        x_np = request.x
        y, refused = lrn.admit_labels(request.labels)
        if refused.size:
            x_np = np.delete(x_np, refused, axis=0)
        if request.step_size is not None:
            lrn.step_size = request.step_size
        if y.numel():
            keep, pred, stats = lrn.observe(lrn.to_tensor(x_np), y)
        else:     # every event of the batch was refused
            keep = pred = y
            stats = UpdateStats(0.0, 0)
        held_out = int(y.shape[0] - int(keep.sum()))
        if held_out:
            y = y[keep]
        probes = lrn.probes
        return Learned(y=y.cpu().numpy(), pred=pred.cpu().numpy(), loss=stats.loss,
                       steps=stats.steps, seconds=time.perf_counter() - t0,
                       finished_at=time.time(), held_out=held_out,
                       forgetting=probes.forgetting,
                       backward_transfer=probes.backward_transfer,
                       probe_accuracy=probes.accuracies(), skipped_steps=lrn.skipped_steps,
                       drift=lrn.drift.report(), refused=refused)

    def info_update(self) -> InfoUpdate:
        """Labels added since the last reply (usually none), replay buffer size, GPU memory."""
        labels = self.learner.labels.labels
        new = list(labels[self._labels_sent:])
        self._labels_sent = len(labels)
        allocated = reserved = 0
        if self.learner.device.type == "cuda":   # two counter reads, no device sync
            allocated = torch.cuda.memory_allocated(self.learner.device)
            reserved = torch.cuda.memory_reserved(self.learner.device)
        return InfoUpdate(new_labels=new, buffer_events=self.learner.strategy.memory_events(),
                          gpu_memory_allocated_bytes=allocated,
                          gpu_memory_reserved_bytes=reserved)


class LearnerHost(Protocol):
    """Submit work, collect results in submission order, checkpoint between batches."""

    info: LearnerInfo

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


class InlineLearner:
    """The learner in this process: every request completes when it is submitted."""

    def __init__(self, settings: Settings) -> None:
        self._core = _Core(settings)
        self.info = LearnerInfo(device=str(self._core.learner.device))
        self._done: list[tuple[Any, Result]] = []

    @property
    def in_flight(self) -> int:
        return 0

    def _answer(self, request: Request) -> Result | CallResult:
        answer = self._core.handle(request)
        if isinstance(request, LoadRequest):
            self.info.labels = []          # the update lists every label of the new state
        self.info.apply(answer.info)
        return answer.result

    def submit(self, request: Request, ctx: Any) -> None:
        """Run a queued request now; its result waits for :meth:`completed`, as in the worker."""
        _check_queueable(request)
        result = self._answer(request)
        assert not isinstance(result, (State, Loaded))   # _check_queueable keeps them out
        self._done.append((ctx, result))

    def call(self, request: Request) -> Result | CallResult:
        """Run one request and return its result (the worker host needs it drained first)."""
        return self._answer(request)

    def submit_learn(self, x: np.ndarray, labels: Sequence[Label], ctx: Any,
                     step_size: int | None = None) -> None:
        self.submit(LearnRequest(x=x, labels=list(labels), step_size=step_size), ctx)

    def submit_predict(self, x: np.ndarray, ctx: Any, top_k: int = 1) -> None:
        self.submit(PredictRequest(x=x, top_k=top_k), ctx)

    def submit_federate(self, peers: list[PeerModel], ctx: Any) -> None:
        self.submit(FederateRequest(peers=peers), ctx)

    def completed(self, wait: bool = False) -> list[tuple[Any, Result]]:
        done, self._done = self._done, []
        return done

    def drain(self) -> list[tuple[Any, Result]]:
        return self.completed()

    def state_dict(self) -> dict[str, Any]:
        # In-process: the learner's own state_dict, without the torch.save round trip the
        # worker needs to get it across the pipe.
        return self._core.learner.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._core.learner.load_state_dict(state)
        self._core._labels_sent = 0
        self.info.labels = []
        self.info.apply(self._core.info_update())

    def close(self) -> None:
        pass


def _warm_up(settings: Settings, events: int = 1500) -> None:
    """Train a throwaway learner on random data.

    torch's first steps in a process run ~5x slower (lazy initialisation, first touch
    of code and allocator pages: ~1.5 s once, whatever the shapes).  Paying that
    before reporting ready keeps it out of the first seconds of the stream.  The real
    learner is built afterwards and seeds torch itself, so this changes no result.
    """
    rng = np.random.default_rng(0)
    x = rng.normal(size=(events, 4)).astype(np.float32)
    labels = rng.integers(0, 2, events).tolist()
    lrn = Learner(settings)
    xt, y = lrn.to_tensor(x), lrn.encode_labels(labels)
    for i in range(0, events, 500):
        lrn.prequential(xt[i:i + 500], y[i:i + 500])


def _worker_main(conn: Connection, settings: Settings) -> None:
    """The worker process: answer requests in order until told to stop or orphaned."""
    # The daemon drives shutdown (it still needs our state for the final checkpoint);
    # a SIGTERM/SIGINT sent to the whole process group must not kill us first.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        _warm_up(settings)
        core = _Core(settings)
        gc.collect()
        gc.freeze()   # torch's ~1M long-lived objects out of every full collection
        conn.send(Ready(device=str(core.learner.device)))
        while True:
            try:
                data = conn.recv_bytes()
            except (EOFError, OSError):   # the daemon died (EOF or reset): nothing to serve
                return
            # Reading and unpickling apart (what conn.recv() does in one): a message we
            # cannot unpickle (a class this process cannot import) is the sender's
            # mistake, answered like an unknown type, not a pipe that went away.
            try:
                request = ForkingPickler.loads(data)
            except Exception as exc:  # noqa: BLE001 - any unpickling failure is reported
                conn.send(Rejected(error=f"unreadable learner request: "
                                         f"{type(exc).__name__}: {exc}"))
                continue
            if isinstance(request, StopRequest):
                return
            try:
                conn.send(core.handle(request))
            except UnknownRequest as exc:   # nothing ran: the learner is intact, keep serving
                conn.send(Rejected(error=str(exc)))
            except Exception as exc:  # noqa: BLE001 - reported to the daemon, which stops
                # The learner may be half-way through an update: stop rather than serve
                # results from a state no checkpoint describes.
                conn.send(Failed(error=f"{type(exc).__name__}: {exc}",
                                 traceback=traceback.format_exc()))
                return
    except (OSError, EOFError, KeyboardInterrupt):   # the daemon went away mid-reply
        return


class WorkerLearner:
    """The learner in a child process; at most :data:`MAX_IN_FLIGHT` requests outstanding.

    The worker is spawned (not forked: torch and CUDA must not inherit a threaded
    parent) and exits when it reads end-of-file, so a daemon killed with ``-9`` leaves
    no orphan behind.

    A reader thread takes every reply off the pipe as soon as the worker writes it.
    Without it the two could deadlock: the daemon writing a request larger than the
    socket buffer while the worker writes a reply larger than it, each waiting for the
    other to read.  Now the worker's writes always drain, so it always gets back to
    reading requests.
    """

    def __init__(self, settings: Settings, start_timeout_s: float = 120.0) -> None:
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe(duplex=True)
        self._proc = ctx.Process(target=_worker_main, args=(child, settings),
                                 name="stream-learner-worker", daemon=True)
        self._proc.start()
        child.close()
        self._pending: deque[Any] = deque()          # ctx of each request, in order
        self._ready: list[tuple[Any, Result]] = []   # read while waiting for room
        # None: the pipe closed (the worker is gone); the reader's last item.
        self._replies: queue.SimpleQueue[Reply | None] = queue.SimpleQueue()
        if not self._conn.poll(start_timeout_s):
            self.close()
            raise LearnerError(f"learner worker did not start in {start_timeout_s:.0f}s")
        try:
            hello = self._conn.recv()
        except (EOFError, OSError) as exc:
            self.close()
            raise LearnerError(f"learner worker exited (code {self._proc.exitcode})") from exc
        if not isinstance(hello, Ready):
            self.close()
            raise LearnerError(f"learner worker sent {type(hello).__name__} before Ready")
        self._reader = threading.Thread(target=self._read_replies, name="learner-replies",
                                        daemon=True)
        self._reader.start()
        self.info = LearnerInfo(device=hello.device)
        log.info("learner worker pid %d on %s", self._proc.pid, self.info.device)

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def _read_replies(self) -> None:
        """The reader thread: every reply into the queue; None once the worker is gone."""
        try:
            while True:
                self._replies.put(self._conn.recv())
        except (EOFError, OSError):
            self._replies.put(None)

    def _exited(self) -> LearnerError:
        return LearnerError(f"learner worker exited (code {self._proc.exitcode})")

    def _answer(self, block: bool = True) -> Answer | None:
        """The next answer; None when ``block`` is False and none has arrived.

        Raises :class:`RequestRejected` for a request the worker did not run (it still
        serves), :class:`LearnerError` when the learner failed or the worker is gone.
        """
        try:
            reply = self._replies.get(block=block)
        except queue.Empty:
            return None
        match reply:
            case Answer():
                return reply
            case Rejected(error=error):
                raise RequestRejected(error)
            case Failed(error=error, traceback=tb):
                log.error("learner worker failed:\n%s", tb)
                raise LearnerError(f"learner failed: {error}")
            case None:
                self._replies.put(None)          # every later call sees it too
                self._proc.join(5.0)
                raise self._exited()
            case _:
                raise LearnerError(f"learner worker sent an unknown reply "
                                   f"{type(reply).__name__}")

    def _write(self, request: Request | StopRequest) -> None:
        try:
            self._conn.send(request)
        except (BrokenPipeError, OSError) as exc:
            raise self._exited() from exc

    def submit(self, request: Request, ctx: Any) -> None:
        """Queue a request; its result comes back from :meth:`completed` with ``ctx``."""
        _check_queueable(request)
        if len(self._pending) >= MAX_IN_FLIGHT:
            self._ready = self.completed(wait=True)   # includes what _ready held
        self._write(request)
        self._pending.append(ctx)

    def submit_learn(self, x: np.ndarray, labels: Sequence[Label], ctx: Any,
                     step_size: int | None = None) -> None:
        self.submit(LearnRequest(x=x, labels=list(labels), step_size=step_size), ctx)

    def submit_predict(self, x: np.ndarray, ctx: Any, top_k: int = 1) -> None:
        self.submit(PredictRequest(x=x, top_k=top_k), ctx)

    def submit_federate(self, peers: list[PeerModel], ctx: Any) -> None:
        self.submit(FederateRequest(peers=peers), ctx)

    def completed(self, wait: bool = False) -> list[tuple[Any, Result]]:
        """Results ready now; with ``wait``, at least one if anything is in flight."""
        done, self._ready = self._ready, []
        while self._pending:
            try:
                answer = self._answer(block=wait and not done)
            except RequestRejected:
                # That request produced nothing: drop its ctx so the next answers still
                # pair with theirs, and keep what was read for the next call.
                self._pending.popleft()
                self._ready = done
                raise
            if answer is None:
                break
            self.info.apply(answer.info)
            result = answer.result
            if isinstance(result, (State, Loaded)):   # _check_queueable keeps these out
                raise LearnerError(f"learner worker answered {type(result).__name__} "
                                   f"to a queued request")
            done.append((self._pending.popleft(), result))
        return done

    def drain(self) -> list[tuple[Any, Result]]:
        done = self.completed()
        while self._pending:
            done += self.completed(wait=True)
        return done

    def call(self, request: Request) -> Result | CallResult:
        """Send one request and wait for its result; the worker must be drained first."""
        if self._pending:
            raise RuntimeError("drain() the learner before state_dict/load_state_dict")
        self._write(request)
        answer = self._answer()
        assert answer is not None                  # a blocking read returns or raises
        if isinstance(request, LoadRequest):
            self.info.labels = []          # the update lists every label of the new state
        self.info.apply(answer.info)
        return answer.result

    def state_dict(self) -> dict[str, Any]:
        state = self.call(StateRequest())
        if not isinstance(state, State):
            raise LearnerError(f"learner worker answered {type(state).__name__} to "
                               f"StateRequest")
        return torch.load(io.BytesIO(state.blob), weights_only=True)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        buf = io.BytesIO()
        torch.save(state, buf)
        loaded = self.call(LoadRequest(blob=buf.getvalue()))
        if not isinstance(loaded, Loaded):
            raise LearnerError(f"learner worker answered {type(loaded).__name__} to "
                               f"LoadRequest")

    def close(self) -> None:
        if self._proc.is_alive():
            try:
                self._conn.send(StopRequest())
            except (BrokenPipeError, OSError):
                pass
            self._proc.join(10.0)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join(5.0)
        self._conn.close()


def make_learner_host(settings: Settings) -> LearnerHost:
    if settings.model.worker == "process":
        return WorkerLearner(settings)
    return InlineLearner(settings)
