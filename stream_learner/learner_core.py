"""The request handler both hosts share and the in-process host: the torch side.

Split out of :mod:`stream_learner.learner_host` (which re-exports these names). The
worker process imports this; the Kafka loop of ``model.worker=process`` never does.
"""

from __future__ import annotations

import io
import time
from typing import Any, Sequence

import numpy as np
import torch

from .checkpoint_keeper import CheckpointKeeper
from .config import Settings
from .federation.merge import PeerModel
from .labels import Label
from .learner import Learner
from .strategies import UpdateStats
from .learner_messages import (CALL_RESULTS, Answer, CallResult, FedRound, FederateRequest,
                               InfoUpdate, LearnRequest, Learned, LearnerInfo, LoadRequest,
                               Loaded, PredictRequest, Predicted, Request, RestoreRequest,
                               Result, SaveRequest, State, StateRequest, UnknownRequest,
                               check_queueable)
from .learner_protocol import HostCheckpoints

class LearnerCore:
    """Runs requests against a :class:`Learner`; shared by both hosts."""

    def __init__(self, settings: Settings) -> None:
        if settings.model.threads:
            torch.set_num_threads(settings.model.threads)
        self.learner = Learner(settings)
        self.keeper = CheckpointKeeper(settings)
        self._labels_sent = 0

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.learner.load_state_dict(state)
        self._labels_sent = 0      # the next info update carries every label of the new state

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
                top = predict_top(lrn, x, top_k) if top_k > 1 else None
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
                self.load_state_dict(torch.load(io.BytesIO(blob), weights_only=True))
                result = Loaded()
            case SaveRequest(state=state):
                result = self.keeper.save(self.learner.state_dict(), state)
            case RestoreRequest():
                learner_state, result = self.keeper.restore()
                if learner_state is not None:
                    self.learner.load_state_dict(learner_state)
                self._labels_sent = 0   # the host starts its label list afresh either way
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


class InlineLearner:
    """The learner in this process: every request completes when it is submitted."""

    def __init__(self, settings: Settings) -> None:
        self._core = LearnerCore(settings)
        self.info = LearnerInfo(device=str(self._core.learner.device))
        self.checkpoints = HostCheckpoints(self.call)
        self._done: list[tuple[Any, Result]] = []

    @property
    def in_flight(self) -> int:
        return 0

    def _answer(self, request: Request) -> Result | CallResult:
        answer = self._core.handle(request)
        if isinstance(request, (LoadRequest, RestoreRequest)):
            self.info.labels = []          # the update lists every label of the new state
        self.info.apply(answer.info)
        return answer.result

    def submit(self, request: Request, ctx: Any) -> None:
        """Run a queued request now; its result waits for :meth:`completed`, as in the worker."""
        check_queueable(request)
        result = self._answer(request)
        assert not isinstance(result, CALL_RESULTS)   # check_queueable keeps them out
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
        self._core.load_state_dict(state)
        self.info.labels = []
        self.info.apply(self._core.info_update())

    def close(self) -> None:
        pass


@torch.inference_mode()
def predict_top(lrn: Learner, x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` likeliest class indices per row and their probabilities, best first;
    fewer columns while fewer classes are known (none: zero columns)."""
    if lrn.model is None or lrn.model.n_classes == 0:
        n = x.shape[0]
        return (torch.empty((n, 0), dtype=torch.int64, device=x.device),
                torch.empty((n, 0), device=x.device))
    proba = torch.softmax(lrn.model(x), dim=1)
    p, idx = proba.topk(min(k, proba.shape[1]), dim=1)
    return idx, p
