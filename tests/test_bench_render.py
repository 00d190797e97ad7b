"""docs/benchmarks.md's figures are rendered from the committed JSON, never typed."""

from __future__ import annotations

import copy
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from stream_learner.benchmarks import render
from stream_learner.benchmarks.render import (NO_RUN, RENDERERS, render_continual,
                                              render_drift, render_federation, render_page,
                                              render_throughput)

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "benchmarks.md"

MACHINE = {"cpu_count": 2, "cpu_model": "Test CPU", "platform": "Linux-test",
           "python": "3.11.7", "torch": "2.0", "torch_threads": 1, "device": "cpu",
           "cuda_device": None, "numpy": "2.0", "river": "0.26"}
PROV = {"started_utc": "2026-01-02T03:00:00Z", "written_utc": "2026-01-02T03:04:05Z", "git_commit": "abc123", "git_dirty": False,
        "quick": False, "argv": ["bench", "drift", "--seeds", "3"]}


def _stats(mean: float | None, sd: float | None, n: int = 3) -> dict[str, Any]:
    return {"mean": mean, "sd": sd, "n": n, "values": [mean] * 3}


def _row(text: str, first: str) -> list[str]:
    """The cells of the table row that starts with ``first``."""
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == first:
            return cells
    raise AssertionError(f"no row {first!r} in:\n{text}")


def drift_result() -> dict[str, Any]:
    det = {"detections": _stats(2.0, 0.0), "mean_delay": _stats(300.0, 12.0),
           "missed": _stats(0.0, 0.0), "false_alarms_per_100k": _stats(5.0, 1.0)}
    summary = [{"stream": "sea", "config": "adapt", "seeds": 3,
                "accuracy": _stats(0.8123, 0.0041), "mean_recovery": _stats(0.8, 0.01),
                "rate": _stats(4321.0, 10.0), "detection": det},
               {"stream": "sea", "config": "arf", "seeds": 3,
                "accuracy": _stats(0.79, 0.002), "mean_recovery": _stats(0.7, 0.01),
                "rate": _stats(700.0, 5.0), "detection": None}]
    return {
        "benchmark": "drift", "machine": MACHINE, "provenance": PROV, "wall_seconds": 12.0,
        "config": {"configs": ["adapt", "arf"], "seeds": 3, "seed": 42, "model_seed": 0,
                   "river_seed": 42, "events": 20_000, "drift_every": 5_000,
                   "real_events": 0, "micro_batch": 256, "warmup": 2_000,
                   "recovery_events": 1_000, "tolerance": 2_500, "quick": False},
        "streams": [{"name": "sea", "drifts": [{"start": 5_000, "kind": "abrupt"}]}],
        "summary": summary, "count_rule": "the rule", "spread_rule": "the spread rule",
        "bars": [{"name": "sea: accuracy with adaptation >= river ARF", "kind": "accuracy",
                  "ours": _stats(0.8123, 0.0041), "reference": _stats(0.79, 0.002),
                  "verdict": "pass", "passed": True}]}


def continual_result() -> dict[str, Any]:
    return {
        "benchmark": "continual", "machine": MACHINE, "provenance": {**PROV, "quick": True},
        "config": {"seed": 0, "tasks": 5, "split_tasks": 5, "sea_tasks": 4,
                   "sea_events": 1_000, "micro_batch": 64, "step_size": 32,
                   "hidden": [64, 64], "lr": 0.01, "capacity": 500, "replay_batch": 32},
        "streams": [{"name": "permuted-digits", "description": "perm",
                     "train_events": [100, 200]}],
        "runs": [{"config": "continual", "stream": "permuted-digits",
                  "final_accuracy": 0.8123, "forgetting": -0.0032,
                  "prequential_accuracy": 0.5, "rate": 10_984.4}],
        "bars": [{"name": "our best >= Avalanche's best", "accuracy": [0.8123, 0.7],
                  "forgetting": [0.01, 0.02], "rate_ratio": 2.345, "passed": False}]}


def federation_result() -> dict[str, Any]:
    return {
        "machine": MACHINE, "provenance": PROV,
        "config": {"seed": 0, "peers": 4, "events": 1_500, "rate": 500.0, "classes": 8,
                   "dim": 8, "skew": 0.95, "heldout": 1_000, "every_events": 500,
                   "every_seconds": 1.0, "overhead_events": 20_000, "overhead_repeats": 1},
        "runs": {"fed-fedavg": {"mean_final": 0.8123, "honest_final": 0.8, "final": [0.8, 0.82],
                                "mean_prequential": 0.7, "rejected": {"stale": 2}}},
        "overhead": {"off": 5000.0, "on": 4800.0, "ratio": 0.96, "rounds": [12.0],
                     "seconds_per_round": 0.0012},
        "bars": [{"bar": "federated >= centralised - 1 pt", "value": 0.8123,
                  "reference": 0.81, "pass": True}]}


def throughput_result() -> dict[str, Any]:
    raw = {"events": 1_000, "rate": 10_000.0}
    return {
        "machine": MACHINE, "created": "2025-05-05T00:00:00Z",   # older JSON: no provenance
        "config": {"seed": 7, "n": 1_000, "stream": "sea", "partitions": 2,
                   "batch_sizes": [64], "accuracy_events": 500, "quick": True},
        "produce": {"processes": 2, "events": 1_000, "rate": 20_000.0}, "raw_consume": raw,
        "daemon": [{"strategy": "replay", "batch_size": 64, "events": 1_000, "rate": 5_000.0,
                    "ratio_to_raw": 0.5, "accuracy": 0.8123}],
        "learner_core": [], "river": [],
        "accuracy_comparison": [{"stream": "sea", "events": 500, "replay_accuracy": 0.8123,
                                 "arf_accuracy": 0.8, "logreg_accuracy": 0.7}],
        "latency": {"offered_rate": 1_000.0, "achieved_consume_rate": 999.0, "events": 900,
                    "p50_seconds": 0.01, "p99_seconds": 0.2, "max_seconds": 0.3},
        "bars": [{"name": "end-to-end replay >= 0.5x raw consume", "value": 0.5,
                  "threshold": 0.5, "unit": "x", "passed": True}]}


def test_committed_page_is_rendered_from_committed_json() -> None:
    committed = PAGE.read_text()
    assert committed == render_page(committed), (
        "docs/benchmarks.md is stale: run `python -m stream_learner.benchmarks.render`")


def test_every_benchmark_has_a_region_and_no_typed_figures_outside_them() -> None:
    text = PAGE.read_text()
    for name in RENDERERS:
        assert f"<!-- results:{name} -->" in text and f"<!-- /results:{name} -->" in text
    outside = re.sub(r"<!-- results:(\w+) -->.*?<!-- /results:\1 -->", "", text, flags=re.S)
    # Sizes and design parameters are prose (20,000 events, 95% skew); a measured
    # figure carries three or more decimals or a spread.
    assert not re.findall(r"\d\.\d{3,}|\d ± \d", outside)


def test_drift_cells() -> None:
    out = render_drift(drift_result())
    assert _row(out, "sea")[1:3] == ["0.8123 ± 0.0041", "0.7900 ± 0.0020"]
    assert _row(out, "sea: accuracy with adaptation >= river ARF") == [
        "sea: accuracy with adaptation >= river ARF", "0.8123 ± 0.0041", "0.7900 ± 0.0020",
        "pass"]
    assert _row(out, "seeds")[1].startswith("3 (")
    assert "20,000 events per synthetic stream" in _row(out, "sizes")[1]
    assert "real streams whole" in _row(out, "sizes")[1]
    assert _row(out, "run")[1] == "full"
    assert _row(out, "git commit")[1] == "abc123"
    assert _row(out, "written (UTC)")[1] == "2026-01-02T03:04:05Z"
    assert _row(out, "started (UTC)")[1] == "2026-01-02T03:00:00Z"
    assert _row(out, "command")[1] == "`stream-learner bench drift --seeds 3`"


def test_drift_one_seed_shows_the_mean_alone() -> None:
    result = drift_result()
    result["summary"][0]["accuracy"] = _stats(0.8123, None, n=1) | {"values": [0.8123]}
    assert _row(render_drift(result), "sea")[1] == "0.8123"


def test_continual_cells() -> None:
    out = render_continual(continual_result())
    assert _row(out, "continual") == ["continual", "0.8123", "-0.0032", "0.5000", "10,984"]
    assert _row(out, "our best >= Avalanche's best") == [
        "our best >= Avalanche's best", "0.8123 vs 0.7000", "0.0100 vs 0.0200", "2.3x", "FAIL"]
    assert _row(out, "run")[1] == "quick (`--quick`)"
    assert _row(out, "seeds")[1] == "1 (seed 0)"


def test_federation_cells() -> None:
    out = render_federation(federation_result())
    assert _row(out, "fed-fedavg") == ["fed-fedavg", "81.2%", "80.0%", "70.0%", "80.0% 82.0%",
                                       "2"]
    assert _row(out, "5,000") == ["5,000", "4,800", "0.96", "12", "1.2"]
    assert _row(out, "federated >= centralised - 1 pt")[1:] == ["0.812", "0.810", "PASS"]


def test_federation_overhead_without_a_round_is_not_a_cost() -> None:
    res = federation_result()
    res["overhead"].update(rounds=[0.0], seconds_per_round=None, measured=False)
    out = render_federation(res)
    assert "| 0 | not measured (no round) |" in out
    res["overhead"].update(rounds=[2.0], seconds_per_round=-1.2, measured=True)
    assert "| 2 | none measurable (on as fast) |" in render_federation(res)


def test_throughput_cells_and_older_json_without_provenance() -> None:
    out = render_throughput(throughput_result())
    assert _row(out, "daemon replay (batch 64)") == [
        "daemon replay (batch 64)", "1,000", "5,000", "0.50x", "0.8123"]
    assert _row(out, "sea")[2:] == ["0.8123", "0.8000", "0.7000", "+0.0123"]
    assert _row(out, "end-to-end replay >= 0.5x raw consume")[1:] == ["0.50x", "PASS"]
    assert _row(out, "git commit")[1] == "not recorded"
    assert _row(out, "written (UTC)")[1] == "2025-05-05T00:00:00Z"
    assert _row(out, "run")[1] == "quick (`--quick`)"


def test_dirty_tree_is_said() -> None:
    result = drift_result()
    result["provenance"]["git_dirty"] = True
    assert _row(render_drift(result), "git commit")[1] == "abc123 (with uncommitted changes)"


def test_a_changed_figure_changes_the_page(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    (results / "continual.json").write_text(json.dumps(continual_result()))
    page = PAGE.read_text()
    before = render_page(page, results)
    changed = copy.deepcopy(continual_result())
    changed["runs"][0]["final_accuracy"] = 0.5555
    (results / "continual.json").write_text(json.dumps(changed))
    after = render_page(page, results)
    assert before != after and "0.5555" in after and "0.5555" not in before


def test_missing_json_says_no_committed_run(tmp_path: Path) -> None:
    out = render_page(PAGE.read_text(), tmp_path)
    for name in RENDERERS:
        region = out.split(f"<!-- results:{name} -->\n")[1].split(f"<!-- /results:{name} -->")[0]
        assert region == NO_RUN.format(name=name) + "\n"


def test_rendering_is_idempotent_and_keeps_the_prose(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "docs" / "results", tmp_path / "results", dirs_exist_ok=True)
    page = PAGE.read_text()
    once = render_page(page, tmp_path / "results")
    assert render_page(once, tmp_path / "results") == once
    strip = lambda t: re.sub(r"<!-- results:(\w+) -->.*?<!-- /results:\1 -->", "", t,  # noqa
                             flags=re.S)
    assert strip(once) == strip(page)


def test_another_benchmark_plugs_in_with_one_entry(tmp_path: Path) -> None:
    (tmp_path / "delay.json").write_text(json.dumps({"p99": 0.25}))
    page = "# B\n\n<!-- results:delay -->\nold\n<!-- /results:delay -->\n"
    out = render_page(page, tmp_path, {"delay": lambda r: f"p99 {r['p99']}"})
    assert out == "# B\n\n<!-- results:delay -->\np99 0.25\n<!-- /results:delay -->\n"


def test_a_registered_benchmark_without_markers_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="results:delay"):
        render_page("# no markers\n", tmp_path, {"delay": lambda r: ""})


def test_main_rewrites_the_given_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    page = tmp_path / "benchmarks.md"
    page.write_text(PAGE.read_text())
    monkeypatch.setattr(render, "render_region",
                        lambda name, results_dir=None, renderers=None: f"R {name}")
    assert render.main([str(page)]) == 0
    assert "<!-- results:drift -->\nR drift\n<!-- /results:drift -->" in page.read_text()


def test_a_benchmark_records_its_provenance_when_it_starts() -> None:
    from stream_learner.benchmarks import common

    common.machine_info()
    prov = common.provenance(quick=True)
    assert prov["quick"] is True and prov["started_utc"] <= prov["written_utc"]
    if (ROOT / ".git").exists():     # a checkout names its commit; an install cannot
        assert re.fullmatch(r"[0-9a-f]{40}", prov["git_commit"])
        assert isinstance(prov["git_dirty"], bool)


def test_continual_seeded_cells_tuning_and_verdicts() -> None:
    result = continual_result()
    result["seeds"] = [0, 1, 2]
    result["summary"] = [{"stream": "permuted-digits", "config": "mer", "seeds": [0, 1, 2],
                          "boundaries": "task-free", "consolidation": "rule",
                          "final_accuracy": _stats(0.8149, 0.0102),
                          "forgetting": _stats(0.1246, 0.0087),
                          "prequential_accuracy": _stats(0.5, 0.01),
                          "rate": _stats(4609.0, 1251.0)}]
    result["tuning"] = {
        "criterion": "the criterion", "seeds": [1000], "periods": [0, 400],
        "variants": {"permuted": "other permutations"}, "chosen": {"mer": 0, "ewc": 400},
        "best": "mer", "scores": {"mer": {"final_accuracy": 0.85, "forgetting": 0.12},
                                  "ewc": {"final_accuracy": 0.76, "forgetting": 0.16}},
        "runs": [{"config": "mer", "period": 0, "final_accuracy": 0.85},
                 {"config": "ewc", "period": 0, "final_accuracy": 0.70},
                 {"config": "ewc", "period": 400, "final_accuracy": 0.76}]}
    result["bar_rule"] = "the bar rule"
    result["bars"] = [{"name": "permuted: our best", "accuracy": [0.8149, 0.6957],
                       "forgetting": [0.1246, 0.1010], "rate_ratio": 4.04,
                       "stats": {"final_accuracy": [_stats(0.8149, 0.0102),
                                                    _stats(0.6957, 0.0058)],
                                 "forgetting": [_stats(0.1246, 0.0087), _stats(0.1010, 0.012)]},
                       "conditions": {"accuracy": "pass", "forgetting": "fail",
                                      "rate": "within spread"},
                       "verdict": "fail", "passed": False}]
    out = render_continual(result)
    assert _row(out, "mer") == ["mer", "0.8149 ± 0.0102", "0.1246 ± 0.0087",
                                "0.5000 ± 0.0100", "4,609 ± 1,251"]
    assert _row(out, "mer (our best)")[1:4] == ["off", "0.8500", "0.1200"]
    assert _row(out, "ewc") == ["ewc", "400", "0.7600", "0.1600", "off:0.700 400:0.760"]
    assert _row(out, "permuted: our best") == [
        "permuted: our best", "0.8149 ± 0.0102 vs 0.6957 ± 0.0058",
        "0.1246 ± 0.0087 vs 0.1010 ± 0.0120", "4.0x",
        "accuracy pass, forgetting fail, rate within spread", "fail"]
    assert _row(out, "seeds")[1].startswith("3 (seeds 0, 1, 2")
    assert "seeds 1000; never reported" in out
