"""``stream-learner bench continual``: a tiny end-to-end run, and forgetting vs naive."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from stream_learner.benchmarks import run_benchmark
from stream_learner.benchmarks.continual import (
    AVALANCHE, NATIVE, ContinualConfig, bars, build_stream, config_settings, forgetting,
    reported_seeds, run_config, summarise, tuning_seeds)

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


# ----------------------------------------------------------------------------- seeds

def _seeded_row(config, seed, acc, fg, rate, stream="permuted-digits"):
    return {"config": config, "stream": stream, "seed": seed, "final_accuracy": acc,
            "forgetting": fg, "prequential_accuracy": acc, "rate": rate,
            "boundaries": "task-free", "consolidation": "rule"}


def test_seed_rows_aggregate_to_mean_and_sample_sd():
    rows = [_seeded_row("lwf", s, acc, 0.1, 1000.0 * (s + 1))
            for s, acc in zip((0, 1, 2), (0.6, 0.7, 0.8))]
    results = {"streams": [{"name": "permuted-digits"}], "runs": rows}
    (entry,) = summarise(results)
    assert entry["seeds"] == [0, 1, 2]
    assert entry["final_accuracy"]["mean"] == pytest.approx(0.7)
    assert entry["final_accuracy"]["sd"] == pytest.approx(0.1)       # ddof 1
    assert entry["rate"]["values"] == [1000.0, 2000.0, 3000.0]
    assert entry["forgetting"]["sd"] == pytest.approx(0.0)


def _bar_results(ours_acc, ref_acc, ours_rate=30_000.0, ref_rate=1_000.0, best="lwf"):
    rows = []
    for s in range(3):
        rows.append(_seeded_row("lwf", s, ours_acc[s], 0.05, ours_rate + s))
        rows.append(_seeded_row("avalanche:Replay", s, ref_acc[s], 0.10, ref_rate + s))
        rows.append(_seeded_row("avalanche:Naive", s, 0.1, 0.5, 5 * ref_rate))
    results = {"streams": [{"name": "permuted-digits"}], "runs": rows,
               "tuning": {"best": best}}
    results["summary"] = summarise(results)
    return bars(results)[0]


def test_a_bar_passes_only_when_every_gap_exceeds_the_spread():
    bar = _bar_results((0.80, 0.81, 0.82), (0.70, 0.71, 0.72))
    assert bar["avalanche"] == "avalanche:Replay"       # Avalanche's most accurate
    assert bar["conditions"] == {"accuracy": "pass", "forgetting": "pass", "rate": "pass"}
    assert bar["verdict"] == "pass" and bar["passed"] is True
    # the same means, a spread larger than the gap: not a pass
    bar = _bar_results((0.60, 0.81, 1.02), (0.70, 0.71, 0.72))
    assert bar["conditions"]["accuracy"] == "within spread"
    assert bar["verdict"] == "within spread" and bar["passed"] is False
    # worse beyond the spread: fail, whatever else holds
    bar = _bar_results((0.60, 0.61, 0.62), (0.70, 0.71, 0.72))
    assert bar["verdict"] == "fail"
    # under 3x Avalanche's events/s: fail
    bar = _bar_results((0.80, 0.81, 0.82), (0.70, 0.71, 0.72), ours_rate=2_000.0)
    assert bar["conditions"]["rate"] == "fail" and bar["verdict"] == "fail"


def test_our_best_is_the_tuned_configuration_not_the_reported_winner():
    rows = []
    for s in range(3):
        rows += [_seeded_row("lwf", s, 0.5 + 0.01 * s, 0.1, 9e4),
                 _seeded_row("ewc", s, 0.9 + 0.01 * s, 0.1, 9e4),
                 _seeded_row("avalanche:Replay", s, 0.6 + 0.01 * s, 0.1, 1e3)]
    results = {"streams": [{"name": "permuted-digits"}], "runs": rows,
               "tuning": {"best": "lwf"}}
    (bar,) = bars(results)
    assert bar["ours"] == "lwf" and bar["verdict"] == "fail"
    assert "ewc" in bar["qualifying_native"]


def _transforms(stream):
    return {t.transform for t in stream.tasks}


def test_tuning_streams_are_disjoint_from_reported_ones():
    cfg = ContinualConfig.build(False, seeds=3)
    assert set(reported_seeds(cfg)).isdisjoint(tuning_seeds(cfg))
    for name in ("permuted", "rotated", "split", "sea"):
        reported = set().union(*(_transforms(build_stream(name, cfg, s))
                                 for s in reported_seeds(cfg)))
        for seed in tuning_seeds(cfg):
            tuning = build_stream(name, cfg, seed, tuning=True)
            assert "" not in _transforms(tuning)
            assert _transforms(tuning).isdisjoint(reported), name
            if name == "sea":     # other concepts, not only other generator seeds
                def concepts(ts):
                    return {t.split(",")[0] for t in ts}
                assert concepts(_transforms(tuning)).isdisjoint(concepts(reported))
            # the data too: no tuning task's test images equal a reported task's
            for s in reported_seeds(cfg):
                for a in build_stream(name, cfg, s).tasks:
                    for b in tuning.tasks:
                        assert a.test_x.shape != b.test_x.shape or \
                            not np.array_equal(a.test_x, b.test_x), (name, a.name, b.name)
    with pytest.raises(ValueError, match="tuning seeds"):
        ContinualConfig.build(False, seeds=3, tune_seed=2)


def test_each_seed_changes_the_data_and_the_model():
    cfg = ContinualConfig.build(True, tasks=2, hidden=(16,))
    a, b = build_stream("permuted", cfg, 0), build_stream("permuted", cfg, 1)
    assert _transforms(a) != _transforms(b)
    assert not np.array_equal(a.tasks[0].train_y, b.tasks[0].train_y)    # split and order
    sea = [_transforms(build_stream("sea", cfg, s)) for s in (0, 1)]
    assert sea[0].isdisjoint(sea[1])                                   # its generators
    one = config_settings("replay", a, cfg, seed=1)
    assert one["model"]["seed"] == 1
    r0 = run_config("naive", a, cfg, seed=0)
    r0_again = run_config("naive", a, cfg, seed=0)
    r1 = run_config("naive", a, cfg, seed=1)
    assert r0["accuracy_matrix"] == r0_again["accuracy_matrix"]        # seeded
    assert r0["accuracy_matrix"] != r1["accuracy_matrix"]              # model init


def test_seeds_and_tuning_end_to_end(tmp_path):
    out = tmp_path / "c.json"
    code = run_benchmark("continual", out=out, quick=True, streams=("permuted",),
                         configs=("naive", "lwf"), tasks=2, hidden=(32,), capacity=100,
                         seeds=2, tune=True, tune_periods=(0, 300), tune_streams=("permuted",),
                         tune_seeds=1)
    assert code == 0
    res = json.loads(out.read_text())
    assert res["seeds"] == [0, 1]
    assert sorted((r["config"], r["seed"]) for r in res["runs"]) == [
        ("lwf", 0), ("lwf", 1), ("naive", 0), ("naive", 1)]
    tuning = res["tuning"]
    assert [s["seed"] for s in tuning["streams"]] == [1000] and tuning["streams"][0]["tuning"]
    assert {(r["config"], r["period"]) for r in tuning["runs"]} == {
        ("naive", 0), ("lwf", 0), ("lwf", 300)}
    assert set(tuning["chosen"]) == {"naive", "lwf"} and tuning["chosen"]["naive"] == 0
    assert tuning["best"] in ("naive", "lwf")
    lwf = [r for r in res["runs"] if r["config"] == "lwf"]
    assert all(r["settings"]["strategy"]["consolidate_every_events"] == tuning["chosen"]["lwf"]
               for r in lwf)
    assert [r["settings"]["model"]["seed"] for r in lwf] == [0, 1]
    reported = {t for s in res["streams"] for per_seed in s["transforms"] for t in per_seed}
    assert reported.isdisjoint(t for s in tuning["streams"] for t in s["transforms"])
    (entry,) = [e for e in res["summary"] if e["config"] == "lwf"]
    assert entry["seeds"] == [0, 1] and entry["final_accuracy"]["sd"] is not None


def test_cli_seeds_reach_bench_continual(monkeypatch):
    import stream_learner.benchmarks as benchmarks
    from stream_learner import cli

    got = {}
    monkeypatch.setattr(benchmarks, "run_benchmark",
                        lambda name, out=None, quick=False, **options: got.update(
                            name=name, **options) or 0)
    assert cli.main(["bench", "continual", "--seeds", "5", "--quick"]) == 0
    assert got == {"name": "continual", "seeds": 5}
    with pytest.raises(SystemExit, match="--seeds: only"):
        cli.main(["bench", "throughput", "--seeds", "2"])
    assert ContinualConfig.build(False).seeds == 3 and ContinualConfig.build(True).seeds == 1
