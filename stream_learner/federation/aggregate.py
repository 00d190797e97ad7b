"""Robust aggregation of flattened models: pure functions on tensors.

Models come as a 2-D tensor ``X`` of shape ``[n, d]``, one flattened model per row
(:func:`flatten` / :func:`unflatten` do the conversion).  Nothing here does I/O, keeps
state or trusts a peer: which updates failed verification is decided by the caller and
passed in (:func:`aggregate_results`).  Every function works on CPU and CUDA tensors,
returns the input dtype and leaves its inputs untouched.

>>> X = torch.tensor([[1., 1.], [2., 2.], [3., 3.], [100., -100.]])
>>> median(X)
tensor([2.5000, 1.5000])
>>> aggregate("trimmed_mean", X, None, trim=0.25)
tensor([2.5000, 1.5000])
>>> fedavg(X[:3], [1., 1., 2.])
tensor([2.2500, 2.2500])
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

# Re-exported: callers and tests use ``aggregate.flatten`` / ``aggregate.sample_weight``.
from stream_learner.federation.flat import Spec, flatten, unflatten
from stream_learner.federation.weights import mix, sample_weight, staleness_weight

__all__ = ["AGGREGATORS", "Spec", "Weights", "aggregate", "aggregate_results", "centered_clip",
           "clip_norms", "far_outliers", "fedavg", "flatten", "krum", "krum_scores", "median",
           "mix", "multi_krum", "sample_weight", "staleness_weight", "trimmed_mean", "unflatten"]

AGGREGATORS: tuple[str, ...] = ("fedavg", "trimmed_mean", "median", "krum", "multi_krum",
                                "centered_clip")

Weights = Tensor | Sequence[float]




def _check(X: Tensor) -> int:
    if X.dim() != 2 or X.shape[0] == 0:
        raise ValueError(f"expected models as rows of a 2-D [n, d] tensor with n >= 1, "
                         f"got shape {tuple(X.shape)}")
    if not X.is_floating_point():
        raise ValueError(f"expected a floating tensor, got {X.dtype}")
    # A NaN would sort as the largest value and silently survive a trim; the caller
    # must reject such updates (verification), so here it is an error.
    finite = torch.isfinite(X).all(dim=1)
    if not bool(finite.all()):
        bad = (~finite).nonzero().flatten().tolist()
        raise ValueError(f"non-finite values in row(s) {bad}")
    return X.shape[0]


def _wide(X: Tensor) -> Tensor:
    """Accumulate half-precision models in float32 (sums of counts overflow float16)."""
    return X if X.dtype in (torch.float32, torch.float64) else X.float()


def fedavg(X: Tensor, weights: Weights | None = None) -> Tensor:
    """Weighted mean of the rows (weights >= 0, e.g. samples x staleness; None = equal).

    >>> fedavg(torch.tensor([[0., 0.], [4., 8.]]), [3, 1])
    tensor([1., 2.])
    """
    n = _check(X)
    if weights is None:
        w = torch.ones(n, dtype=torch.float64, device=X.device)
    else:
        w = torch.as_tensor(weights, device=X.device).to(torch.float64).reshape(-1)
    if w.shape[0] != n:
        raise ValueError(f"{w.shape[0]} weights for {n} models")
    if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
        raise ValueError("weights must be finite and >= 0")
    total = float(w.sum())
    if total <= 0:
        raise ValueError("all weights are zero: nothing to average")
    Xw = _wide(X)        # raw sample counts overflow float16
    return ((w.to(Xw.dtype) @ Xw) / total).to(X.dtype)


def trimmed_mean(X: Tensor, trim: float, weights: Weights | None = None) -> Tensor:
    """Coordinate-wise mean after dropping the ``int(trim * n)`` lowest and highest values.

    Same cut as ``scipy.stats.trim_mean``.  ``weights`` is accepted so that every
    aggregator takes the same arguments, and ignored: a self-reported sample count would
    let one peer buy back the influence the trim takes away.

    >>> trimmed_mean(torch.tensor([[1.], [2.], [3.], [4.], [-50.]]), 0.2)
    tensor([2.])
    """
    n = _check(X)
    if not 0.0 <= trim < 0.5:
        raise ValueError(f"trim must be in [0, 0.5), got {trim}")
    k = int(trim * n)
    kept = X.sort(dim=0).values[k:n - k]
    return _wide(kept).mean(dim=0).to(X.dtype)


def median(X: Tensor) -> Tensor:
    """Coordinate-wise median; for even n the mean of the two middle values (numpy's).

    ``torch.median`` returns the lower middle value instead, biased toward the low side.

    >>> median(torch.tensor([[1., 5.], [2., 6.], [3., 0.], [9., 7.]]))
    tensor([2.5000, 5.5000])
    """
    n = _check(X)
    s = X.sort(dim=0).values
    if n % 2:
        return s[n // 2].clone()
    return ((_wide(s[n // 2 - 1]) + _wide(s[n // 2])) / 2).to(X.dtype)


def _sq_distances(X: Tensor) -> Tensor:
    Xw = _wide(X)
    # The matmul form (|a|^2 + |b|^2 - 2ab) cancels catastrophically for models that sit
    # close together far from the origin, which is exactly the honest case.
    d = torch.cdist(Xw, Xw, compute_mode="donot_use_mm_for_euclid_dist")
    return d * d


def krum_scores(X: Tensor, f: int) -> Tensor:
    """Krum score of each row: sum of squared distances to its n - f - 2 nearest others.

    >>> krum_scores(torch.tensor([[0.], [1.], [2.], [3.], [10.]]), f=1)
    tensor([  5.,   2.,   2.,   5., 113.])
    """
    n = _check(X)
    if f < 0:
        raise ValueError(f"f must be >= 0, got {f}")
    if n < 2 * f + 3:
        raise ValueError(f"Krum with f={f} Byzantine peers needs n >= 2f + 3 = {2 * f + 3} "
                         f"models, got n={n}")
    d2 = _sq_distances(X)
    d2.fill_diagonal_(math.inf)
    return d2.sort(dim=1).values[:, : n - f - 2].sum(dim=1)


def krum(X: Tensor, f: int) -> int:
    """Index of the Krum choice (Blanchard et al. 2017): the row with the lowest score.

    Needs ``n >= 2f + 3``; ties go to the lowest index.

    >>> krum(torch.tensor([[0.], [1.], [2.], [3.], [10.]]), f=1)
    1
    """
    return int(torch.argmin(krum_scores(X, f)))


def multi_krum(X: Tensor, f: int, m: int | None = None) -> Tensor:
    """Mean of the ``m`` best-scored rows (default ``n - f``); ``m=1`` is Krum's row.

    >>> multi_krum(torch.tensor([[0.], [1.], [2.], [3.], [10.]]), f=1)   # m = 4
    tensor([1.5000])
    """
    scores = krum_scores(X, f)
    n = X.shape[0]
    m = n - f if m is None else m
    if not 1 <= m <= n:
        raise ValueError(f"m must be in [1, n={n}], got {m}")
    best = torch.argsort(scores, stable=True)[:m]
    return _wide(X[best]).mean(dim=0).to(X.dtype)


def clip_norms(X: Tensor, reference: Tensor, max_norm: float) -> Tensor:
    """Scale each row's difference from ``reference`` down to an L2 norm <= ``max_norm``.

    Rows already within the bound come back bit-for-bit unchanged.

    >>> clip_norms(torch.tensor([[3., 4.], [0.1, 0.]]), torch.zeros(2), 1.0)
    tensor([[0.6000, 0.8000],
            [0.1000, 0.0000]])
    """
    _check(X)
    if max_norm < 0:
        raise ValueError(f"max_norm must be >= 0, got {max_norm}")
    if reference.shape != X.shape[1:]:
        raise ValueError(f"reference of shape {tuple(reference.shape)} for models of "
                         f"shape {tuple(X.shape[1:])}")
    ref = _wide(reference.to(X.device))
    diff = _wide(X) - ref
    norms = torch.linalg.vector_norm(diff, dim=1, keepdim=True)
    over = norms > max_norm
    scale = max_norm / torch.where(over, norms, torch.ones_like(norms))
    return torch.where(over, (ref + diff * scale).to(X.dtype), X)


def centered_clip(X: Tensor, center: Tensor, tau: float | None = None) -> Tensor:
    """Centered clipping (Karimireddy, He & Jaggi, ICML 2021), one iteration:
    ``center + mean_i clip(x_i - center, tau)``, with equal weights.

    ``tau`` defaults to the median of the rows' distances from ``center`` that are not
    zero (the caller's own model, passed as a row, sits at distance 0): with a minority
    of attackers it is an honest peer's distance, so an attacker moves the result by at
    most ``tau / n`` however far it sends its model.  Unlike a coordinate-wise trim, it
    keeps what only one honest peer knows (the classes only it sees, under label skew).

    >>> X = torch.tensor([[0., 0.], [1., 0.], [0., 1.], [-100., 0.]])
    >>> centered_clip(X, X[0])          # tau = median(1, 1, 100) = 1
    tensor([0.0000, 0.2500])
    """
    n = _check(X)
    if center.shape != X.shape[1:]:
        raise ValueError(f"center of shape {tuple(center.shape)} for models of "
                         f"shape {tuple(X.shape[1:])}")
    ref = _wide(center.to(X.device))
    diff = _wide(X) - ref
    norms = torch.linalg.vector_norm(diff, dim=1)
    if tau is None:
        moved = norms[norms > 0]
        if moved.numel() == 0:
            return center.to(device=X.device, dtype=X.dtype).clone()
        tau = float(torch.quantile(moved, 0.5))
    if tau < 0:
        raise ValueError(f"tau must be >= 0, got {tau}")
    scale = torch.clamp(tau / torch.clamp(norms, min=torch.finfo(norms.dtype).tiny), max=1.0)
    return (ref + (diff * scale[:, None]).sum(0) / n).to(X.dtype)


def far_outliers(X: Tensor, center: Tensor, factor: float, scale: float | None = None
                 ) -> Tensor:
    """Mask of the rows farther from ``center`` than ``factor`` x ``scale``, by default
    the median distance of the rows that moved (distance > 0).

    The caller's own model is the trusted ``center``: a peer that sends its model ten
    times farther than the typical peer (a sign flip, noise) is dropped before a robust
    aggregator sees it, where a coordinate-wise trim would still lean toward it.  With a
    minority of attackers the median is an honest distance.  ``factor`` 0 drops nothing.

    >>> X = torch.tensor([[0., 0.], [1., 0.], [0., 2.], [-30., 0.]])
    >>> far_outliers(X, X[0], 3.0)      # median distance 2: 30 > 6
    tensor([False, False, False,  True])
    """
    _check(X)
    if factor < 0:
        raise ValueError(f"factor must be >= 0, got {factor}")
    dist = torch.linalg.vector_norm(_wide(X) - _wide(center.to(X.device)), dim=1)
    moved = dist[dist > 0]
    if factor == 0 or (scale is None and moved.numel() == 0):
        return torch.zeros(X.shape[0], dtype=torch.bool, device=X.device)
    if scale is None:
        scale = float(torch.quantile(moved, 0.5))
    return dist > factor * scale




def aggregate(name: str, X: Tensor, weights: Weights | None = None, *, trim: float = 0.2,
              f: int = 1, m: int | None = None) -> Tensor:
    """Dispatch to the aggregator ``name`` (one of :data:`AGGREGATORS`).

    ``weights`` only matter to ``fedavg``: the robust aggregators ignore self-reported
    counts.  ``trim`` is for ``trimmed_mean``; ``f`` and ``m`` for the Krums;
    ``centered_clip`` clips around the first row (the caller's own model).

    >>> aggregate("krum", torch.tensor([[0.], [1.], [2.], [3.], [10.]]), f=1)
    tensor([1.])
    >>> aggregate("mean", torch.zeros(1, 1))
    Traceback (most recent call last):
    ...
    ValueError: unknown aggregator 'mean'; choose one of fedavg, trimmed_mean, median, ...
    """
    if name == "fedavg":
        return fedavg(X, weights)
    if name == "trimmed_mean":
        return trimmed_mean(X, trim)
    if name == "median":
        return median(X)
    if name == "krum":
        return X[krum(X, f)].clone()
    if name == "multi_krum":
        return multi_krum(X, f, m)
    if name == "centered_clip":
        return centered_clip(X, X[0])
    raise ValueError(f"unknown aggregator {name!r}; choose one of {', '.join(AGGREGATORS)}")


def aggregate_results(name: str, results: Sequence[tuple[Tensor, float]],
                      failures: Sequence[BaseException | str] = (), *,
                      max_samples: int | None = None, **kw: float | int | None) -> Tensor:
    """Aggregate the verified ``(flat model, weight)`` pairs; ``failures`` are never used.

    Failures are an argument so that the caller decides, visibly, what was dropped.  With
    ``max_samples`` the weights are claimed sample counts, capped by :func:`sample_weight`
    (like Flower's ``(parameters, num_examples)`` results, minus the trust).

    >>> aggregate_results("fedavg", [(torch.ones(2), 1.0)], ["bad signature"])
    tensor([1., 1.])
    >>> aggregate_results("fedavg", [(torch.zeros(1), 10), (torch.ones(1), 10**12)], max_samples=10)
    tensor([0.5000])
    """
    if not results:
        raise ValueError(f"no results to aggregate ({len(failures)} failure(s))")
    X = torch.stack([r for r, _ in results])
    if max_samples is None:
        weights = [float(w) for _, w in results]
    else:
        weights = [sample_weight(w, max_samples) for _, w in results]
    return aggregate(name, X, weights, **kw)  # type: ignore[arg-type]
