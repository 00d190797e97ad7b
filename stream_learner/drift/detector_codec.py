"""The plain-data codec for river detectors' state: type/range checks, encode, decode.

Split out of :mod:`stream_learner.drift.detectors`, which owns the attribute table
(``_SPEC``) that says which kind each attribute is; this module turns one value of a
kind into checkpoint data and back, refusing (:class:`BadState`) anything a fresh
detector could not hold.  River's Rust helpers are re-encoded from checked numbers, so
river's deserializer only ever sees bytes written here.
"""

from __future__ import annotations

import collections
import math
import random
import struct
from typing import Any

import numpy as np
import torch

MAX_WINDOW = 1_000_000           # a deque longer than this in a checkpoint is corrupt
_MAX_INT = 2**62


class BadState(ValueError):
    """A detector state that :func:`load` refuses (wrong type, range or size)."""


# -- values ---------------------------------------------------------------------------
def check_type(value: Any, types: type | tuple[type, ...], what: str) -> None:
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in
                                        (types if isinstance(types, tuple) else (types,))):
        raise BadState(f"{what}: expected {types}, got {type(value).__name__}")


def _num(value: Any, what: str = "value") -> float | int:
    """An int or float that is not NaN (river's minima start at +inf)."""
    check_type(value, (int, float), what)
    if isinstance(value, float) and math.isnan(value):
        raise BadState(f"{what} is NaN")
    if isinstance(value, int) and abs(value) > _MAX_INT:
        raise BadState(f"{what} {value} is out of range")
    return value


def _finite(value: Any, what: str = "value") -> float:
    v = _num(value, what)
    if not math.isfinite(v):
        raise BadState(f"{what} is not finite")
    return float(v)


def _count(value: Any, what: str = "count") -> int:
    check_type(value, int, what)
    if not 0 <= value <= _MAX_INT:
        raise BadState(f"{what} {value} is out of range")
    return value


def _tensor(value: Any, dtype: torch.dtype, what: str, max_len: int) -> torch.Tensor:
    check_type(value, torch.Tensor, what)
    if value.dtype != dtype or value.dim() != 1 or value.numel() > max_len:
        raise BadState(f"{what}: expected a 1-d {dtype} tensor of at most {max_len}, "
                       f"got {value.dtype} {tuple(value.shape)}")
    return value


def encode(kind: str, value: Any) -> Any:
    if kind == "bool":
        return bool(value)
    if kind in ("num", "count"):
        # KSWIN's p_value is a numpy scalar: stored as the plain Python number.
        return value.item() if isinstance(value, np.generic) else value
    if kind == "mean":
        return {"n": float(value.n), "mean": float(value._mean)}
    if kind == "var":
        return {"ddof": int(value.ddof), "S": float(value._S), "mean": encode("mean", value.mean)}
    if kind == "sample_info":
        return {"ewma": _ewmean_dump(value._ewma), "is_init": bool(value._is_init),
                "ibc": float(value._ibc), "lambd_sq": float(value._lambd_sq),
                "c_lambd_sq": float(value._c_lambd_sq)}
    if kind.startswith("deque:"):
        return torch.tensor([float(v) for v in value], dtype=torch.float64)
    if kind == "random":
        version, internal, gauss = value.getstate()
        return {"version": version, "internal": torch.tensor(internal, dtype=torch.int64),
                "gauss_next": gauss}
    if kind == "adwin":
        return _adwin_dump(value)
    raise AssertionError(kind)


def decode(kind: str, value: Any, detector: Any) -> Any:
    from river import stats

    if kind == "bool":
        check_type(value, bool, "flag")
        return value
    if kind == "num":
        return _num(value)
    if kind == "count":
        return _count(value)
    if kind == "mean":
        _fields(value, {"n", "mean"})
        mean = stats.Mean()
        mean.n, mean._mean = float(_count_f(value["n"])), _finite(value["mean"], "mean")
        return mean
    if kind == "var":
        _fields(value, {"ddof", "S", "mean"})
        var = stats.Var(ddof=_count(value["ddof"], "ddof"))
        var._S = _finite(value["S"], "S")
        var.mean = decode("mean", value["mean"], detector)
        return var
    if kind == "sample_info":
        return _sample_info_load(value, detector)
    if kind.startswith("deque:"):
        maxlen = getattr(detector, kind.split(":", 1)[1])
        if not isinstance(maxlen, int) or not 0 < maxlen <= MAX_WINDOW:
            raise BadState(f"window size {maxlen!r} is out of range")
        t = _tensor(value, torch.float64, "window", maxlen)
        if not bool(torch.isfinite(t).all()):
            raise BadState("window holds non-finite values")
        return collections.deque(t.tolist(), maxlen=maxlen)
    if kind == "random":
        return _random_load(value)
    if kind == "adwin":
        return _adwin_load(value, detector._helper)
    raise AssertionError(kind)


def _fields(value: Any, keys: set[str]) -> None:
    check_type(value, dict, "statistic")
    if set(value) != keys:
        raise BadState(f"expected fields {sorted(keys)}, got {sorted(map(str, value))}")


def _count_f(value: Any) -> float:
    """river's running counts are floats holding whole numbers."""
    v = _finite(value, "n")
    if v < 0 or v != int(v):
        raise BadState(f"count {v} is not a whole non-negative number")
    return v


def _random_load(value: Any) -> random.Random:
    _fields(value, {"version", "internal", "gauss_next"})
    if value["version"] != 3:
        raise BadState(f"random state version {value['version']!r}")
    internal = _tensor(value["internal"], torch.int64, "random state", 625)
    words = internal.tolist()
    if len(words) != 625 or not all(0 <= w < 2**32 for w in words[:624]) \
            or not 0 <= words[624] <= 624:
        raise BadState("random state is not a Mersenne Twister state")
    gauss = value["gauss_next"]
    if gauss is not None:
        gauss = _finite(gauss, "gauss_next")
    rng = random.Random()
    rng.setstate((3, tuple(words), gauss))
    return rng


# -- river's Rust helpers: bincode (fixed-width little-endian) of their Rust structs ----
# AdaptiveWindowing {delta f64, clock i32, max_buckets u64, min_window_length f64,
# grace_period f64, total f64, variance f64, width f64, total_width f64, n_buckets i32,
# max_n_buckets i32, tick i32, n_detections i32, bucket_list Vec<Bucket>} and
# Bucket {max_size u64, current_idx u64, totals Vec<f64>, variances Vec<f64>}
# (river 0.26 rust_src/adwin.rs), then the Python wrapper's own copy of the constructor
# arguments {delta f64, clock i32, max_buckets u64, min_window_length i32, grace_period
# i32}, kept as the fresh helper has it.  A layout that does not parse this way is refused.
_ADWIN_HEAD = struct.Struct("<diQdddddd4iQ")
_ADWIN_TAIL = struct.Struct("<diQii")
_ADWIN_STATS = ("total", "variance", "width", "total_width")
_ADWIN_COUNTS = ("n_buckets", "max_n_buckets", "tick", "n_detections")
_MAX_LEVELS = 63                 # bucket i holds 2**i points: more cannot be a real window
_I32 = 2**31 - 1


_Buckets = list[tuple[int, int, list[float], list[float]]]


def _adwin_parse(data: bytes) -> tuple[tuple[Any, ...], _Buckets, bytes]:
    head = _ADWIN_HEAD.unpack_from(data, 0)
    pos, buckets = _ADWIN_HEAD.size, []
    for _ in range(head[-1]):
        size, idx, n = struct.unpack_from("<QQQ", data, pos)
        pos += 24
        totals = list(struct.unpack_from(f"<{n}d", data, pos))
        pos += 8 * n
        (m,) = struct.unpack_from("<Q", data, pos)
        variances = list(struct.unpack_from(f"<{m}d", data, pos + 8))
        pos += 8 + 8 * m
        buckets.append((size, idx, totals, variances))
    tail = data[pos:]
    if len(tail) != _ADWIN_TAIL.size or _ADWIN_TAIL.unpack(tail) != (
            head[0], head[1], head[2], int(head[3]), int(head[4])):
        raise ValueError("river's AdaptiveWindowing layout changed; update detector_codec.py")
    return head[:-1], buckets, tail


def _adwin_dump(helper: Any) -> dict[str, Any]:
    head, buckets, _ = _adwin_parse(helper.__getstate__())
    return {**dict(zip(_ADWIN_STATS, head[5:9])), **dict(zip(_ADWIN_COUNTS, head[9:13])),
            "counts": torch.tensor([b[1] for b in buckets], dtype=torch.int64),
            "totals": torch.tensor([b[2] for b in buckets], dtype=torch.float64),
            "variances": torch.tensor([b[3] for b in buckets], dtype=torch.float64)}


def _adwin_load(value: Any, fresh: Any) -> Any:
    """``fresh`` (the new detector's helper, built from the config) with ``value``'s window.

    Checked so that river's Rust code cannot panic or misbehave on it: every bucket
    within its capacity, the width the sum of the buckets' points, finite statistics."""
    _fields(value, set(_ADWIN_STATS) | set(_ADWIN_COUNTS) | {"counts", "totals", "variances"})
    head, (bucket0,), tail = _adwin_parse(fresh.__getstate__())
    max_buckets, cap = head[2], bucket0[0] + 1
    stats_ = [_finite(value[k], k) for k in _ADWIN_STATS]
    counts_ = [_count(value[k], k) for k in _ADWIN_COUNTS]
    if any(c > _I32 for c in counts_):
        raise BadState("ADWIN counters out of range")
    counts = _tensor(value["counts"], torch.int64, "bucket counts", _MAX_LEVELS).tolist()
    totals, variances = value["totals"], value["variances"]
    for what, t in (("totals", totals), ("variances", variances)):
        check_type(t, torch.Tensor, what)
        if t.dtype != torch.float64 or tuple(t.shape) != (len(counts), cap):
            raise BadState(f"bucket {what}: expected float64 {(len(counts), cap)}, "
                           f"got {t.dtype} {tuple(t.shape)}")
        if not bool(torch.isfinite(t).all()):
            raise BadState(f"bucket {what} are not finite")
    if not counts or not all(0 <= c <= max_buckets for c in counts):
        raise BadState(f"bucket counts {counts} outside 0..{max_buckets}")
    if stats_[2] != sum(c * 2**i for i, c in enumerate(counts)):
        raise BadState(f"width {stats_[2]} is not the buckets' {counts} points")
    out = bytearray(_ADWIN_HEAD.pack(*head[:5], *stats_, *counts_, len(counts)))
    for c, tot, var in zip(counts, totals.tolist(), variances.tolist()):
        out += struct.pack(f"<QQQ{cap}dQ{cap}d", max_buckets, c, cap, *tot, cap, *var)
    fresh.__setstate__(bytes(out + tail))
    return fresh


# RsEWMean {EWMean {mean f64, alpha f64, one_minus_alpha f64, initialized bool}, alpha f64}
_EWMEAN = struct.Struct("<ddd?d")


def _ewmean_dump(ewmean: Any) -> dict[str, Any]:
    data = ewmean._ewmean.__getstate__()
    if len(data) != _EWMEAN.size:
        raise ValueError("river's EWMean layout changed; update detector_codec.py")
    mean, _, _, initialized, _ = _EWMEAN.unpack(data)
    return {"mean": mean, "initialized": initialized}


def _sample_info_load(value: Any, detector: Any) -> Any:
    from river.drift.binary.hddm_w import SampleInfo

    _fields(value, {"ewma", "is_init", "ibc", "lambd_sq", "c_lambd_sq"})
    info = SampleInfo(detector.lambda_val)
    ew = value["ewma"]
    _fields(ew, {"mean", "initialized"})
    check_type(ew["initialized"], bool, "initialized")
    _, alpha, rest, _, alpha2 = _EWMEAN.unpack(info._ewma._ewmean.__getstate__())
    info._ewma._ewmean.__setstate__(_EWMEAN.pack(_finite(ew["mean"], "ewma mean"), alpha,
                                                 rest, ew["initialized"], alpha2))
    check_type(value["is_init"], bool, "is_init")
    info._is_init = value["is_init"]
    for key in ("ibc", "lambd_sq", "c_lambd_sq"):
        setattr(info, f"_{key}", _finite(value[key], key))
    return info
