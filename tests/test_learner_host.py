"""The worker-process learner must behave exactly like the in-process one."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

from stream_learner.config import Settings
from stream_learner.learner_host import (MAX_IN_FLIGHT, InlineLearner, Learned, LearnerError,
                                         Predicted, WorkerLearner)


def _settings() -> Settings:
    return Settings(model={"device": "cpu", "threads": 1, "warmup_events": 300},
                    replay={"capacity": 500}, probes={"per_class": 8, "eval_every": 500})


def _script(seed: int = 0) -> list[tuple[str, np.ndarray, list | None]]:
    """A predict before any label, labeled batches, a new label, unlabeled predicts."""
    rng = np.random.default_rng(seed)
    steps: list[tuple[str, np.ndarray, list | None]] = [
        ("predict", rng.normal(size=(5, 3)).astype(np.float32), None)]
    for i in range(12):
        x = rng.normal(size=(200, 3)).astype(np.float32)
        names = ["a", "b"] if i < 6 else ["a", "b", "new"]
        labels = [names[int(v)] for v in rng.integers(0, len(names), 200)]
        steps.append(("learn", x, labels))
        if i % 4 == 3:
            steps.append(("predict", rng.normal(size=(7, 3)).astype(np.float32), None))
    return steps


def _run(host, steps) -> list:
    out = []
    for n, (kind, x, labels) in enumerate(steps):
        if kind == "learn":
            host.submit_learn(x, labels, ctx=n)
        else:
            host.submit_predict(x, ctx=n)
        assert host.in_flight <= MAX_IN_FLIGHT
        out += host.completed()
    return out + host.drain()


def _same(a, b) -> None:
    assert [ctx for ctx, _ in a] == [ctx for ctx, _ in b] == list(range(len(a)))
    for (_, ra), (_, rb) in zip(a, b):
        assert type(ra) is type(rb)
        if isinstance(ra, Learned):
            np.testing.assert_array_equal(ra.y, rb.y)
            np.testing.assert_array_equal(ra.pred, rb.pred)
            assert ra.loss == pytest.approx(rb.loss, rel=1e-6)
            assert ra.steps == rb.steps
        else:
            assert isinstance(ra, Predicted)
            np.testing.assert_array_equal(ra.idx, rb.idx)
            np.testing.assert_allclose(ra.proba, rb.proba, rtol=1e-6)


def _state_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        va, vb = a[key], b[key]
        if isinstance(va, dict):
            _state_equal(va, vb)
        elif torch.is_tensor(va):
            assert torch.equal(va, vb), key
        elif isinstance(va, (list, tuple)) and va and isinstance(va[0], dict):
            for x, y in zip(va, vb):
                _state_equal(x, y)
        elif isinstance(va, (list, tuple)) and va and torch.is_tensor(va[0]):
            assert len(va) == len(vb) and all(torch.equal(x, y) for x, y in zip(va, vb)), key
        else:
            assert va == vb or (va != va and vb != vb), key   # NaN: probe not scored yet


def test_worker_gives_the_inline_results_in_submission_order_and_the_same_state():
    steps = _script()
    inline = InlineLearner(_settings())
    worker = WorkerLearner(_settings())
    try:
        got_inline, got_worker = _run(inline, steps), _run(worker, steps)
        _same(got_inline, got_worker)
        first = got_worker[0][1]
        assert isinstance(first, Predicted) and (first.idx == -1).all()   # nothing known yet
        assert worker.info.labels == inline.info.labels
        assert sorted(worker.info.labels) == ["a", "b", "new"]
        assert worker.info.buffer_events == inline.info.buffer_events == 500
        _state_equal(worker.state_dict(), inline.state_dict())
    finally:
        worker.close()


def test_worker_state_restores_into_either_host_and_continues_identically():
    steps = _script(1)
    half = len(steps) // 2
    worker = WorkerLearner(_settings())
    try:
        _run(worker, steps[:half])
        state = worker.state_dict()
        labels_at_half = list(worker.info.labels)
        restored = InlineLearner(_settings())
        restored.load_state_dict(state)
        assert restored.info.labels == worker.info.labels
        _same(_run(worker, steps[half:]), _run(restored, steps[half:]))
        fresh = WorkerLearner(_settings())
        try:
            fresh.load_state_dict(state)
            assert fresh.info.labels == labels_at_half
            _state_equal(fresh.state_dict(), state)
        finally:
            fresh.close()
    finally:
        worker.close()


def test_a_failing_learner_raises_a_clear_error_instead_of_hanging():
    worker = WorkerLearner(_settings())
    try:
        worker.submit_learn(np.zeros((4, 3), np.float32), ["a"] * 4, ctx=0)
        # The model was built for 3 features: 5 cannot be learned.
        worker.submit_learn(np.zeros((4, 5), np.float32), ["a"] * 4, ctx=1)
        with pytest.raises(LearnerError, match="learner failed: RuntimeError"):
            worker.drain()
    finally:
        worker.close()


def test_state_dict_needs_a_drained_worker():
    worker = WorkerLearner(_settings())
    try:
        worker.submit_learn(np.zeros((40, 3), np.float32), ["a"] * 40, ctx=0)
        with pytest.raises(RuntimeError, match="drain"):
            worker.state_dict()
        [(_, result)] = worker.drain()
        assert result.held_out == 8 and result.y.shape == (32,)   # 8 kept as a probe
        assert worker.state_dict()["seen"] == 32
    finally:
        worker.close()


def test_worker_exits_when_the_daemon_is_killed():
    """kill -9 of the daemon closes the pipe; the worker must not stay behind."""
    code = textwrap.dedent("""
        import os, signal
        from stream_learner.config import Settings
        from stream_learner.learner_host import WorkerLearner
        if __name__ == "__main__":
            w = WorkerLearner(Settings(model={"device": "cpu"}))
            print(w.pid, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == -9
    pid = int(proc.stdout.split()[0])
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(pid, 9)
    pytest.fail(f"worker {pid} outlived its daemon")
