"""Torch modules: an MLP with online input standardisation and a growable class head.

>>> net = MLP(n_features=3, hidden=(8,), n_classes=2, head_capacity=2)
>>> net(torch.zeros(4, 3)).shape
torch.Size([4, 2])
>>> net.add_classes(3)       # a third label appeared: the head grows, old rows kept
True
>>> net(torch.zeros(4, 3)).shape
torch.Size([4, 3])
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def select_device(name: str) -> torch.device:
    """``auto`` picks CUDA when a GPU is visible, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("model.device=cuda but no CUDA device is visible")
    return torch.device(name)


ROBUST_START_EVENTS = 256   # rows whose statistics are re-estimated robustly, at once
_TRIM = 2                   # per feature, the 2 most extreme of those rows at each end


class Standardizer(nn.Module):
    """Running mean/variance of the inputs (Chan's parallel update, per batch), robust to
    the outliers that get past validation.

    Streams arrive unscaled (Agrawal salaries are ~1e5): without this an MLP's first
    steps are wasted. The statistics are buffers, so they live in the state_dict.

    Plain running moments never forget: one legal-but-absurd value (3e8 in a feature of
    scale 1) inflates the variance for good, and that feature is a constant to the model
    from then on.  So:

    * after ``ROBUST_START_EVENTS`` events, each update is *winsorised*: a value beyond
      ``clip_sigmas`` standard deviations of the statistics so far counts as that bound.
      A clipped value still widens the variance a little, so a feature whose scale
      really grows is followed, just not by one event;
    * the first ``ROBUST_START_EVENTS`` rows are kept, and when they are complete the
      statistics are recomputed from them with each feature's ``_TRIM`` most extreme
      values at either end clipped to the next one, so an outlier among the very first
      events (when there is no scale yet to judge it by) is undone too.

    ``clip_sigmas=0`` keeps the plain running moments.
    """

    def __init__(self, n_features: int, clip_sigmas: float = 6.0) -> None:
        super().__init__()
        self.clip_sigmas = clip_sigmas
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("mean", torch.zeros(n_features, dtype=torch.float64))
        self.register_buffer("m2", torch.zeros(n_features, dtype=torch.float64))
        # The first rows, until the robust re-estimate (None once done, or not possible:
        # statistics restored without them).  Not a buffer: federation peers exchange
        # the state_dict, and these are raw events; the learner checkpoints them.
        self.start_rows: torch.Tensor | None = (
            torch.empty(0, n_features, dtype=torch.float64) if clip_sigmas > 0 else None)
        # (shift, scale) in the input dtype, derived from the buffers; recomputing them on
        # every forward was ~8 small ops per forward, and MER runs several per chunk.
        self._cache: tuple[torch.Tensor, torch.Tensor] | None = None

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        self._cache = None
        super()._load_from_state_dict(*args, **kwargs)
        # The rows behind loaded statistics are unknown (Learner restores them after).
        self.start_rows = None

    def _apply(self, fn: Any, recurse: bool = True) -> "Standardizer":
        self._cache = None        # .to(device) / .double(): buffers were replaced
        result = super()._apply(fn, recurse)
        if self.start_rows is not None:
            self.start_rows = self.start_rows.to(self.mean.device)
        return result

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        if x.shape[0] == 0:
            return
        xd = x.to(torch.float64)
        rows = self.start_rows
        if rows is not None:
            take = min(xd.shape[0], ROBUST_START_EVENTS - rows.shape[0])
            head, xd = xd[:take], xd[take:]
            self._accumulate(head)
            rows = self.start_rows = torch.cat([rows, head])
            if rows.shape[0] >= ROBUST_START_EVENTS:
                self._robust_restart(rows)
            if xd.shape[0] == 0:
                return
        if self.clip_sigmas > 0 and float(self.count) >= ROBUST_START_EVENTS:
            xd = self._winsorise(xd)
        self._accumulate(xd)

    def _accumulate(self, xd: torch.Tensor) -> None:
        n = xd.shape[0]
        if n == 0:
            return
        batch_mean = xd.mean(0)
        batch_m2 = ((xd - batch_mean) ** 2).sum(0)
        total = self.count + n
        delta = batch_mean - self.mean
        self.mean += delta * (n / total)
        self.m2 += batch_m2 + delta ** 2 * (self.count * n / total)
        self.count.copy_(total)
        self._cache = None

    def _winsorise(self, xd: torch.Tensor) -> torch.Tensor:
        std = (self.m2 / self.count).sqrt()
        # A feature with no spread yet (constant so far) is not clipped: its first
        # different value must be able to give it a scale.
        width = torch.where(std > 0, self.clip_sigmas * std, torch.inf)
        return torch.minimum(torch.maximum(xd, self.mean - width), self.mean + width)

    def _robust_restart(self, rows: torch.Tensor) -> None:
        ordered = rows.sort(dim=0).values
        lo, hi = ordered[_TRIM], ordered[-1 - _TRIM]
        clipped = torch.minimum(torch.maximum(rows, lo), hi)
        self.count.zero_()
        self.mean.zero_()
        self.m2.zero_()
        self._accumulate(clipped)
        self.start_rows = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cache = self._cache
        if cache is None or cache[0].dtype != x.dtype:
            with torch.no_grad():
                var = self.m2 / self.count.clamp(min=1.0)
                std = var.clamp(min=1e-12).sqrt().clamp(min=1e-6)
                cache = self._cache = (self.mean.to(x.dtype), std.to(x.dtype))
        return (x - cache[0]) / cache[1]


class MLP(nn.Module):
    """ReLU MLP; logits cover only the classes seen so far (``n_classes``)."""

    def __init__(self, n_features: int, hidden: tuple[int, ...] = (64, 64),
                 n_classes: int = 0, head_capacity: int = 8, clip_sigmas: float = 6.0) -> None:
        super().__init__()
        self.n_features = n_features
        self.hidden = tuple(hidden)
        self.scaler = Standardizer(n_features, clip_sigmas)
        layers: list[nn.Module] = []
        width = n_features
        for h in self.hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, max(head_capacity, n_classes, 1))
        self.register_buffer("n_classes_t", torch.tensor(n_classes, dtype=torch.int64))
        self._n_classes = n_classes

    @property
    def n_classes(self) -> int:
        return self._n_classes

    @property
    def head_capacity(self) -> int:
        return self.head.out_features

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.scaler(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Rows past n_classes get no gradient (their logits are never used), so a
        # class added later starts from its initialisation, not from noise.
        return self.head(self.features(x))[:, : self._n_classes]

    def add_classes(self, n_classes: int) -> bool:
        """Make room for ``n_classes``; returns True when head parameters were replaced."""
        if n_classes <= self._n_classes:
            return False
        self._n_classes = n_classes
        self.n_classes_t.fill_(n_classes)
        if n_classes <= self.head_capacity:
            return False
        old = self.head
        new = nn.Linear(old.in_features, max(n_classes, 2 * old.out_features),
                        device=old.weight.device, dtype=old.weight.dtype)
        with torch.no_grad():
            new.weight[: old.out_features].copy_(old.weight)
            new.bias[: old.out_features].copy_(old.bias)
        self.head = new
        return True

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):  # type: ignore[override]
        capacity = state_dict["head.weight"].shape[0]
        if capacity != self.head_capacity:
            self.head = nn.Linear(self.head.in_features, capacity,
                                  device=self.head.weight.device, dtype=self.head.weight.dtype)
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        self._n_classes = int(self.n_classes_t)
        return result
