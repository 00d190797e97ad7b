"""``stream-learner bench continual``: a tiny end-to-end run, and forgetting vs naive."""

from __future__ import annotations

import json
import math

import pytest

from stream_learner.benchmarks import run_benchmark
from stream_learner.benchmarks.continual import ContinualConfig, build_stream, forgetting, run_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _finite(v: object) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def test_forgetting_of_an_accuracy_matrix():
    # best of R[0][0], R[1][0] is 0.9 -> 0.9 - 0.5; task 1: 0.8 - 0.6
    m = [[0.9, 0.1, 0.1], [0.7, 0.8, 0.1], [0.5, 0.6, 0.9]]
    assert forgetting(m) == pytest.approx((0.4 + 0.2) / 2)
    assert forgetting([[0.5]]) == 0.0


def test_continual_bench_quick_writes_complete_json(tmp_path):
    """~13 s here, most of it importing Avalanche; not marked slow."""
    out = tmp_path / "c.json"
    code = run_benchmark("continual", out=out, quick=True, streams=("permuted", "split"),
                         configs=("naive", "replay", "avalanche:Naive"), tasks=2,
                         split_tasks=2, hidden=(32,), capacity=100)
    assert code == 0
    res = json.loads(out.read_text())
    for key in ("benchmark", "config", "machine", "streams", "runs", "bars", "wall_seconds"):
        assert key in res, key
    assert res["config"]["quick"] is True
    assert [s["name"] for s in res["streams"]] == ["permuted-digits", "split-digits"]
    assert len(res["runs"]) == 6
    for r in res["runs"]:
        n_tasks = 2
        assert len(r["accuracy_matrix"]) == n_tasks
        assert all(len(row) == n_tasks for row in r["accuracy_matrix"])
        assert all(0.0 <= a <= 1.0 for row in r["accuracy_matrix"] for a in row)
        assert 0.0 <= r["final_accuracy"] <= 1.0 and -1.0 <= r["forgetting"] <= 1.0
        assert _finite(r["rate"]) and r["rate"] > 0 and r["events"] > 0
        assert r["settings"]["replay"]["capacity"] == 100
    # every config learned something on the first (untransformed) task
    assert all(r["accuracy_matrix"][0][0] > 0.3 for r in res["runs"])
    # split: after task 0 only classes 0/1 are known, so task 1 scores 0 then
    for r in res["runs"]:
        if r["stream"] == "split-digits":
            assert r["accuracy_matrix"][0][1] == 0.0
    names = [b["stream"] for b in res["bars"]]
    assert "permuted-digits" in names and "split-digits" in names
    assert all(isinstance(b["passed"], bool) for b in res["bars"])


def test_replay_ewc_agem_forget_less_than_naive_on_permuted_digits():
    """4 tasks, default benchmark sizes.  Measured (seed 0, 1 thread, the daemon's MLP
    (64, 64) and lr 1e-2): naive 0.494, replay 0.043, ewc 0.021, agem 0.072 -- the
    margins keep less than half of the smallest gap."""
    cfg = ContinualConfig.build(False, tasks=4)
    stream = build_stream("permuted", cfg)
    fg = {c: run_config(c, stream, cfg)["forgetting"] for c in ("naive", "replay", "ewc", "agem")}
    print(fg)
    assert fg["naive"] > 0.25, fg          # the stream does make a plain MLP forget
    for c in ("replay", "ewc", "agem"):
        assert fg[c] < fg["naive"] - 0.15, (c, fg)
        assert fg[c] < 0.5 * fg["naive"], (c, fg)
