"""The worker pipe cannot deadlock, whatever the message sizes.

Model tensors cross the pipe through torch's shared-memory reducers, so snapshots are
small on the wire; but plain data is not.  Before, the daemon wrote the next request (a
2048 x 256 batch, 2 MiB) while the worker was still writing a reply larger than the
socket buffer (~230 KB here: the first reply after 1,000 new 256-character labels
carries them all); each waited for the other to read until the watchdog killed the
process.  A reader thread on the daemon side keeps reading.
"""

from __future__ import annotations

import threading

import numpy as np

from stream_learner.config import Settings
from stream_learner.learner_host import FedRound, Learned, WorkerLearner

N_FEATURES, BATCH, ROUNDS, CLASSES = 256, 2048, 4, 1000


def _pipelined(worker: WorkerLearner, results: list) -> None:
    rng = np.random.default_rng(0)
    names = [f"{i:04d}-" + "x" * 251 for i in range(CLASSES)]     # 256 characters each
    for i in range(ROUNDS):
        x = rng.normal(size=(BATCH, N_FEATURES)).astype(np.float32)
        worker.submit_learn(x, [names[j % CLASSES] for j in range(BATCH)], ctx=("learn", i))
        worker.submit_federate([], ctx=("federate", i))   # rounds every second: one per batch
        results.extend(worker.completed())
    results.extend(worker.drain())


def test_large_requests_and_replies_in_flight_together_do_not_deadlock() -> None:
    settings = Settings(model={"device": "cpu", "hidden": (1024, 1024), "threads": 1,
                               "worker": "process", "max_classes": CLASSES},
                        probes={"per_class": 0})
    worker = WorkerLearner(settings)
    results: list = []
    runner = threading.Thread(target=_pipelined, args=(worker, results), daemon=True)
    try:
        runner.start()
        runner.join(90)
        assert not runner.is_alive(), "daemon and worker are deadlocked on the pipe"
    finally:
        if runner.is_alive():
            worker._proc.kill()          # unblock the stuck send so the test can end
        worker.close()
    assert [ctx for ctx, _ in results] == [(kind, i) for i in range(ROUNDS)
                                           for kind in ("learn", "federate")]
    assert len(worker.info.labels) == CLASSES
    snapshots = [r.snapshot for _, r in results if isinstance(r, FedRound)]
    assert all(s is not None and s.params["body.2.weight"].shape == (1024, 1024)
               for s in snapshots)
    assert sum(r.y.size for _, r in results if isinstance(r, Learned)) == ROUNDS * BATCH
