"""Replay memory that lives on the model's device (no host round-trips per step).

>>> buf = ReservoirBuffer(capacity=4, device=torch.device("cpu"))
>>> buf.add(torch.arange(10.).reshape(10, 1), torch.arange(10))
>>> len(buf), buf.seen
(4, 10)
"""

from __future__ import annotations

from typing import Any

import torch


class ReservoirBuffer:
    """Algorithm R over the whole stream, vectorised per batch.

    Every event seen so far is in the buffer with equal probability capacity/seen.
    """

    def __init__(self, capacity: int, device: torch.device, seed: int = 0) -> None:
        self.capacity = capacity
        self.device = device
        self.seen = 0
        self.x: torch.Tensor | None = None
        self.y: torch.Tensor | None = None
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)

    def __len__(self) -> int:
        return min(self.seen, self.capacity)

    def _allocate(self, x: torch.Tensor) -> None:
        self.x = torch.empty((self.capacity, x.shape[1]), dtype=x.dtype, device=self.device)
        self.y = torch.empty(self.capacity, dtype=torch.int64, device=self.device)

    @torch.no_grad()
    def add(self, x: torch.Tensor, y: torch.Tensor) -> None:
        n = x.shape[0]
        if n == 0:
            return
        if self.x is None:
            self._allocate(x)
        assert self.x is not None and self.y is not None
        # Event k of this batch is the (seen+k)-th of the stream: it goes to slot
        # seen+k while the buffer fills, afterwards to a uniform slot in [0, seen+k]
        # and is kept only when that slot is inside the buffer.
        pos = torch.arange(self.seen, self.seen + n, device=self.device)
        rand = torch.rand(n, device=self.device, generator=self.generator)
        slot = torch.where(pos < self.capacity, pos, (rand * (pos + 1)).long())
        keep = slot < self.capacity
        self.x[slot[keep]] = x[keep]
        self.y[slot[keep]] = y[keep]
        self.seen += n

    def clear(self) -> None:
        """Forget every event (a drift made them misleading); storage stays allocated."""
        self.seen = 0

    def sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.x is not None and self.y is not None
        idx = torch.randint(len(self), (min(n, len(self)),), device=self.device,
                            generator=self.generator)
        return self.x[idx], self.y[idx]

    def state_dict(self) -> dict[str, Any]:
        size = len(self)
        return {"capacity": self.capacity, "seen": self.seen,
                "x": None if self.x is None else self.x[:size].cpu(),
                "y": None if self.y is None else self.y[:size].cpu(),
                "rng": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seen = int(state["seen"])
        self.generator.set_state(state["rng"])
        if state["x"] is None:
            self.x = self.y = None
            return
        self._allocate(state["x"])
        assert self.x is not None and self.y is not None
        size = min(state["x"].shape[0], self.capacity)
        self.x[:size].copy_(state["x"][:size])
        self.y[:size].copy_(state["y"][:size])
