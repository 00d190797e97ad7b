"""``stream-learner bench quality --quick`` end to end: its own embedded broker, the real
daemon in every regime, river on the same events.  The figures are the benchmark's
business; this checks what they rest on: every event learned once, none rejected, the
regimes configured as documented, every figure on the page rendered from the JSON."""

from __future__ import annotations

import json

import pytest

from stream_learner.benchmarks import run_benchmark
from stream_learner.benchmarks.quality import PACED, REGIMES, RIVER, TIGHT_SHARE, regime_model
from stream_learner.benchmarks.quality_report import render_markdown
from stream_learner.config import Settings

pytestmark = pytest.mark.timeout(240)


def test_quick_run_learns_every_event_in_every_regime(tmp_path, capsys) -> None:
    out = tmp_path / "quality.json"
    assert run_benchmark("quality", out=out, quick=True) == 0
    res = json.loads(out.read_text())
    cfg, defaults = res["config"], Settings().model
    assert [r["stream"] for r in res["runs"]] == list(cfg["streams"])
    for r in res["runs"]:
        long_enough = r["events"] >= 2 * defaults.warmup_events
        want = [k for k in REGIMES if long_enough or k not in PACED]
        assert [k for k in REGIMES if k in r] == want
        for k in want:
            run = r[k]
            assert run["learned"] == r["events"] and run["rejected"] == 0, (k, run)
            assert 0.0 < run["accuracy"] < 1.0
        assert r["backlog"]["catch_up_seconds"] == defaults.catch_up_seconds
        # Live: offered at the configured rate, not published ahead.
        assert r["live"]["offered_seconds"] >= 0.9 * r["events"] / cfg["live_rate"]
        if long_enough:
            tight = r["backlog_too_large"]
            assert tight["catch_up_seconds"] == pytest.approx(
                TIGHT_SHARE * r["backlog"]["seconds"])
            assert r["full_rate"]["steps"] == [defaults.max_step_size]
        for k in RIVER:
            assert 0.0 < r[k]["accuracy"] < 1.0
    assert {b["kind"] for b in res["bars"]} == {"accuracy", "clear"}
    page = render_markdown(res)
    for e in res["summary"]:
        assert f"| {e['stream']} | {e['events']:,} | {e['live']['accuracy']['mean']:.4f}" in page
    assert "scored bars pass" in capsys.readouterr().out


def test_seed_k_seeds_the_daemons_weights_in_every_regime() -> None:
    """A real dataset keeps its order whatever the seed: without model.seed = k its
    backlog runs were one run three times, with a spread of zero."""
    full = {"step_size": 256, "max_step_size": 256}
    for regime in REGIMES:
        for k in (0, 2):
            model = regime_model(regime, k, backlog_seconds=4.0, full=full)
            assert model["seed"] == k, (regime, model)
    assert regime_model("backlog_too_large", 1, 4.0, full)["catch_up_seconds"] == (
        TIGHT_SHARE * 4.0)
    assert regime_model("full_rate", 1, 4.0, full)["step_size"] == 256
    assert "step_size" not in regime_model("live", 1, 4.0, full)
