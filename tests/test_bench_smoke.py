"""Smoke test of ``stream-learner bench throughput``: a tiny run end to end, real broker."""

from __future__ import annotations

import json
import math

from stream_learner.benchmarks import run_benchmark


def _positive(value: object) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_throughput_bench_quick_writes_complete_json(tmp_path, capsys):
    out = tmp_path / "t.json"
    code = run_benchmark("throughput", out=out, quick=True, n=4_000, arf_events=1_000,
                         accuracy_events=1_000, latency_events=3_000, warmup_events=1_000)
    assert code == 0
    res = json.loads(out.read_text())

    for key in ("benchmark", "config", "machine", "produce", "raw_consume", "daemon",
                "learner_core", "river", "accuracy_comparison", "latency", "bars", "cpu"):
        assert key in res, key
    for key in ("cpu_count", "torch", "device", "python", "torch_threads"):
        assert key in res["machine"], key
    assert res["config"]["n"] == 4_000 and res["config"]["quick"] is True

    assert res["produce"]["events"] == 4_000 and _positive(res["produce"]["rate"])
    assert res["raw_consume"]["events"] == 4_000 and _positive(res["raw_consume"]["rate"])

    runs = {(r["strategy"], r["batch_size"]) for r in res["daemon"]}
    assert {("naive", 1024), ("replay", 1024), ("replay", 2048), ("replay-nodrift", 1024),
            ("continual", 1024)} <= runs
    for r in res["daemon"]:
        assert r["events"] == 4_000 and r["learned"] + r["held_out"] == 4_000 and r["rejected"] == 0
        assert _positive(r["rate"]) and _positive(r["ratio_to_raw"])
        assert 0.0 < r["accuracy"] <= 1.0

    assert {r["strategy"] for r in res["learner_core"]} == {"naive", "replay", "replay-nodrift",
                                                           "continual"}
    for r in res["learner_core"]:
        assert r["events"] == 4_000 and _positive(r["rate"]) and 0.0 < r["accuracy"] <= 1.0

    assert {(r["model"].split()[1].split("(")[0], r["stream"]) for r in res["river"]} >= {
        ("ARFClassifier", "sea"), ("ARFClassifier", "hyperplane"), ("ARFClassifier", "agrawal")}
    for r in res["river"]:
        assert _positive(r["rate"]) and 0.0 <= r["accuracy"] <= 1.0
    assert [c["stream"] for c in res["accuracy_comparison"]] == ["sea", "hyperplane", "agrawal"]
    assert res["accuracy_comparison"][0]["events"] == 1_000
    for c in res["accuracy_comparison"]:
        for key in ("replay_accuracy", "arf_accuracy", "logreg_accuracy"):
            assert 0.0 <= c[key] <= 1.0

    lat = res["latency"]
    assert lat["events"] == 3_000 and lat["observed"] == 3_000
    for key in ("achieved_produce_rate", "achieved_consume_rate", "p50_seconds", "p99_seconds",
                "p99_bucket_seconds"):
        assert _positive(lat[key]), key
    assert lat["p50_seconds"] <= lat["p99_seconds"] <= lat["max_seconds"]

    assert len(res["bars"]) == 6 and all(isinstance(b["passed"], bool) for b in res["bars"])
    printed = capsys.readouterr().out
    assert "raw kafka-python consume" in printed and "Bars" in printed
