"""``stream-learner bench delay --quick`` end to end: its own embedded broker, the real
daemon, river on the same events.  The figures are the benchmark's business; this checks
the accounting it rests on, exactly: every produced id predicted once, every label joined
by id, and the served accuracy counted from the prediction records equal to the daemon's
own count, event for event."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stream_learner.benchmarks import run_benchmark
from stream_learner.benchmarks.delay import (FEATURES, INLINE, LABEL, label_delays,
                                             schedule)

pytestmark = pytest.mark.timeout(120)


def test_schedule_is_river_arrival_order() -> None:
    """Label i comes just before features i + d: what river's simulate_qa reveals
    before the question i + d; each event's features and label exactly once."""
    from river.stream import simulate_qa

    delays = label_delays("random", 300, seed=4, random_max=40)
    plan = schedule(delays, np.ones(300, bool))
    draws = iter(delays.tolist())
    qa = [(FEATURES if y is None else LABEL, i) for i, _, y in
          simulate_qa(((({"i": i}), i) for i in range(300)), None,
                      lambda _x, _y: next(draws))]
    assert plan == qa
    half = np.arange(300) % 2 == 1
    mixed = schedule(delays, half)
    assert sorted(i for k, i in mixed if k == INLINE) == list(range(0, 300, 2))
    assert sorted(i for k, i in mixed if k == LABEL) == list(range(1, 300, 2))


def test_quick_run_accounts_for_every_event(tmp_path, capsys) -> None:
    out = tmp_path / "delay.json"
    assert run_benchmark("delay", out=out, quick=True) == 0
    res = json.loads(out.read_text())
    cfg = res["config"]
    n = cfg["n"]
    assert [r["delay"] for r in res["runs"]] == list(cfg["delays"])
    for r in res["runs"]:
        # All label-later: n features events and n label events, nothing else.
        assert r["messages"] == r["consumed"] == 2 * n and r["label_later"] == n
        assert r["learned"] == n and r["predicted"] == n and r["rejected"] == 0
        assert r["joins"] == {"joined": n, "unknown_id": 0, "duplicate_label": 0,
                              "label_expired": 0}
        assert r["evictions"] == {"expired": 0, "capacity": 0, "replaced": 0}
        assert r["pending_at_end"] == 0
        assert r["predicted_ids_match"] and r["joined_ids_match"]
        # Served accuracy from the records is the daemon's, to the event.
        assert r["prediction_records"] == r["daemon_served_n"] == n
        assert round(r["daemon_served_accuracy"] * n) == r["served_correct"]
        assert 0.0 < r["arf"]["accuracy"] < 1.0
        assert 0 < r["served_with_prediction"] <= n and 0 < r["arf"]["scored"] <= n
    for p in res["throughput"]:
        assert p["inline"]["learned"] == p["half_later"]["learned"] == n
        assert p["inline"]["messages"] == n and p["half_later"]["messages"] == n + n // 2
        assert p["half_later"]["joins"]["joined"] == n // 2
        assert p["half_later"]["predicted_ids_match"] and p["half_later"]["joined_ids_match"]
        # The daemon's served count holds the inline half too (scored at delay 0).
        assert p["half_later"]["prediction_records"] == n // 2
        assert p["half_later"]["daemon_served_n"] == n
    assert {b["kind"] for b in res["bars"]} == {"accuracy", "accuracy_all", "throughput"}
    assert "label delay" in capsys.readouterr().out

