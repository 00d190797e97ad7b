"""Pure measures of ``stream-learner bench drift``: detection counting and matching,
recovery, recurring concepts, and the seed statistics its verdicts are taken on.

Nothing here runs a model; every function takes explicit inputs (tests call them alone).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from ..drift.monitor import DIRECTION_TAIL, RECENT
from .drift_streams import Drift

REFERENCE = "adwin-ref"   # river ADWIN defaults on no-adapt's raw error stream

COUNT_RULE = (f"a detection counts only after the warm-up and only when the error rose: the "
              f"newest {DIRECTION_TAIL} errors up to it against the older ones (at most "
              f"{RECENT}, since the warm-up or the last counted detection); drifts that "
              "began in the warm-up are not scored")
"""The one rule both detectors' raw detections are counted by (printed, in the JSON)."""

SPREAD_RULE = ("pass: holds for the mean over seeds and the gap exceeds the larger sd; "
               "fail: the opposite holds beyond it; otherwise within spread")


# ----------------------------------------------------------------------------- detection

def count_detections(raw: Sequence[int], errors: np.ndarray, warmup: int) -> list[int]:
    """The detections of ``raw`` that count, by :data:`COUNT_RULE`.

    ``raw``: positions (events seen when the detector fired), every detection of any
    direction; ``errors``: the 0/1 error stream the detector read, from event 0.  The
    direction test is the tail comparison the daemon falls back on for detectors that
    do not say which way they cut (:mod:`stream_learner.drift.monitor`; for ADWIN the
    daemon reads the cut itself): here it is the one rule for ours and the reference
    alike, from raw positions.  A detection with fewer than ``DIRECTION_TAIL`` errors of
    history behind it has nothing to compare with and counts.

    >>> errs = np.r_[np.ones(300), np.zeros(300), np.ones(300)].astype(bool)
    >>> count_detections([100, 550, 800], errs, warmup=200)
    [800]
    """
    counted: list[int] = []
    for p in sorted(int(v) for v in raw):
        if p <= warmup:
            continue
        start = max(warmup, counted[-1] if counted else 0, p - RECENT)
        window = errors[start:p].astype(np.float64)
        if window.size > DIRECTION_TAIL and \
                window[-DIRECTION_TAIL:].mean() <= window[:-DIRECTION_TAIL].mean():
            continue
        counted.append(p)
    return counted


def scored_drifts(drifts: Sequence[Drift], warmup: int) -> list[Drift]:
    """The true drifts detection is scored on: those that begin after the warm-up."""
    return [d for d in drifts if d.start >= warmup]


def batch_align(positions: Sequence[int], micro_batch: int, n: int) -> list[int]:
    """Positions rounded up to the end of their micro-batch (the daemon's granularity)."""
    return [min(n, -(-int(p) // micro_batch) * micro_batch) for p in positions]


def adwin_raw(errors: np.ndarray) -> list[int]:
    """river ``drift.ADWIN()`` (defaults) per event on 0/1 errors from event 0: every
    detection, rises and falls alike; positions (events seen)."""
    from river import drift

    det = drift.ADWIN()
    out = []
    for i, e in enumerate(errors.tolist()):
        det.update(float(e))
        if det.drift_detected:
            out.append(i + 1)
    return out


def match_detections(detections: Sequence[int], drifts: Sequence[Drift], n: int,
                     tolerance: int) -> dict[str, Any]:
    """Match detection positions (events seen when it fired) to the true drifts.

    Drift k is detected by the first detection in ``(start_k, min(start_{k+1},
    end_k + tolerance)]``; its delay is that position minus ``start_k``.  Every other
    detection is a false alarm; ``n`` is the events they are rated per 100k of.

    >>> m = match_detections([100, 5300, 5400, 13000], [Drift(5000, 5000, "abrupt"),
    ...                      Drift(10000, 10000, "abrupt")], 20000, 2500)
    >>> m["delays"], m["missed"], m["false_alarms"]
    ([300, None], 1, 3)
    """
    dets = sorted(int(d) for d in detections)
    delays: list[int | None] = []
    used: set[int] = set()
    for k, d in enumerate(drifts):
        limit = d.end + tolerance
        if k + 1 < len(drifts):
            limit = min(limit, drifts[k + 1].start)
        hit = next((i for i, p in enumerate(dets) if d.start < p <= limit and i not in used),
                   None)
        if hit is None:
            delays.append(None)
        else:
            used.add(hit)
            delays.append(dets[hit] - d.start)
    found = [v for v in delays if v is not None]
    false_alarms = len(dets) - len(used)
    return {"detections": len(dets), "positions": dets, "delays": delays,
            "mean_delay": float(np.mean(found)) if found else None,
            "missed": sum(v is None for v in delays), "false_alarms": false_alarms,
            "false_alarms_per_100k": false_alarms * 1e5 / max(n, 1)}


def detection(raw: Sequence[int], errors: np.ndarray, drifts: Sequence[Drift], n: int,
              warmup: int, tolerance: int, micro_batch: int) -> dict[str, Any]:
    """One detector's raw detections counted by :func:`count_detections` and matched,
    per event and batch-aligned; the same for ours and for the reference."""
    counted = count_detections(raw, errors, warmup)
    scored = scored_drifts(drifts, warmup)
    span = max(n - warmup, 1)
    return {"raw_detections": sorted(int(p) for p in raw), "counted_detections": counted,
            "detection": match_detections(counted, scored, span, tolerance),
            "detection_batch_aligned": match_detections(
                batch_align(counted, micro_batch, n), scored, span, tolerance)}


# ----------------------------------------------------------------------------- accuracy

def recovery(correct: np.ndarray, drifts: Sequence[Drift], window: int) -> list[float]:
    """Mean accuracy over ``window`` events from each drift's end, cut at the next drift."""
    out = []
    n = len(correct)
    for k, d in enumerate(drifts):
        stop = min(d.end + window, n, drifts[k + 1].start if k + 1 < len(drifts) else n)
        if stop > d.end:
            out.append(float(correct[d.end:stop].mean()))
    return out


def recurring_returns(correct: np.ndarray, segments: Sequence[tuple[int, str]], n: int,
                      window: int) -> list[dict[str, Any]]:
    """For each return of a concept: accuracy over ``window`` events after it returns vs
    over ``window`` events just before it last left.  ``after_return_settled`` is the
    second half of those ``window`` events: whether accuracy is *back* within them, once
    the detection and the recall (batch-aligned, so at least the rest of the revealing
    micro-batch) are behind."""
    out = []
    bounds = [s for s, _ in segments] + [n]
    for k, (start, concept) in enumerate(segments):
        prev = max((j for j in range(k) if segments[j][1] == concept), default=None)
        if prev is None:
            continue
        left = bounds[prev + 1]
        before = correct[max(bounds[prev], left - window):left]
        after = correct[start:min(start + window, bounds[k + 1])]
        settled = after[window // 2:] if after.size > window // 2 else after
        out.append({"concept": concept, "returns_at": start, "left_at": left,
                    "before_leaving": float(before.mean()), "after_return": float(after.mean()),
                    "after_return_settled": float(settled.mean())})
    return out


# ----------------------------------------------------------------------------- seeds

def stats(values: Sequence[float | None]) -> dict[str, Any]:
    """Mean and sample sd (ddof 1; None with one value) over seeds; None values (a mean
    delay where every drift was missed) are left out and counted in ``n`` only."""
    got = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return {"mean": float(np.mean(got)) if got else None,
            "sd": float(np.std(got, ddof=1)) if len(got) > 1 else None,
            "n": len(got), "values": [None if v is None else float(v) for v in values]}


def verdict(ours: dict[str, Any], ref: dict[str, Any], higher_is_better: bool) -> str:
    """``pass`` / ``fail`` / ``within spread`` of ``ours`` vs ``ref`` (:func:`stats`) by
    :data:`SPREAD_RULE`.

    >>> verdict(stats([0.9, 0.92, 0.94]), stats([0.8, 0.81, 0.82]), True)
    'pass'
    >>> verdict(stats([0.9, 0.8, 0.7]), stats([0.78, 0.79, 0.8]), True)
    'within spread'
    """
    if ours["mean"] is None or ref["mean"] is None:
        return "no data"
    gap = (ours["mean"] - ref["mean"]) * (1.0 if higher_is_better else -1.0)
    if ours["sd"] is None or ref["sd"] is None:
        return "within spread (one seed: no sd)"
    spread = max(ours["sd"], ref["sd"])
    if abs(gap) <= spread:
        return "within spread"
    return "pass" if gap > 0 else "fail"


def holds(ours: dict[str, Any], ref: dict[str, Any], higher_is_better: bool) -> bool:
    """Whether ``ours`` is at least as good as ``ref`` on the mean (False without data)."""
    if ours["mean"] is None or ref["mean"] is None:
        return False
    return ours["mean"] >= ref["mean"] if higher_is_better else ours["mean"] <= ref["mean"]


def combine(components: Sequence[tuple[str, bool]]) -> str:
    """Several components' ``(verdict, holds)`` as one verdict: fail if any fails; pass
    if one passes and every other holds on the mean; otherwise within spread (``no
    data`` components are left out).

    >>> combine([("pass", True), ("within spread", True), ("no data", False)])
    'pass'
    >>> combine([("pass", True), ("within spread", False)])
    'within spread'
    """
    got = [(v, h) for v, h in components if v != "no data"]
    if not got:
        return "no data"
    if any(v == "fail" for v, _ in got):
        return "fail"
    qualified = [v for v, _ in got if v.startswith("within spread (")]
    if qualified:            # one seed: no component has an sd to pass on
        return qualified[0]
    if any(v == "pass" for v, _ in got) and all(h for _, h in got):
        return "pass"
    return "within spread"
