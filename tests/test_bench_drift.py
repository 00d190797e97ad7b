"""``stream-learner bench drift``: a tiny end-to-end run, and the detection matching."""

from __future__ import annotations

import json
import math

import pytest

from stream_learner.benchmarks import BENCHMARKS, run_benchmark
from stream_learner.benchmarks.drift import (ALL_CONFIGS, REFERENCE, match_detections,
                                             recovery, recurring_returns)
from stream_learner.benchmarks.drift_streams import ALL_STREAMS, REAL, Drift

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _finite(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


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
    code = run_benchmark("drift", out=out, quick=True, events=1200, drift_every=400,
                         gradual_width=100, incremental_width=100, recovery_events=200,
                         tolerance=300, real_events=200, micro_batch=128)
    assert code == 0
    res = json.loads(out.read_text())
    for key in ("benchmark", "config", "machine", "streams", "runs", "reference", "bars",
                "wall_seconds"):
        assert key in res, key
    assert res["benchmark"] == "drift" and res["config"]["quick"] is True
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
        for r in rows.values():
            assert r["events"] == s["events"]
            assert 0.0 <= r["accuracy"] <= 1.0
            assert _finite(r["rate"]) and r["rate"] > 0
            assert len(r["recovery"]) == len(s["drifts"])
            assert all(0.0 <= v <= 1.0 for v in r["recovery"])
        for config in ("adapt", "no-adapt"):
            det = rows[config]["detection"]
            assert det["missed"] + sum(d is not None for d in det["delays"]) == len(s["drifts"])
            assert _finite(det["false_alarms_per_100k"]) and det["false_alarms"] >= 0
        assert rows["none"]["detection"] is None
        assert rows["adapt"]["settings"]["probes"] == {"per_class": 0}
        assert rows["none"]["settings"]["drift"]["detector"] == "none"
        ref = next(r for r in res["reference"] if r["stream"] == name)
        assert ref["config"] == REFERENCE
        for key in ("detection", "detection_batch_aligned"):
            assert ref[key]["missed"] <= len(s["drifts"])
            assert all(p % 128 == 0 or p == s["events"]
                       for p in ref["detection_batch_aligned"]["positions"])
    rec = next(r for r in res["runs"] if r["stream"] == "recurring" and r["config"] == "adapt")
    assert [(x["concept"], x["returns_at"]) for x in rec["recurring"]] == [("A", 800)]
    assert all(0.0 <= x[k] <= 1.0 for x in rec["recurring"]
               for k in ("before_leaving", "after_return", "after_return_settled"))
    kinds = {b["kind"] for b in res["bars"]}
    assert kinds == {"accuracy", "recovery", "recurring", "detection", "cost"}
    assert all(isinstance(b["passed"], bool) for b in res["bars"])
    acc = [b for b in res["bars"] if b["kind"] == "accuracy"]
    assert {b["stream"] for b in acc} == set(ALL_STREAMS)
