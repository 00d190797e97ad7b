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
learner raised; it exits).  Both hosts run the same :class:`LearnerCore`, so they take the same
requests and give the same results.

The parts live in their own modules, all re-exported here: the messages in
:mod:`~stream_learner.learner_messages`, the protocol and checkpoint files through a host
in :mod:`~stream_learner.learner_protocol`, the shared core and the in-process host in
:mod:`~stream_learner.learner_core`, the worker's proxy in
:mod:`~stream_learner.learner_worker` and its request loop in
:mod:`~stream_learner.worker_main`.  Either host writes and reads the checkpoint files
(:class:`SaveRequest`, :class:`RestoreRequest`): the model's side owns the file format.

The process boundary is the import boundary: with ``model.worker=process`` the daemon's
process imports neither torch nor the model.  :class:`InlineLearner` and
:class:`LearnerCore` (torch) therefore load on first use (PEP 562), so importing this
module for the worker's proxy does not pull them in.

>>> import numpy as np
>>> from stream_learner.config import Settings
>>> from stream_learner.learner_host import InlineLearner
>>> host = InlineLearner(Settings(model={"device": "cpu"}, probes={"per_class": 0}))
>>> x = np.random.default_rng(0).normal(size=(8, 2)).astype("float32")
>>> host.submit_learn(x, ["a"] * 4 + ["b"] * 4, ctx="batch-1")
>>> [(ctx, type(r).__name__, r.y.tolist()) for ctx, r in host.drain()]
[('batch-1', 'Learned', [0, 0, 0, 0, 1, 1, 1, 1])]
>>> host.info.labels
['a', 'b']
"""


from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .config import Settings
from .learner_messages import (MAX_IN_FLIGHT, REQUESTS, Answer, CallResult, Failed, FedRound,
                               FederateRequest, InfoUpdate, Learned, LearnerError, LearnerInfo,
                               LearnRequest, Loaded, LoadRequest, Predicted, PredictRequest,
                               Ready, Rejected, Reply, Request, RequestRejected, Restored,
                               RestoreRequest, Result, Saved, SaveRequest, State,
                               StateRequest, StopRequest, UnknownRequest)
from .learner_protocol import HostCheckpoints, LearnerHost
from .learner_worker import WorkerLearner

if TYPE_CHECKING:
    from .learner_core import InlineLearner, LearnerCore

__all__ = ["MAX_IN_FLIGHT", "REQUESTS", "Answer", "CallResult", "Failed", "FedRound",
           "FederateRequest", "HostCheckpoints", "InfoUpdate", "InlineLearner", "Learned",
           "LearnerCore", "LearnerError", "LearnerHost", "LearnerInfo", "LearnRequest",
           "Loaded", "LoadRequest", "Predicted", "PredictRequest", "Ready", "Rejected",
           "Reply", "Request", "RequestRejected", "Restored", "RestoreRequest", "Result",
           "Saved", "SaveRequest", "State", "StateRequest", "StopRequest", "UnknownRequest",
           "WorkerLearner", "make_learner_host"]

_TORCH_SIDE = ("InlineLearner", "LearnerCore")


def __getattr__(name: str) -> Any:
    if name in _TORCH_SIDE:
        return getattr(importlib.import_module(".learner_core", __package__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def make_learner_host(settings: Settings) -> LearnerHost:
    if settings.model.worker == "process":
        return WorkerLearner(settings)
    # Inline, the model lives in this process: only then is torch imported here.
    from .learner_core import InlineLearner

    return InlineLearner(settings)
