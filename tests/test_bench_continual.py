"""``stream-learner bench continual``: a tiny end-to-end run, and forgetting vs naive."""

from __future__ import annotations

import json
import math

import pytest

from stream_learner.benchmarks import run_benchmark
from stream_learner.benchmarks.continual import (
    AVALANCHE, NATIVE, ContinualConfig, bars, build_stream, config_settings, forgetting,
    run_config)

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
        assert r["boundaries"] == "task-free" and isinstance(r["consolidation"], str)
        assert isinstance(r["drift_adaptations"], dict)
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


def test_default_native_configs_are_never_told_task_lengths():
    """Task-free by default: no native configuration consolidates every task length (the
    old oracle), on any stream; consolidation comes from new classes and drift."""
    cfg = ContinualConfig.build(True, configs=NATIVE + ("balanced+mer+lwf",))
    told, not_task_free = [], []
    for name in ("permuted", "rotated", "split", "sea"):
        stream = build_stream(name, cfg)
        lengths = {len(t.train_y) for t in stream.tasks}
        for config in cfg.configs:
            strategy = config_settings(config, stream, cfg)["strategy"]
            if strategy.get("consolidate_every_events", 0) in lengths:
                told.append((name, config))
            rule = (strategy.get("consolidate_every_events"),
                    strategy.get("consolidate_on_new_class"),
                    strategy.get("consolidate_on_drift"))
            if rule != (0, True, True):     # the daemon's defaults
                not_task_free.append((name, config, rule))
    assert told == []
    assert not_task_free == []
    # the labelled oracle variant is the one that knows the boundary
    stream = build_stream("permuted", cfg)
    oracle = config_settings("lwf", stream, cfg, oracle=True)["strategy"]
    assert oracle["consolidate_every_events"] == len(stream.tasks[0].train_y)


def test_oracle_rows_are_labelled_and_never_decide_a_bar():
    def row(config, acc, boundaries="task-free"):
        return {"config": config, "stream": "permuted-digits", "final_accuracy": acc,
                "forgetting": 0.1, "rate": 1000.0, "boundaries": boundaries}
    results = {"streams": [{"name": "permuted-digits"}], "runs": [
        row("lwf", 0.5), row("lwf (oracle boundaries)", 0.9, "oracle"),
        row(AVALANCHE[0], 0.6)]}
    (bar,) = bars(results)
    assert bar["ours"] == "lwf" and bar["accuracy"][0] == 0.5
    assert bar["passed"] is False
    assert "lwf (oracle boundaries)" not in bar["qualifying_native"]


def test_oracle_option_adds_labelled_rows(tmp_path):
    out = tmp_path / "c.json"
    code = run_benchmark("continual", out=out, quick=True, streams=("permuted",),
                         configs=("naive", "lwf"), tasks=2, hidden=(32,), capacity=100,
                         oracle=True)
    assert code == 0
    rows = {r["config"]: r for r in json.loads(out.read_text())["runs"]}
    assert set(rows) == {"naive", "lwf", "lwf (oracle boundaries)"}
    assert rows["lwf"]["boundaries"] == "task-free"
    assert rows["lwf"]["consolidation"].startswith("task-free")
    oracle = rows["lwf (oracle boundaries)"]
    assert oracle["boundaries"] == "oracle" and oracle["consolidation"].startswith("oracle")
    assert oracle["consolidations"].get("every_events", 0) >= 1
