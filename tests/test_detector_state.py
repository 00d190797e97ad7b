"""Drift detectors checkpoint as plain data (stream_learner.drift.detectors.dump/load).

For every detector: fed a stream, dumped, saved and loaded with ``weights_only=True``,
the copy and the original fed the same continuation detect at the same indices and end
with identical state.  And :func:`load` refuses every state it did not write."""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
import pytest
import torch

from stream_learner.drift import detectors

CASES = [(n, None) for n in detectors.NAMES] + [("fhddm", {"short_window_size": 25}),
                                                 ("adwin", {"clock": 1, "delta": 0.01})]


def _stream(name: str, seed: int = 0) -> list[float]:
    """Three segments, so the continuation (the last two) holds changes to detect."""
    rng = np.random.default_rng(seed)
    rates = np.r_[np.full(1500, 0.1), np.full(1500, 0.5), np.full(1500, 0.15)]
    bits = (rng.random(rates.size) < rates).astype(float)
    if name in detectors.BINARY:
        return bits.tolist()
    return (bits + rng.normal(0, 0.1, rates.size)).tolist()   # real-valued detectors


def _saved(blob: Any) -> Any:
    buf = io.BytesIO()
    torch.save(blob, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def _stats(det: Any) -> str:
    return repr(detectors.dump(det)["state"])


@pytest.mark.parametrize(("name", "params"), CASES)
def test_round_trip_detects_identically(name: str, params: dict | None) -> None:
    values = _stream(name)
    det = detectors.make(name, params, seed=3)
    detectors.feed(det, values[:1200])
    copy = detectors.load(name, params, _saved(detectors.dump(det)), seed=3)
    assert type(copy) is type(det)
    assert _stats(copy) == _stats(det)
    # In chunks, as the monitor feeds them (ADWIN takes its fast path).
    hits_a, hits_b = [], []
    for start in range(1200, len(values), 250):
        chunk = values[start:start + 250]
        hits_a += [(start + d.index, d.kind) for d in detectors.feed(det, chunk)]
        hits_b += [(start + d.index, d.kind) for d in detectors.feed(copy, chunk)]
    assert hits_a == hits_b
    assert any(k == "drift" for _, k in hits_a) or name in ("page_hinkley", "ddm",
                                                            "hddm_a")
    assert _stats(copy) == _stats(det)
    for attr in ("width", "n_detections", "estimation", "variance", "p_value", "n"):
        if hasattr(det, attr):
            assert getattr(copy, attr) == getattr(det, attr), attr


def test_adwin_state_is_bit_exact() -> None:
    det = detectors.make("adwin")
    detectors.feed(det, _stream("adwin")[:2000])
    copy = detectors.load("adwin", None, detectors.dump(det))
    assert copy._helper.__getstate__() == det._helper.__getstate__()


def test_state_is_plain_data() -> None:
    def plain(v: Any) -> bool:
        if isinstance(v, dict):
            return all(isinstance(k, str) and plain(x) for k, x in v.items())
        if isinstance(v, list):
            return all(plain(x) for x in v)
        return v is None or isinstance(v, (bool, int, float, str, torch.Tensor))
    for name, params in CASES:
        det = detectors.make(name, params)
        detectors.feed(det, _stream(name)[:500])
        assert plain(detectors.dump(det)), name


def _fed(name: str) -> dict[str, Any]:
    det = detectors.make(name)
    detectors.feed(det, _stream(name)[:800])
    return detectors.dump(det)


BAD: list[tuple[str, Any]] = [
    ("adwin", lambda b: b["state"]["_helper"].update(width=1e12)),
    ("adwin", lambda b: b["state"]["_helper"].update(width=math.nan)),
    ("adwin", lambda b: b["state"]["_helper"].update(counts=torch.full((64,), 1))),
    ("adwin", lambda b: b["state"]["_helper"].update(counts=torch.tensor([99, 0]))),
    ("adwin", lambda b: b["state"]["_helper"].update(tick="32")),
    ("adwin", lambda b: b["state"]["_helper"].update(n_detections=2**40)),
    ("adwin", lambda b: b["state"]["_helper"].update(
        totals=b["state"]["_helper"]["totals"][:, :2])),
    ("adwin", lambda b: b["state"]["_helper"]["variances"].fill_(math.inf)),
    ("adwin", lambda b: b["state"].update(_drift_detected=1)),
    ("adwin", lambda b: b["params"].update(clock=0)),
    ("kswin", lambda b: b["state"].update(window=torch.zeros(10**6 + 1, dtype=torch.float64))),
    ("kswin", lambda b: b["state"].update(window=torch.zeros(101, dtype=torch.float64))),
    ("kswin", lambda b: b["state"].update(window=[0.0] * 10)),
    ("kswin", lambda b: b["state"]["_rng"].update(internal=torch.full((625,), -1))),
    ("kswin", lambda b: b["state"]["_rng"].update(internal=torch.zeros(10**7, dtype=torch.int64))),
    ("kswin", lambda b: b["state"].update(n=-5)),
    ("page_hinkley", lambda b: b["state"]["_x_mean"].update(mean=math.nan)),
    ("page_hinkley", lambda b: b["state"].update(_test_drift="os.system")),
    ("page_hinkley", lambda b: b["state"].update(_sum_increase=[1.0])),
    ("ddm", lambda b: b["state"]["_p"].update(n=-1.0)),
    ("ddm", lambda b: b["state"].pop("_p_min")),
    ("eddm", lambda b: b["state"]["_error_distances"].update(ddof="1")),
    ("fhddm", lambda b: b["state"].update(_sliding_window=torch.full((5,), math.nan,
                                                                      dtype=torch.float64))),
    ("hddm_w", lambda b: b["state"]["_total"]["ewma"].update(mean=math.inf)),
    ("hddm_w", lambda b: b["state"]["_total"].update(is_init=0)),
    ("hddm_a", lambda b: b.update(detector="adwin")),
    ("hddm_a", lambda b: b.update(version=99)),
    ("hddm_a", lambda b: b.update(extra=1)),
]


@pytest.mark.parametrize(("name", "spoil"), BAD)
def test_load_refuses_what_dump_did_not_write(name: str, spoil: Any) -> None:
    blob = _fed(name)
    spoil(blob)
    with pytest.raises(ValueError):
        detectors.load(name, None, blob)


@pytest.mark.parametrize("blob", [None, 3, "adwin", [1, 2], torch.zeros(4, dtype=torch.uint8)])
def test_load_refuses_non_states(blob: Any) -> None:
    with pytest.raises(ValueError):
        detectors.load("adwin", None, blob)


@pytest.mark.parametrize("name", detectors.NAMES)
def test_flag_table_matches_rivers_classes(name: str) -> None:
    """detectors.FLAGS declares which flags a detector has instead of probing for them:
    it must be exactly what river's real class has (a wrong entry breaks feed's warnings)."""
    det = detectors.make(name)
    have = {flag for flag in ("drift_detected", "warning_detected") if hasattr(det, flag)}
    assert detectors.FLAGS[name] == have
    assert detectors.has_warnings(det) is (name in detectors.BINARY)


def test_fhddm_short_window_attributes_follow_the_config() -> None:
    """FHDDM only has its short-window state when configured with one; both round-trip."""
    for params, n_attrs in (({}, 6), ({"short_window_size": 10}, 9)):
        det = detectors.make("fhddm", params)
        detectors.feed(det, [0.0, 1.0] * 100)
        blob = detectors.dump(det)
        assert len(blob["state"]) == n_attrs
        again = detectors.dump(detectors.load("fhddm", params, blob))["state"]
        assert set(again) == set(blob["state"])
        for attr, value in blob["state"].items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(again[attr], value), attr
            else:
                assert again[attr] == value, attr
