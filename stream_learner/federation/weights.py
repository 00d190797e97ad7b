"""How much a peer's update weighs, and how it is mixed in: pure functions on numbers.

Split out of :mod:`stream_learner.federation.aggregate` (which re-exports these names).

"""

from __future__ import annotations

import math

import torch
from torch import Tensor

def sample_weight(samples: object, max_samples: int) -> float:
    """What a peer's claimed ``samples`` may weigh under fedavg: ``min(samples, max_samples)``.

    The count is self-reported, so it is capped: a peer claiming 1e12 samples weighs no
    more than one claiming ``max_samples``.  Zero (nothing learned since its last update)
    weighs 1, like one sample, so that the update still counts.  Anything that is not an
    integer >= 0 (negative, a float, a bool, NaN) weighs 0: it is dropped from the average
    (the codec already rejects such headers as malformed; this is the pure function's own
    guard).

    >>> sample_weight(10**12, 1000), sample_weight(0, 1000), sample_weight(-5, 1000)
    (1000.0, 1.0, 0.0)
    """
    if max_samples < 1:
        raise ValueError(f"max_samples must be >= 1, got {max_samples}")
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 0:
        return 0.0
    return float(min(max(samples, 1), max_samples))


def staleness_weight(age: float, exponent: float = 0.5) -> float:
    """FedAsync's polynomial staleness discount ``(1 + age) ** -exponent``.

    ``age`` is in the caller's unit (versions, rounds, seconds); a negative age (clock
    skew) counts as fresh.

    >>> staleness_weight(0), staleness_weight(3), staleness_weight(-2)
    (1.0, 0.5, 1.0)
    """
    if math.isnan(age):
        raise ValueError("age is NaN")
    if exponent < 0:
        raise ValueError(f"exponent must be >= 0, got {exponent}")
    return (1.0 + max(age, 0.0)) ** -exponent


def mix(local: Tensor, aggregate: Tensor, alpha: float) -> Tensor:
    """``(1 - alpha) * local + alpha * aggregate`` in ``local``'s dtype; alpha in [0, 1].

    ``alpha`` 0 and 1 return ``local`` and ``aggregate`` exactly (``torch.lerp``).

    >>> mix(torch.tensor([0., 10.]), torch.tensor([10., 10.]), 0.25)
    tensor([ 2.5000, 10.0000])
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if local.shape != aggregate.shape:
        raise ValueError(f"shapes differ: {tuple(local.shape)} vs {tuple(aggregate.shape)}")
    return torch.lerp(local, aggregate.to(device=local.device, dtype=local.dtype), alpha)
