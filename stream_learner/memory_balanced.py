"""Class-balanced replay memory on the model's device (Avalanche's ``ClassBalancedBuffer``).

The capacity is split evenly over the classes seen so far; each class keeps its own
reservoir (Algorithm R over that class's events), so a rare class keeps as many slots
as a frequent one and, within a class, every event seen is stored with the same
probability.

>>> import torch
>>> buf = ClassBalancedBuffer(capacity=6, device=torch.device("cpu"), seed=0)
>>> buf.add(torch.arange(20.).reshape(20, 1), torch.zeros(20, dtype=torch.int64))
>>> len(buf), buf.class_counts()
(6, {0: 6})
>>> buf.add(torch.zeros(2, 1), torch.tensor([1, 2]))      # two new classes: re-balanced
>>> len(buf), buf.class_counts()
(4, {0: 2, 1: 1, 2: 1})
>>> buf.add(torch.ones(10, 1), torch.full((10,), 2))
>>> buf.class_counts()
{0: 2, 1: 1, 2: 2}
>>> x, y = buf.sample(3)
>>> x.shape, y.shape
(torch.Size([3, 1]), torch.Size([3]))

Layout: class ``c`` (in order of first appearance) owns the slots
``[offset_c, offset_c + quota_c)`` of one ``[capacity, d]`` tensor; it holds
``min(seen_c, quota_c)`` events from the start of its region.  ``quota_c`` is
``capacity // K`` plus one for the first ``capacity % K`` classes (``K`` classes seen);
a quota never grows (it cannot, in that scheme: a reservoir that dropped events could
not refill uniformly).

When a new class appears every existing class whose quota shrinks keeps a uniformly
random subset of its events (a random subset of a uniform sample is a uniform sample),
and Algorithm R goes on from there: the invariant "each of the ``seen_c`` events of
class ``c`` is stored with probability ``quota_c / seen_c``" holds after every add.

Cost: one host sync per :meth:`add` (``torch.unique`` of the labels, to see new
classes and the per-class counts); the reservoir arithmetic and the writes are
vectorised on the device.  :meth:`sample` draws uniformly over the stored events
(so, once full, about evenly over the classes) without a host sync.
"""

from __future__ import annotations

from typing import Any

import torch


class ClassBalancedBuffer:
    """Per-class reservoirs sharing one capacity, re-balanced when a class appears."""

    def __init__(self, capacity: int, device: torch.device, seed: int = 0) -> None:
        self.capacity = capacity
        self.device = device
        self.seen = 0                      # events added, all classes
        self.classes: list[int] = []       # class ids in order of first appearance
        self.class_seen: list[int] = []    # events seen per class
        self.quotas: list[int] = []        # slots per class
        self.x: torch.Tensor | None = None
        self.y: torch.Tensor | None = None
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)
        self._index: dict[int, int] = {}   # class id -> position in self.classes
        self._lookup = torch.full((0,), -1, dtype=torch.int64, device=device)
        self._refresh()

    # -- bookkeeping ------------------------------------------------------------------
    def __len__(self) -> int:
        return sum(self._stored())

    def _stored(self) -> list[int]:
        return [min(s, q) for s, q in zip(self.class_seen, self.quotas)]

    def _offsets(self) -> list[int]:
        out, total = [], 0
        for q in self.quotas:
            out.append(total)
            total += q
        return out

    def class_counts(self) -> dict[int, int]:
        """Stored events per class id."""
        return dict(zip(self.classes, self._stored()))

    def _refresh(self) -> None:
        """Device copies of the per-class tables (K small ints each)."""
        dev = self.device
        self._index = {c: i for i, c in enumerate(self.classes)}
        size = max(self.classes, default=-1) + 1
        lookup = torch.full((size,), -1, dtype=torch.int64)
        if self.classes:
            lookup[torch.tensor(self.classes)] = torch.arange(len(self.classes))
        self._lookup = lookup.to(dev)
        self._seen_t = torch.tensor(self.class_seen, dtype=torch.int64).to(dev)
        self._quota_t = torch.tensor(self.quotas, dtype=torch.int64).to(dev)
        self._offset_t = torch.tensor(self._offsets(), dtype=torch.int64).to(dev)
        self._derive()

    def _derive(self) -> None:
        """Where each class's stored events start in the uniform index of :meth:`sample`."""
        stored = torch.minimum(self._seen_t, self._quota_t)
        ends = stored.cumsum(0)
        self._start_t = ends - stored
        self._cum_t = ends[:-1]                # class boundaries, for searchsorted

    def _allocate(self, x: torch.Tensor) -> None:
        self.x = torch.empty((self.capacity, x.shape[1]), dtype=x.dtype, device=self.device)
        self.y = torch.empty(self.capacity, dtype=torch.int64, device=self.device)

    @torch.no_grad()
    def _rebalance(self, new_classes: list[int]) -> None:
        """Register ``new_classes``; shrink the old reservoirs to the new even split."""
        assert self.x is not None and self.y is not None
        old_offsets, old_stored = self._offsets(), self._stored()
        k = len(self.classes) + len(new_classes)
        even = [self.capacity // k + (i < self.capacity % k) for i in range(k)]
        quotas = [min(q, old) for q, old in zip(even, self.quotas)] + even[len(self.quotas):]
        keep: list[torch.Tensor] = []
        for i, (off, stored) in enumerate(zip(old_offsets, old_stored)):
            idx = torch.arange(off, off + stored, device=self.device)
            if stored > quotas[i]:
                pick = torch.randperm(stored, generator=self.generator, device=self.device)
                idx = idx[pick[:quotas[i]]]
            keep.append(idx)
        self.classes += new_classes
        self.class_seen += [0] * len(new_classes)
        self.quotas = quotas
        if keep:
            src = torch.cat(keep)
            old_x, old_y = self.x[src], self.y[src]     # gathered copies before writing
            dst = torch.cat([torch.arange(off, off + len(idx), device=self.device)
                             for off, idx in zip(self._offsets(), keep)])
            self.x[dst] = old_x
            self.y[dst] = old_y

    # -- the buffer API ---------------------------------------------------------------
    @torch.no_grad()
    def add(self, x: torch.Tensor, y: torch.Tensor) -> None:
        n = x.shape[0]
        if n == 0:
            return
        if self.x is None:
            self._allocate(x)
        assert self.x is not None and self.y is not None
        y = y.to(self.device, torch.int64)
        ids, counts = torch.unique(y, return_counts=True)
        ids_l, counts_l = ids.tolist(), counts.tolist()          # the one host sync
        new = [c for c in ids_l if c not in self._index]
        if new:
            self._rebalance(new)
            self._refresh()
        cls = self._lookup[y]                                    # class position per event
        # Event k's ordinal among this batch's events of its class.
        onehot = torch.nn.functional.one_hot(cls, len(self.classes))
        before = (onehot.cumsum(0) - onehot).gather(1, cls[:, None]).squeeze(1)
        pos = self._seen_t[cls] + before                         # 0-based index in its class stream
        quota = self._quota_t[cls]
        rand = torch.rand(n, device=self.device, generator=self.generator)
        slot = torch.where(pos < quota, pos, (rand * (pos + 1)).long())
        keep = slot < quota
        phys = torch.where(keep, self._offset_t[cls] + slot, -1)
        # Two events of one batch may draw the same slot: the later one wins, as in the
        # sequential algorithm (made explicit: index_put with duplicates is unordered on GPU).
        order = torch.sort(phys, stable=True).indices
        sorted_phys = phys[order]
        last = torch.ones(n, dtype=torch.bool, device=self.device)
        last[:-1] = sorted_phys[1:] != sorted_phys[:-1]
        win = order[last & (sorted_phys >= 0)]
        self.x[phys[win]] = x[win].to(self.x.dtype)
        self.y[phys[win]] = y[win]
        for c, cnt in zip(ids_l, counts_l):
            self.class_seen[self._index[c]] += cnt
        self.seen += n
        self._seen_t = self._seen_t + onehot.sum(0)
        self._derive()

    def clear(self) -> None:
        """Forget every event and class (a drift made them misleading)."""
        rng = self.generator.get_state()
        self.__init__(self.capacity, self.device)  # type: ignore[misc]
        self.generator.set_state(rng)

    def sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``min(n, len(self))`` events drawn uniformly (with replacement) from the buffer."""
        assert self.x is not None and self.y is not None
        size = len(self)
        if size == 0 or n <= 0:
            return self.x[:0], self.y[:0]
        u = torch.randint(size, (min(n, size),), device=self.device, generator=self.generator)
        cls = torch.searchsorted(self._cum_t, u, right=True)
        idx = self._offset_t[cls] + (u - self._start_t[cls])
        return self.x[idx], self.y[idx]

    # -- state ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Plain data: the stored events (class after class, compacted), tables, RNG."""
        xs: torch.Tensor | None = None
        ys: torch.Tensor | None = None
        if self.x is not None and self.y is not None:
            idx = torch.cat([torch.arange(off, off + s) for off, s in
                             zip(self._offsets(), self._stored())] or
                            [torch.zeros(0, dtype=torch.int64)]).to(self.device)
            xs, ys = self.x[idx].cpu(), self.y[idx].cpu()
        return {"capacity": self.capacity, "seen": self.seen, "classes": list(self.classes),
                "class_seen": list(self.class_seen), "quotas": list(self.quotas),
                "x": xs, "y": ys, "rng": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seen = int(state["seen"])
        self.classes = [int(c) for c in state["classes"]]
        self.class_seen = [int(c) for c in state["class_seen"]]
        self.quotas = [int(q) for q in state["quotas"]]
        self.generator.set_state(state["rng"])
        capacity = self.capacity
        self.capacity = int(state["capacity"])
        if state["x"] is None:
            self.x = self.y = None
        else:
            self._allocate(state["x"])
            assert self.x is not None and self.y is not None
            start = 0
            for off, s in zip(self._offsets(), self._stored()):
                self.x[off:off + s].copy_(state["x"][start:start + s])
                self.y[off:off + s].copy_(state["y"][start:start + s])
                start += s
        if capacity != self.capacity:
            self._resize(capacity)
        self._refresh()

    @torch.no_grad()
    def _resize(self, capacity: int) -> None:
        """The configured capacity changed since the checkpoint: re-split it evenly.

        A class keeps a uniform random subset when its quota shrinks; it may grow only
        while it never dropped an event (``seen_c <= stored``), else it stays as it is.
        """
        old_offsets, stored = self._offsets(), self._stored()
        k = len(self.classes)
        even = [capacity // k + (i < capacity % k) for i in range(k)]
        quotas = [e if seen <= s else min(e, s)
                  for e, s, seen in zip(even, stored, self.class_seen)]
        keep = []
        for off, s, q in zip(old_offsets, stored, quotas):
            idx = torch.arange(off, off + s, device=self.device)
            if s > q:
                idx = idx[torch.randperm(s, generator=self.generator, device=self.device)[:q]]
            keep.append(idx)
        old_x, old_y = self.x, self.y
        self.capacity, self.quotas = capacity, quotas
        if old_x is None or old_y is None:
            return
        self._allocate(old_x)
        assert self.x is not None and self.y is not None
        for off, idx in zip(self._offsets(), keep):
            self.x[off:off + len(idx)] = old_x[idx]
            self.y[off:off + len(idx)] = old_y[idx]
