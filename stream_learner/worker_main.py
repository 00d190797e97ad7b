"""The worker process: warm up, build the learner, answer requests in order.

The torch side of ``model.worker=process``: only the spawned worker imports this (and
with it torch and the model); the daemon's side, :mod:`~stream_learner.learner_worker`,
does not.
"""

from __future__ import annotations

import gc
import signal
import traceback
from multiprocessing.connection import Connection
from multiprocessing.reduction import ForkingPickler

import numpy as np

from .config import Settings
from .learner import Learner
from .learner_core import LearnerCore
from .learner_messages import Failed, Ready, Rejected, StopRequest, UnknownRequest


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


def worker_main(conn: Connection, settings: Settings) -> None:
    """The worker process: answer requests in order until told to stop or orphaned."""
    # The daemon drives shutdown (it still needs our state for the final checkpoint);
    # a SIGTERM/SIGINT sent to the whole process group must not kill us first.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        _warm_up(settings)
        core = LearnerCore(settings)
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
