"""``stream-learner bench drift``: the counting rule, the matching, the seed statistics,
and tiny end-to-end runs (references in the same run, aggregation over seeds)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from stream_learner.benchmarks import BENCHMARKS, drift_metrics, run_benchmark
from stream_learner.benchmarks.drift import ALL_CONFIGS, DEFAULT_WARMUP, river_model
from stream_learner.benchmarks.drift_bars import bars
from stream_learner.benchmarks.drift_metrics import (REFERENCE, combine, count_detections,
                                                     match_detections, recovery,
                                                     recurring_returns, stats, verdict)
from stream_learner.benchmarks.drift_streams import ALL_STREAMS, PUBLISHED_ARF, REAL, Drift
from stream_learner.config import DriftSettings

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = dict(events=1200, drift_every=400, gradual_width=100, incremental_width=100,
            recovery_events=200, tolerance=300, real_events=200, micro_batch=128, warmup=300)


def _finite(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def test_count_detections_keeps_only_rises_after_the_warmup():
    # DIRECTION_TAIL 200, RECENT 1000 (the daemon's monitor).
    rise = np.r_[np.zeros(500), np.ones(500)].astype(bool)
    assert count_detections([450, 700], rise, warmup=0) == [700]    # 450: flat, no rise
    assert count_detections([700], rise, warmup=700) == []           # in the warm-up
    assert count_detections([701], rise, warmup=700) == [701]        # 1 event of history
    # 100 events of history since the warm-up: nothing to compare with, it counts
    assert count_detections([700], rise, warmup=600) == [700]
    fall = ~rise
    assert count_detections([800], fall, warmup=0) == []             # an improvement
    # The older window starts at the last counted detection, as the monitor's does:
    # 1000's tail (30% errors) is above 600-800 (0%) but below 0-800 (37.5%).
    e = np.zeros(1000, dtype=bool)
    e[300:600] = True
    e[800:1000] = np.arange(200) % 10 < 3
    assert count_detections([600, 1000], e, warmup=0) == [600, 1000]
    assert count_detections([1000], e, warmup=0) == []
    # raw positions in any order; counted in order
    assert count_detections([1000, 600], e, warmup=0) == [600, 1000]


def test_default_warmup_is_the_daemons():
    assert DEFAULT_WARMUP == DriftSettings().warmup_events


def test_stats_verdict_and_combine():
    s = stats([1.0, 2.0, 3.0])
    assert (s["mean"], s["sd"], s["n"]) == (2.0, 1.0, 3)
    one = stats([0.5])
    assert (one["mean"], one["sd"]) == (0.5, None)
    gaps = stats([None, 100.0, 300.0])                # a seed that missed every drift
    assert (gaps["mean"], gaps["n"], gaps["values"]) == (200.0, 2, [None, 100.0, 300.0])
    assert stats([None])["mean"] is None
    hi, lo = stats([0.90, 0.92, 0.94]), stats([0.80, 0.81, 0.82])   # sd 0.02, 0.01
    assert verdict(hi, lo, True) == "pass" and verdict(lo, hi, True) == "fail"
    assert verdict(lo, hi, False) == "pass"            # lower is better
    wide = stats([0.70, 0.85, 1.00])                   # mean 0.85, sd 0.15 > gap 0.04
    assert verdict(wide, lo, True) == "within spread"
    assert verdict(lo, wide, True) == "within spread"  # worse on the mean, within spread
    assert verdict(one, stats([0.1]), True) == "within spread (one seed: no sd)"
    assert verdict(stats([None]), lo, True) == "no data"
    assert drift_metrics.holds(lo, hi, False) and not drift_metrics.holds(lo, hi, True)
    assert combine([("pass", True), ("within spread", True)]) == "pass"
    assert combine([("pass", True), ("within spread", False)]) == "within spread"
    assert combine([("pass", True), ("fail", False)]) == "fail"
    assert combine([("no data", False)]) == "no data"
    single = "within spread (one seed: no sd)"
    assert combine([(single, True), (single, False)]) == single


def test_match_detections_delay_misses_and_false_alarms():
    drifts = [Drift(1000, 1000, "abrupt"), Drift(2000, 2000, "abrupt"),
              Drift(3000, 3400, "gradual")]
    # 500: before any drift -> false alarm; 1000: at the drift point, saw nothing new ->
    # false alarm; 1300 matches drift 0 (delay 300), 1400 is a second one -> false alarm;
    # nothing in (2000, min(3000, 2000 + 500)] -> drift 1 missed, 2600 a false alarm;
    # gradual: window (3000, 3400 + 500], 3800 matches (delay from the start: 800).
    m = match_detections([1400, 500, 1300, 1000, 2600, 3800, 3950], drifts, 4000, 500)
    assert m["delays"] == [300, None, 800]
    assert m["missed"] == 1 and m["detections"] == 7
    assert m["false_alarms"] == 5                      # 500, 1000, 1400, 2600, 3950
    assert m["mean_delay"] == pytest.approx(550)
    assert m["false_alarms_per_100k"] == pytest.approx(5 * 1e5 / 4000)
    # a detection exactly at the next drift's start belongs to the earlier drift
    m = match_detections([2000], drifts[:2], 4000, 5000)
    assert m["delays"] == [1000, None] and m["false_alarms"] == 0
    # no drifts (a real stream): every detection is a false alarm; none: all missed
    assert match_detections([10, 20], [], 100, 50)["false_alarms"] == 2
    none = match_detections([], drifts, 4000, 500)
    assert none["missed"] == 3 and none["mean_delay"] is None and none["false_alarms"] == 0


def test_recovery_and_recurring_windows():
    import numpy as np

    correct = np.zeros(40, dtype=bool)
    correct[10:15] = True            # after drift at 10: 5 of the next 10
    correct[30:40] = True
    drifts = [Drift(10, 10, "abrupt"), Drift(20, 20, "abrupt"), Drift(30, 30, "abrupt")]
    assert recovery(correct, drifts, 10) == [0.5, 0.0, 1.0]
    assert recovery(correct, drifts, 4) == [1.0, 0.0, 1.0]
    # A 0-10, B 10-20, A 20-30, B 30-40: A before leaving (5-10) vs after return (20-25)
    segs = [(0, "A"), (10, "B"), (20, "A"), (30, "B")]
    correct[5:10] = True
    r = recurring_returns(correct, segs, 40, 5)
    assert [(x["concept"], x["left_at"], x["returns_at"]) for x in r] == \
        [("A", 10, 20), ("B", 20, 30)]
    assert (r[0]["before_leaving"], r[0]["after_return"]) == (1.0, 0.0)
    assert (r[1]["before_leaving"], r[1]["after_return"]) == (0.0, 1.0)
    # The settled half of the window: events 22-25 after A returns, 32-35 after B.
    correct[20:22] = False
    correct[22:25] = True
    r = recurring_returns(correct, segs, 40, 5)
    assert (r[0]["after_return"], r[0]["after_return_settled"]) == (0.6, 1.0)


def test_drift_bench_quick_writes_complete_json(tmp_path):
    """~20 s here, most of it river's ARF; not marked slow."""
    assert "drift" in BENCHMARKS
    out = tmp_path / "d.json"
    assert run_benchmark("drift", out=out, quick=True, **TINY) == 0
    res = json.loads(out.read_text())
    for key in ("benchmark", "config", "machine", "streams", "runs", "reference", "summary",
                "bars", "count_rule", "spread_rule", "wall_seconds"):
        assert key in res, key
    assert res["benchmark"] == "drift" and res["config"]["quick"] is True
    assert res["config"]["seeds"] == 1 and res["config"]["warmup"] == 300
    assert [s["name"] for s in res["streams"]] == list(ALL_STREAMS)
    assert len(res["runs"]) == len(ALL_STREAMS) * len(ALL_CONFIGS)
    for s in res["streams"]:
        name = s["name"]
        rows = {r["config"]: r for r in res["runs"] if r["stream"] == name}
        assert set(rows) == set(ALL_CONFIGS), name
        if name in REAL:
            assert s["events"] == 200 and s["drifts"] == [] and not s["synthetic"]
        else:
            assert s["events"] == 1200 and len(s["drifts"]) == 2 and s["synthetic"]
        scored = [d for d in s["drifts"] if d["start"] >= 300]   # 400 and 800
        for r in rows.values():
            assert r["events"] == s["events"] and r["seed"] == 0
            assert 0.0 <= r["accuracy"] <= 1.0
            assert _finite(r["rate"]) and r["rate"] > 0
            assert len(r["recovery"]) == len(s["drifts"])
        ref = next(r for r in res["reference"] if r["stream"] == name)
        assert ref["config"] == REFERENCE
        for det in (rows["adapt"]["detection"], rows["no-adapt"]["detection"],
                    ref["detection"]):
            counted = det["counted_detections"]
            assert set(counted) <= set(det["raw_detections"])
            assert all(p > 300 for p in counted)
            m = det["detection"]
            assert m["positions"] == counted
            assert m["missed"] + sum(d is not None for d in m["delays"]) == len(scored)
            assert _finite(m["false_alarms_per_100k"])
            assert all(p % 128 == 0 or p == s["events"]
                       for p in det["detection_batch_aligned"]["positions"])
        assert rows["none"]["detection"] is None
        # ours' detectors are not fed before the same warm-up the counting applies
        assert rows["adapt"]["settings"]["drift"] == {"warmup_events": 300}
        assert rows["adapt"]["settings"]["probes"] == {"per_class": 0}
        assert rows["none"]["settings"]["drift"]["detector"] == "none"
    rec = next(r for r in res["runs"] if r["stream"] == "recurring" and r["config"] == "adapt")
    assert [(x["concept"], x["returns_at"]) for x in rec["recurring"]] == [("A", 800)]
    kinds = {b["kind"] for b in res["bars"]}
    assert kinds == {"accuracy", "recovery", "recurring", "detection", "cost"}
    # One seed: no sd, so no stats-based bar can pass.
    assert {b["verdict"] for b in res["bars"] if b["kind"] != "cost"} <= {
        "within spread (one seed: no sd)", "no data"}
    acc = {b["stream"]: b for b in res["bars"] if b["kind"] == "accuracy"}
    assert set(acc) == set(ALL_STREAMS)
    for name, b in acc.items():        # the ARF of this run, real datasets included
        arf = next(r for r in res["runs"] if r["stream"] == name and r["config"] == "arf")
        assert b["reference"]["values"] == [arf["accuracy"]], name


def test_drift_bench_seeds_same_run_references_and_one_counting(tmp_path, monkeypatch):
    """Two seeds on one synthetic and one real stream: rows per seed, mean ± sd over them,
    the counting function applied to ours and to the reference, no published figure in
    any verdict."""
    calls: list[list[int]] = []
    original = drift_metrics.count_detections

    def spy(raw, errors, warmup):
        if len(errors) != 3_000:      # not the untimed torch warm-up pass (3,000 events)
            calls.append(sorted(int(p) for p in raw))
        assert warmup == 300
        return original(raw, errors, warmup)

    monkeypatch.setattr(drift_metrics, "count_detections", spy)
    out = tmp_path / "d.json"
    assert run_benchmark("drift", out=out, quick=True, seeds=2, streams="recurring,phishing",
                         configs="adapt,no-adapt,none,arf,logreg", **TINY) == 0
    res = json.loads(out.read_text())
    assert [s["stream_seeds"] for s in res["streams"]] == [[42, 43], None]
    # 2 streams x 2 seeds x (adapt, no-adapt, reference), each raw stream passed once
    # (the recurring stream has raw detections: the lists are not all empty)
    assert any(r["detection"]["raw_detections"] for r in res["reference"])
    raws = [r["detection"]["raw_detections"] for r in res["runs"] + res["reference"]
            if r.get("detection")]
    assert len(calls) == 12 and sorted(calls) == sorted(raws)
    # Ours' raw stream holds the monitor's improvements too (the counting drops them
    # here, not the monitor): some raw detection of ours is not counted.
    assert any(set(r["detection"]["raw_detections"]) - set(r["detection"]["counted_detections"])
               for r in res["runs"] if r["config"] in ("adapt", "no-adapt"))
    for name in ("recurring", "phishing"):
        for config in ("adapt", "no-adapt", "none", "arf", "logreg"):
            rows = sorted((r for r in res["runs"] if r["stream"] == name
                           and r["config"] == config), key=lambda r: r["seed"])
            assert [r["seed"] for r in rows] == [0, 1], (name, config)
            entry = next(e for e in res["summary"] if e["stream"] == name
                         and e["config"] == config)
            acc = [r["accuracy"] for r in rows]
            assert entry["seeds"] == 2 and entry["accuracy"]["values"] == acc
            assert entry["accuracy"]["mean"] == pytest.approx(np.mean(acc))
            assert entry["accuracy"]["sd"] == pytest.approx(np.std(acc, ddof=1))
        models = {r["config"]: r for r in res["runs"] if r["stream"] == name and r["seed"] == 1}
        assert models["adapt"]["settings"]["model"]["seed"] == 1
        assert models["arf"]["river_seed"] == 43 and models["logreg"]["river_seed"] is None
        bar = next(b for b in res["bars"] if b["kind"] == "accuracy" and b["stream"] == name)
        ours = next(e for e in res["summary"] if e["stream"] == name and e["config"] == "adapt")
        arf = next(e for e in res["summary"] if e["stream"] == name and e["config"] == "arf")
        assert bar["verdict"] == verdict(ours["accuracy"], arf["accuracy"], True)
        assert bar["passed"] == (bar["verdict"] == "pass")
    # The real stream's data is the same for both seeds: the deterministic logistic
    # regression scores the same, so only the models' seeds varied.
    logreg = [r["accuracy"] for r in res["runs"]
              if r["stream"] == "phishing" and r["config"] == "logreg"]
    assert logreg[0] == logreg[1]
    # ... while a synthetic stream's data does vary (the same deterministic model scores
    # differently), and so does ARF's seed (different scores on the same real data).
    logreg = [r["accuracy"] for r in res["runs"]
              if r["stream"] == "recurring" and r["config"] == "logreg"]
    assert logreg[0] != logreg[1]
    arf_real = [r["accuracy"] for r in res["runs"]
                if r["stream"] == "phishing" and r["config"] == "arf"]
    assert arf_real[0] != arf_real[1]
    assert river_model("arf", 43).seed == 43
    # No published figure decides anything: the bars are the same whatever it says.
    before = bars(res)
    for v in (0.0, 1.0):
        monkeypatch.setitem(PUBLISHED_ARF, "phishing", v)
        assert bars(res) == before
