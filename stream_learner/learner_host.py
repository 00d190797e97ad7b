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


@dataclass(frozen=True)
class FedRound:
    snapshot: Snapshot | None    # our model to publish (None: nothing learned yet)
    report: MergeReport          # what merging the peers' models did


Result = Union[Learned, Predicted, FedRound]
InfoDelta = tuple[list[Label], int, int, int]   # new labels, buffer events, GPU bytes x2


@dataclass
class LearnerInfo:
    """What the daemon shows about the learner; updated with every result."""

    device: str
    labels: list[Label] = field(default_factory=list)
    buffer_events: int = 0
    gpu_memory_allocated_bytes: int = 0   # torch's CUDA allocator; 0 on the CPU
    gpu_memory_reserved_bytes: int = 0


class _Core:
    """Runs requests against a :class:`Learner`; shared by both hosts."""

    def __init__(self, settings: Settings) -> None:
        if settings.model.threads:
            torch.set_num_threads(settings.model.threads)
        self.learner = Learner(settings)
        self._labels_sent = 0

    def handle(self, request: tuple[Any, ...]) -> tuple[Any, ...]:
        kind = request[0]
        lrn = self.learner
        if kind == "learn":
            t0 = time.perf_counter()
            x_np = request[1]
            y, refused = lrn.admit_labels(request[2])
            if refused.size:
                x_np = np.delete(x_np, refused, axis=0)
            if request[3] is not None:
                lrn.step_size = request[3]
            if y.numel():
                keep, pred, stats = lrn.observe(lrn.to_tensor(x_np), y)
            else:     # every event of the batch was refused
                keep = pred = y
                stats = UpdateStats(0.0, 0)
            held_out = int(y.shape[0] - int(keep.sum()))
            if held_out:
                y = y[keep]
            probes = lrn.probes
            result: Any = Learned(y.cpu().numpy(), pred.cpu().numpy(), stats.loss, stats.steps,
                                  time.perf_counter() - t0, time.time(), held_out,
                                  probes.forgetting, probes.backward_transfer,
                                  probes.accuracies(), lrn.skipped_steps, lrn.drift.report(),
                                  refused)
        elif kind == "predict":
            x = lrn.to_tensor(request[1])
            idx, proba = lrn.predict_indices(x)
            result = Predicted(idx.cpu().numpy(), proba.cpu().numpy(),
                               lrn.drift.report() if lrn.drift.observe_inputs(x) else None)
        elif kind == "federate":
            # Snapshot first: what we publish is our own learning, not the peers' echo.
            fed = lrn.federated
            result = FedRound(fed.snapshot(), fed.merge(request[1]))
        elif kind == "state":
            buf = io.BytesIO()
            torch.save(lrn.state_dict(), buf)
            return ("state", buf.getvalue())
        elif kind == "load":
            lrn.load_state_dict(torch.load(io.BytesIO(request[1]), weights_only=True))
            self._labels_sent = 0
            result = None
        else:
            raise ValueError(f"unknown learner request {kind!r}")
        return ("ok", result, self._info_delta())

    def _info_delta(self) -> InfoDelta:
        """Labels added since the last reply (usually none), replay buffer size, GPU memory."""
        labels = self.learner.labels.labels
        new = list(labels[self._labels_sent:])
        self._labels_sent = len(labels)
        gpu = (0, 0)
        if self.learner.device.type == "cuda":   # two counter reads, no device sync
            gpu = (torch.cuda.memory_allocated(self.learner.device),
                   torch.cuda.memory_reserved(self.learner.device))
        return new, self.learner.strategy.memory_events(), *gpu


class LearnerHost(Protocol):
    """Submit work, collect results in submission order, checkpoint between batches."""

    info: LearnerInfo

    @property
    def in_flight(self) -> int: ...

    def submit_learn(self, x: np.ndarray, labels: Sequence[Label], ctx: Any,
                     step_size: int | None = None) -> None: ...

    def submit_predict(self, x: np.ndarray, ctx: Any) -> None: ...

    def submit_federate(self, peers: list[PeerModel], ctx: Any) -> None: ...

    def completed(self, wait: bool = False) -> list[tuple[Any, Result]]: ...

    def drain(self) -> list[tuple[Any, Result]]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


def _apply_info(info: LearnerInfo, delta: InfoDelta) -> None:
    new, info.buffer_events = delta[0], delta[1]
    info.gpu_memory_allocated_bytes, info.gpu_memory_reserved_bytes = delta[2], delta[3]
    info.labels.extend(new)


class InlineLearner:
    """The learner in this process: every request completes when it is submitted."""

    def __init__(self, settings: Settings) -> None:
        self._core = _Core(settings)
        self.info = LearnerInfo(device=str(self._core.learner.device))
        self._done: list[tuple[Any, Result]] = []

    @property
    def in_flight(self) -> int:
        return 0

    def _run(self, request: tuple[Any, ...], ctx: Any) -> None:
        _, result, delta = self._core.handle(request)
        _apply_info(self.info, delta)
        self._done.append((ctx, result))

    def submit_learn(self, x: np.ndarray, labels: Sequence[Label], ctx: Any,
                     step_size: int | None = None) -> None:
        self._run(("learn", x, labels, step_size), ctx)

    def submit_predict(self, x: np.ndarray, ctx: Any) -> None:
        self._run(("predict", x), ctx)

    def submit_federate(self, peers: list[PeerModel], ctx: Any) -> None:
        self._run(("federate", peers), ctx)

    def completed(self, wait: bool = False) -> list[tuple[Any, Result]]:
        done, self._done = self._done, []
        return done

    def drain(self) -> list[tuple[Any, Result]]:
        return self.completed()

    def state_dict(self) -> dict[str, Any]:
        return self._core.learner.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._core.learner.load_state_dict(state)
        self._core._labels_sent = 0
        self.info.labels = []
        _apply_info(self.info, self._core._info_delta())

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
        conn.send(("ready", str(core.learner.device)))
        while True:
            try:
                request = conn.recv()
            except (EOFError, OSError):   # the daemon died (EOF or reset): nothing to serve
                return
            if request[0] == "stop":
                return
            try:
                conn.send(core.handle(request))
            except Exception as exc:  # noqa: BLE001 - reported to the daemon, which stops
                conn.send(("error", f"{type(exc).__name__}: {exc}", traceback.format_exc()))
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
        self._replies: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        if not self._conn.poll(start_timeout_s):
            self.close()
            raise LearnerError(f"learner worker did not start in {start_timeout_s:.0f}s")
        try:
            reply = self._conn.recv()
        except (EOFError, OSError) as exc:
            self.close()
            raise LearnerError(f"learner worker exited (code {self._proc.exitcode})") from exc
        self._reader = threading.Thread(target=self._read_replies, name="learner-replies",
                                        daemon=True)
        self._reader.start()
        self.info = LearnerInfo(device=reply[1])
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

    def _recv(self, block: bool = True) -> tuple[Any, ...] | None:
        """The next reply; None when ``block`` is False and none has arrived."""
        try:
            reply = self._replies.get(block=block)
        except queue.Empty:
            return None
        if reply is None:
            self._replies.put(None)          # every later call sees it too
            self._proc.join(5.0)
            raise LearnerError(f"learner worker exited (code {self._proc.exitcode})")
        if reply[0] == "error":
            log.error("learner worker failed:\n%s", reply[2])
            raise LearnerError(f"learner failed: {reply[1]}")
        return reply

    def _send(self, request: tuple[Any, ...], ctx: Any) -> None:
        if len(self._pending) >= MAX_IN_FLIGHT:
            self._ready = self.completed(wait=True)   # includes what _ready held
        try:
            self._conn.send(request)
        except (BrokenPipeError, OSError) as exc:
            raise LearnerError(f"learner worker exited (code {self._proc.exitcode})") from exc
        self._pending.append(ctx)

    def submit_learn(self, x: np.ndarray, labels: Sequence[Label], ctx: Any,
                     step_size: int | None = None) -> None:
        self._send(("learn", x, list(labels), step_size), ctx)

    def submit_predict(self, x: np.ndarray, ctx: Any) -> None:
        self._send(("predict", x), ctx)

    def submit_federate(self, peers: list[PeerModel], ctx: Any) -> None:
        self._send(("federate", peers), ctx)

    def completed(self, wait: bool = False) -> list[tuple[Any, Result]]:
        """Results ready now; with ``wait``, at least one if anything is in flight."""
        done, self._ready = self._ready, []
        while self._pending:
            reply = self._recv(block=wait and not done)
            if reply is None:
                break
            _, result, delta = reply
            _apply_info(self.info, delta)
            done.append((self._pending.popleft(), result))
        return done

    def drain(self) -> list[tuple[Any, Result]]:
        done = self.completed()
        while self._pending:
            done += self.completed(wait=True)
        return done

    def _call(self, request: tuple[Any, ...]) -> tuple[Any, ...]:
        if self._pending:
            raise RuntimeError("drain() the learner before state_dict/load_state_dict")
        try:
            self._conn.send(request)
        except (BrokenPipeError, OSError) as exc:
            raise LearnerError(f"learner worker exited (code {self._proc.exitcode})") from exc
        reply = self._recv()
        assert reply is not None
        return reply

    def state_dict(self) -> dict[str, Any]:
        blob = self._call(("state",))[1]
        return torch.load(io.BytesIO(blob), weights_only=True)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        buf = io.BytesIO()
        torch.save(state, buf)
        _, _, delta = self._call(("load", buf.getvalue()))
        self.info.labels = []
        _apply_info(self.info, delta)

    def close(self) -> None:
        if self._proc.is_alive():
            try:
                self._conn.send(("stop",))
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
