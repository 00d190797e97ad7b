"""Forgetting probes: bounded hold-out, and a gauge that means what it says."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stream_learner.checkpoint import CheckpointStore
from stream_learner.config import Settings
from stream_learner.forgetting import ForgettingProbes
from stream_learner.learner import Learner

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _learner(strategy: str = "naive", **probes) -> Learner:
    return Learner(Settings(strategy={"name": strategy, "memory": "none", "plugins": (),
                                      "meta": "none"},
                            model={"device": "cpu", "hidden": (16,), "warmup_events": 0},
                            probes={"per_class": 20, "max_probes": 8, "eval_every": 500,
                                    **probes}))


def _concept(rng, n: int, flip: bool):
    x = rng.normal(size=(n, 2)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    return x, (1 - y) if flip else y


def _feed(lrn: Learner, rng, batches: int, flip: bool) -> list[float]:
    trace = []
    for _ in range(batches):
        x, y = _concept(rng, 250, flip)
        lrn.observe(lrn.to_tensor(x), lrn.encode_labels(y.tolist()))
        trace.append(lrn.probes.forgetting)
    return trace


def test_forgetting_rises_when_the_concept_is_overwritten_and_stays_low_when_stationary():
    rng = np.random.default_rng(0)
    stationary = _learner()
    _feed(stationary, rng, 40, flip=False)
    assert stationary.probes.forgetting < 0.1    # measured 0.025

    drifting = _learner()
    _feed(drifting, rng, 20, flip=False)
    before = drifting.probes.forgetting
    _feed(drifting, rng, 40, flip=True)      # the same classes, the opposite rule
    assert before < 0.05
    assert drifting.probes.forgetting > 0.5


def test_probes_are_bounded_and_never_learned():
    p = ForgettingProbes(per_class=5, max_probes=3, eval_every=1)
    y = torch.arange(10) % 5                 # five classes, two events each per batch
    kept = 0
    for _ in range(10):
        kept += int(p.holdout(torch.zeros(10, 2), y).sum())
    assert len(p.probes) == 3                # oldest dropped past max_probes
    assert p.held_out + kept == 100
    assert all(probe.y.shape[0] <= 5 for probe in p.probes)


def test_a_consolidation_opens_a_new_period_and_backward_transfer_reports_it():
    rng = np.random.default_rng(1)
    lrn = _learner("continual", per_class=20)
    # continual (no memory, no plugins) still counts its consolidations
    _feed(lrn, rng, 10, flip=False)
    assert lrn.consolidate("drift")
    _feed(lrn, rng, 1, flip=True)            # the consolidation is noticed on the next batch
    assert lrn.probes.period == 1
    _feed(lrn, rng, 40, flip=True)
    assert lrn.probes.backward_transfer < -0.3   # measured -0.52: period 0 overwritten


def test_probe_state_survives_a_checkpoint(tmp_path):
    rng = np.random.default_rng(2)
    a = _learner()
    _feed(a, rng, 6, flip=False)
    CheckpointStore(tmp_path).save({"learner": a.state_dict()})
    b = _learner()
    b.load_state_dict(CheckpointStore(tmp_path).load_latest()["learner"])
    assert b.probes.state_dict().keys() == a.probes.state_dict().keys()
    assert b.probes.held_out == a.probes.held_out and len(b.probes.probes) == len(a.probes.probes)
    for pa, pb in zip(a.probes.probes, b.probes.probes):
        assert torch.equal(pa.x, pb.x) and torch.equal(pa.y, pb.y) and pa.best == pb.best
