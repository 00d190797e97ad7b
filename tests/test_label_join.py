"""The join store alone: outcomes, evictions, and its checkpoint state."""

from __future__ import annotations

import copy
import re

import numpy as np
import pytest
import torch

from stream_learner.label_join import JoinStore


def _x(v: float) -> np.ndarray:
    return np.array([v, -v], np.float32)


def test_outcomes_by_id() -> None:
    s = JoinStore(window_s=10.0, max_pending=100)
    for i in range(3):
        assert s.add(f"f{i}", _x(i), at_ms=1000 * i, seq=i) == []
    outcome, entry = s.take("f1", now_ms=5_000)
    assert outcome == "joined" and entry is not None
    assert entry.x.tolist() == [1.0, -1.0] and (entry.at_ms, entry.seq) == (1000, 1)
    assert s.take("f1", now_ms=5_001) == ("duplicate_label", None)
    assert s.take("nope", now_ms=5_001) == ("unknown_id", None)
    # 10 s window: f0 arrived at 0 ms, so a label at 10_001 ms is one ms late.
    assert s.take("f0", now_ms=10_001) == ("label_expired", None)
    assert s.take("f2", now_ms=12_000)[0] == "joined"     # 10 s exactly: still in time
    assert len(s) == 0


def test_evictions_by_reason() -> None:
    s = JoinStore(window_s=1.0, max_pending=2)
    assert s.add("a", _x(1), 0, 0) == []
    assert s.add("b", _x(2), 10, 1) == []
    assert s.add("c", _x(3), 20, 2) == ["capacity"]          # a, the oldest, goes
    assert s.add("c", _x(4), 30, 3) == ["replaced"]
    assert s.take("a", 40) == ("label_expired", None)          # evicted: late, not unknown
    assert s.add("d", _x(5), 1_015, 4) == ["expired"]          # b waited > 1 s
    assert sorted(s._pending) == ["c", "d"]
    assert s.take("c", 1_020)[1].x.tolist() == [4.0, -4.0]    # the replacement's features
    # Forgotten after two windows: a label then is unknown.
    s.advance(10_000)
    assert s.take("b", 10_000) == ("unknown_id", None)


def test_state_round_trip() -> None:
    s = JoinStore(window_s=5.0, max_pending=10)
    for i in range(4):
        s.add(f"e{i}", _x(i), 100 * i, i)
    s.get("e2").pred = "spam"
    s.take("e0", 500)
    restored = JoinStore(window_s=5.0, max_pending=10)
    restored.load_state_dict(copy.deepcopy(s.state_dict()))
    assert restored.state_dict()["ids"] == ["e1", "e2", "e3"]
    assert restored.get("e2").pred == "spam" and restored.get("e3").x.tolist() == [3.0, -3.0]
    assert restored.take("e0", 600) == ("duplicate_label", None)
    assert restored.take("e3", 600)[0] == "joined"
    empty = JoinStore(1.0, 1)
    empty.load_state_dict(JoinStore(1.0, 1).state_dict())
    assert len(empty) == 0


def _state() -> dict:
    s = JoinStore(window_s=5.0, max_pending=10)
    s.add("a", _x(1), 0, 0)
    s.add("b", _x(2), 1, 1)
    s.take("b", 2)
    return s.state_dict()


@pytest.mark.parametrize("breakage, reason", [
    (lambda st: st.update(version=9), "not a version-1"),
    (lambda st: st.pop("seq"), "missing ['seq']"),
    (lambda st: st.update(ids=["a", "a"]), "differ in length"),
    (lambda st: st.update(x=torch.zeros(1, 2, dtype=torch.float64)), "float32"),
    (lambda st: st.update(x=torch.full((1, 2), float("nan"))), "non-finite"),
    (lambda st: st.update(ids=[7]), "unique strings"),
    (lambda st: st.update(at_ms=[1.5]), "at_ms and seq must be ints"),
    (lambda st: st.update(pred=[[1]]), "pred must be"),
    (lambda st: st.update(done_kind=["maybe"]), "done_kind must be"),
    (lambda st: st.update(done_ms=[]), "one length"),
    (lambda st: st.update(clock_ms="now"), "clock_ms"),
])
def test_malformed_state_refused(breakage, reason: str) -> None:
    state = _state()
    breakage(state)
    store = JoinStore(5.0, 10)
    with pytest.raises(ValueError, match=f"label join store: .*{re.escape(reason)}"):
        store.load_state_dict(state)
    assert len(store) == 0     # nothing half-loaded


def _daemon_state_with_store(width: int) -> dict:
    from checkpoint_states import daemon_state, settings
    from stream_learner.events import Limits
    from stream_learner.label_side import LabelSide
    from stream_learner.metrics import Metrics
    side = LabelSide(settings(), Metrics().labels, Limits())
    side.store.add("a", np.zeros(width, np.float32), 0, 0)
    return {**daemon_state(events=256), "labels": side.state_dict()}


def test_restore_check_refuses_a_malformed_store() -> None:
    from checkpoint_states import settings
    from stream_learner.checkpoint import CorruptCheckpoint
    from stream_learner.restore_check import check_restorable
    good = _daemon_state_with_store(4)          # the state's decoder has 4 features
    check_restorable(settings(), good)
    bad = copy.deepcopy(good)
    bad["labels"]["store"]["x"] = torch.zeros(1, 4, dtype=torch.float64)
    with pytest.raises(CorruptCheckpoint, match="label join store: x is not a float32"):
        check_restorable(settings(), bad)
    with pytest.raises(CorruptCheckpoint, match="holds 3 features per event, the decoder 4"):
        check_restorable(settings(), _daemon_state_with_store(3))
