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


class Standardizer(nn.Module):
    """Running mean/variance of the inputs (Chan's parallel update, per batch).

    Streams arrive unscaled (Agrawal salaries are ~1e5): without this an MLP's first
    steps are wasted. The statistics are buffers, so they live in the state_dict.
    """

    def __init__(self, n_features: int) -> None:
        super().__init__()
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("mean", torch.zeros(n_features, dtype=torch.float64))
        self.register_buffer("m2", torch.zeros(n_features, dtype=torch.float64))
        # (shift, scale) in the input dtype, derived from the buffers; recomputing them on
        # every forward was ~8 small ops per forward, and MER runs several per chunk.
        self._cache: tuple[torch.Tensor, torch.Tensor] | None = None

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        self._cache = None
        super()._load_from_state_dict(*args, **kwargs)

    def _apply(self, fn: Any, recurse: bool = True) -> "Standardizer":
        self._cache = None        # .to(device) / .double(): buffers were replaced
        return super()._apply(fn, recurse)

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        n = x.shape[0]
        if n == 0:
            return
        xd = x.to(torch.float64)
        batch_mean = xd.mean(0)
        batch_m2 = ((xd - batch_mean) ** 2).sum(0)
        total = self.count + n
        delta = batch_mean - self.mean
        self.mean += delta * (n / total)
        self.m2 += batch_m2 + delta ** 2 * (self.count * n / total)
        self.count.copy_(total)
        self._cache = None

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
                 n_classes: int = 0, head_capacity: int = 8) -> None:
        super().__init__()
        self.n_features = n_features
        self.hidden = tuple(hidden)
        self.scaler = Standardizer(n_features)
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
