"""The worker-process host, daemon side: the proxy the Kafka loop talks to.

Split out of :mod:`stream_learner.learner_host` (which re-exports these names). Torch-free:
the worker's request loop is :mod:`~stream_learner.worker_main`, imported only by the
spawned worker, so the loop holds no model and no torch (~500 MB of it).
"""

from __future__ import annotations

import io
import logging
import multiprocessing as mp
import queue
import threading
from collections import deque
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from .config import Settings
from .labels import Label
from .learner_messages import (CALL_RESULTS, Answer, CallResult, Failed, FederateRequest,
                               LearnRequest, LearnerError, LearnerInfo, LoadRequest, Loaded,
                               MAX_IN_FLIGHT, PredictRequest, Ready, Rejected, Reply,
                               Request, RequestRejected, RestoreRequest, Result, State,
                               StateRequest, StopRequest, check_queueable)
from .learner_protocol import HostCheckpoints

if TYPE_CHECKING:   # tensors: only with federation on
    from .federation.merge import PeerModel

log = logging.getLogger(__name__)

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
        self._proc = ctx.Process(target=_run_worker, args=(child, settings),
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
        self.checkpoints = HostCheckpoints(self.call)
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
        check_queueable(request)
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
            if isinstance(result, CALL_RESULTS):   # check_queueable keeps these out
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
        if isinstance(request, (LoadRequest, RestoreRequest)):
            self.info.labels = []          # the update lists every label of the new state
        self.info.apply(answer.info)
        return answer.result

    # The daemon never calls these two (the worker writes and reads the checkpoint
    # files); tools and tests that want the tensors themselves import torch for them.
    def state_dict(self) -> dict[str, Any]:
        import torch

        state = self.call(StateRequest())
        if not isinstance(state, State):
            raise LearnerError(f"learner worker answered {type(state).__name__} to "
                               f"StateRequest")
        return torch.load(io.BytesIO(state.blob), weights_only=True)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        import torch

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


def _run_worker(conn: Any, settings: Settings) -> None:
    """The spawned worker's entry point: the one place that imports the torch side.

    Runs in the child only (spawn imports this module there and calls this), so the
    daemon's process never imports :mod:`~stream_learner.worker_main`.
    """
    from .worker_main import worker_main

    worker_main(conn, settings)
