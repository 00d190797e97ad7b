"""Smoke test of ``stream-learner bench federation``: a small run end to end, real
broker, real daemon processes.  The figures are the benchmark's business; this checks
that every configuration ran and was accounted for."""

from __future__ import annotations

import json
import math

import pytest

from stream_learner.benchmarks import run_benchmark

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]     # ~5 min here


def test_federation_bench_small_run_writes_complete_json(tmp_path, capsys) -> None:
    out = tmp_path / "f.json"
    code = run_benchmark("federation", out=out, quick=True, peers=3, classes=6,
                         events=1_000, heldout=600, aggregators="fedavg,median",
                         attacks="sign_flip,label_flip", overhead_events=8_000)
    assert code == 0
    res = json.loads(out.read_text())
    runs = res["runs"]
    assert set(runs) == {"isolated", "centralised", "fed-fedavg", "fed-median", "without-site-0",
                         "sign_flip-fedavg", "sign_flip-median", "label_flip-fedavg",
                         "label_flip-median"}
    assert sum(runs["centralised"]["events"]) == sum(runs["isolated"]["events"]) == 3_000
    for name, r in runs.items():
        sites = {"centralised": 1, "without-site-0": 2}.get(name, 3)
        assert len(r["final"]) == sites, name
        assert all(0 <= v <= 1 for v in r["final"] + r["prequential"]), (name, r)
        if name.startswith(("fed-", "sign_flip", "label_flip")):
            assert min(r["rounds"]) >= 2 and r["bytes_sent"] > 0, (name, r)
    # The attacker's key is on the allowlist: nothing it sends is refused before
    # aggregation; the only refusals are the robust aggregators' outlier filter.
    assert set(runs["sign_flip-median"]["rejected"]) <= {"oversize_norm"}
    assert runs["fed-fedavg"]["rejected"] == {} and runs["sign_flip-fedavg"]["rejected"] == {}
    ov = res["overhead"]
    assert ov["events"] == 8_000 and all(math.isfinite(v) and v > 0 for v in (ov["off"], ov["on"]))
    # 8,000 events end before the first round at the default period (50,000 events or
    # 30 s): nothing was measured, so no cost per round and no overhead bar.
    assert ov["rounds"] == [0.0] and ov["seconds_per_round"] is None and not ov["measured"]
    assert {b["bar"].split(":")[0] for b in res["bars"]} == {"sign_flip", "label_flip"}
    assert "bars:" in capsys.readouterr().out
