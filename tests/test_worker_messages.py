"""The typed learner messages: every request gets its typed reply from a real worker.

The worker is :class:`WorkerLearner`'s own: spawned, warmed up and served as in
production.  Requests go through the hosts' public ``submit``/``call``, so each crosses
the real pipe (pickle, torch's shared-memory reducers for the federation tensors).
"""

from __future__ import annotations

import dataclasses
import io
import operator
from typing import Any

import numpy as np
import pytest
import torch

from stream_learner.config import Settings
from stream_learner.federation.merge import PeerModel
from stream_learner.learner_host import (REQUESTS, CallResult, FederateRequest,
                                         FedRound, InlineLearner, Learned, LearnerHost,
                                         LearnRequest, Loaded, LoadRequest, PredictRequest,
                                         Predicted, RequestRejected, Result, State,
                                         StateRequest, UnknownRequest, WorkerLearner)

N_FEATURES = 3


def _settings() -> Settings:
    # max_classes 3 so a batch can carry a refused label; probes so forgetting is scored.
    return Settings(model={"device": "cpu", "threads": 1, "warmup_events": 50, "seed": 7,
                           "max_classes": 3, "hidden": (16,)},
                    replay={"capacity": 200}, probes={"per_class": 4, "eval_every": 100})


def _batch(seed: int, n: int = 60, names: tuple[str, ...] = ("a", "b")) -> tuple[
        np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, N_FEATURES)).astype(np.float32)
    return x, [names[int(i)] for i in rng.integers(0, len(names), n)]


@pytest.fixture(scope="module")
def worker() -> Any:
    host = WorkerLearner(_settings())
    yield host
    host.close()


class _UnreadableInTheWorker:
    """Pickles here; unpickling it in the worker raises (1 / 0), like a class it lacks."""

    def __reduce__(self) -> tuple[Any, tuple[int, int]]:
        return operator.truediv, (1, 0)


def test_every_request_type_gets_its_typed_reply_from_a_spawned_worker(
        worker: WorkerLearner) -> None:
    x, labels = _batch(0, names=("a", "b", "c", "d"))
    learned = worker.call(LearnRequest(x=x, labels=labels, step_size=1))
    assert isinstance(learned, Learned)
    beyond = list(dict.fromkeys(labels))[3]      # the 4th class seen: beyond max_classes=3
    refused = [i for i, name in enumerate(labels) if name == beyond]
    assert learned.refused.tolist() == refused
    assert learned.y.size + learned.held_out == len(labels) - len(refused)
    assert learned.steps > 0 and learned.pred.shape == learned.y.shape
    assert worker.info.labels == list(dict.fromkeys(labels))[:3]

    predicted = worker.call(PredictRequest(x=x[:5]))
    assert isinstance(predicted, Predicted)
    assert predicted.idx.shape == predicted.proba.shape == (5,)   # class, its probability
    assert ((predicted.proba > 0) & (predicted.proba <= 1)).all()

    fed = worker.call(FederateRequest(peers=[]))
    assert isinstance(fed, FedRound) and fed.snapshot is not None
    assert fed.snapshot.n_features == N_FEATURES and not fed.report.merged

    state = worker.call(StateRequest())
    assert isinstance(state, State) and isinstance(state.blob, bytes)
    assert torch.load(io.BytesIO(state.blob), weights_only=True)["seen"] == learned.y.size

    worker.call(LearnRequest(x=x, labels=["a"] * len(x)))   # move on, then load back
    assert isinstance(worker.call(LoadRequest(blob=state.blob)), Loaded)
    assert worker.state_dict()["seen"] == learned.y.size
    assert worker.info.labels == list(dict.fromkeys(labels))[:3]

    # The queued path: the same requests, answers paired with their ctx in order.
    for n, request in enumerate([LearnRequest(x=x, labels=labels), PredictRequest(x=x),
                                 FederateRequest(peers=[]), PredictRequest(x=x[:1])]):
        worker.submit(request, ctx=n)
    got = worker.drain()
    assert [(ctx, type(r)) for ctx, r in got] == [
        (0, Learned), (1, Predicted), (2, FedRound), (3, Predicted)]
    with pytest.raises(TypeError, match="StateRequest goes through call"):
        worker.submit(StateRequest(), ctx=None)


def test_stop_request_ends_the_worker_cleanly() -> None:
    host = WorkerLearner(_settings())
    host.close()                       # sends StopRequest; no kill needed
    assert host._proc.exitcode == 0


@pytest.mark.parametrize("bad, error", [
    # The old protocol's tuple: a clear error naming the type, not request[3] failing.
    (("learn", np.zeros((2, N_FEATURES), np.float32), ["a", "b"], None),
     "unknown learner request tuple: expected one of " +
     ", ".join(t.__name__ for t in REQUESTS)),
    ({"x": np.zeros((2, N_FEATURES), np.float32)}, "unknown learner request dict"),
    (_UnreadableInTheWorker(), "unreadable learner request: ZeroDivisionError"),
])
def test_an_unknown_message_gets_a_clear_error_and_the_worker_keeps_serving(
        worker: WorkerLearner, bad: Any, error: str) -> None:
    with pytest.raises(RequestRejected, match=f"^{error}"):
        worker.call(bad)
    # Queued ahead of a good request: the rejection is raised when the answers are read,
    # and the good answer behind it still pairs with its own ctx.
    x, labels = _batch(1)
    worker.submit(bad, ctx="bad")
    worker.submit(LearnRequest(x=x, labels=labels), ctx="after")
    with pytest.raises(RequestRejected, match=f"^{error}"):
        worker.drain()
    assert [(ctx, type(r)) for ctx, r in worker.drain()] == [("after", Learned)]
    assert worker.in_flight == 0 and worker._proc.is_alive()


def test_the_in_process_host_rejects_an_unknown_message_with_the_same_error(
        worker: WorkerLearner) -> None:
    bad = ("predict", np.zeros((2, N_FEATURES), np.float32))
    inline = InlineLearner(_settings())
    with pytest.raises(UnknownRequest) as inline_error:
        inline.submit(bad, ctx="bad")        # type: ignore[arg-type]
    with pytest.raises(RequestRejected) as worker_error:
        worker.call(bad)                     # type: ignore[arg-type]
    assert str(inline_error.value) == str(worker_error.value)
    x, labels = _batch(2)
    inline.submit(LearnRequest(x=x, labels=labels), ctx="next")
    assert [ctx for ctx, _ in inline.completed()] == ["next"]


def _script() -> list[Any]:
    """Predict before any label, learn (with a refused 4th class), federate with a peer."""
    peer_host = InlineLearner(_settings())
    px, plabels = _batch(99, names=("a", "b", "c"))
    peer_host.submit_learn(px, plabels, ctx=None)
    peer_host.submit_federate([], ctx=None)
    [_, (_, round_)] = peer_host.completed()
    assert isinstance(round_, FedRound) and round_.snapshot is not None
    snap = round_.snapshot
    peer = PeerModel(sender="peer-1", params=snap.params, labels=snap.labels,
                     samples=snap.samples, age=0.0)
    steps: list[Any] = [PredictRequest(x=_batch(10, n=4)[0])]
    for i in range(6):
        x, labels = _batch(20 + i, names=("a", "b") if i < 3 else ("a", "b", "c", "d"))
        steps.append(LearnRequest(x=x, labels=labels, step_size=2 if i == 4 else None))
        if i % 2:
            steps.append(PredictRequest(x=_batch(40 + i, n=9)[0]))
    steps += [FederateRequest(peers=[peer]), PredictRequest(x=_batch(50, n=9)[0])]
    return steps


def _run(host: LearnerHost, steps: list[Any]) -> list[tuple[Any, Result]]:
    out: list[tuple[Any, Result]] = []
    for n, request in enumerate(steps):
        host.submit(request, ctx=n)
        out += host.completed()
    return out + host.drain()


def _equal(a: Any, b: Any, where: str) -> None:
    """Exactly equal: arrays and tensors element for element, floats as numbers (NaN = NaN)."""
    assert type(a) is type(b), where
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and torch.equal(torch.from_numpy(a), torch.from_numpy(b)), where
    elif dataclasses.is_dataclass(a):
        for f in dataclasses.fields(a):
            _equal(getattr(a, f.name), getattr(b, f.name), f"{where}.{f.name}")
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _equal(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _equal(x, y, f"{where}[{i}]")
    elif isinstance(a, float):
        assert a == b or (a != a and b != b), where
    else:
        assert a == b, where


def test_in_process_and_worker_hosts_give_bit_identical_results_for_the_same_seed() -> None:
    """Same settings and seed, same requests: every field of every result is identical
    (tensors and arrays by ``torch.equal``, floats by ``==``) but the timings
    (``Learned.seconds``/``finished_at``, ``MergeReport.seconds``), and so is the state."""
    steps = _script()
    inline = InlineLearner(_settings())
    worker = WorkerLearner(_settings())
    try:
        got_inline, got_worker = _run(inline, steps), _run(worker, steps)
        assert [ctx for ctx, _ in got_inline] == [ctx for ctx, _ in got_worker] == list(
            range(len(steps)))
        kinds = [type(r) for _, r in got_worker]
        assert kinds.count(Learned) == 6 and kinds.count(FedRound) == 1
        assert any(r.refused.size for _, r in got_worker if isinstance(r, Learned))
        for (ctx, a), (_, b) in zip(got_inline, got_worker):
            # Timings: never equal across processes, so left out of the comparison.
            if isinstance(a, Learned) and isinstance(b, Learned):
                a = dataclasses.replace(a, seconds=0.0, finished_at=0.0)
                b = dataclasses.replace(b, seconds=0.0, finished_at=0.0)
            if isinstance(a, FedRound) and isinstance(b, FedRound):
                a = dataclasses.replace(a, report=dataclasses.replace(a.report, seconds=0.0))
                b = dataclasses.replace(b, report=dataclasses.replace(b.report, seconds=0.0))
            _equal(a, b, f"result {ctx} ({type(a).__name__})")
        assert worker.info == dataclasses.replace(inline.info, device=worker.info.device)
        _equal(worker.state_dict(), inline.state_dict(), "state_dict")
    finally:
        worker.close()


def test_call_results_have_the_same_types_in_both_hosts(worker: WorkerLearner) -> None:
    inline = InlineLearner(_settings())
    x, labels = _batch(3)
    for request in [LearnRequest(x=x, labels=labels), PredictRequest(x=x),
                    FederateRequest(peers=[]), StateRequest()]:
        a: Result | CallResult = inline.call(request)
        b: Result | CallResult = worker.call(request)
        assert type(a) is type(b), request
    blob = worker.call(StateRequest())
    assert isinstance(blob, State)
    assert isinstance(inline.call(LoadRequest(blob=blob.blob)), Loaded)
    assert inline.info.labels == worker.info.labels
