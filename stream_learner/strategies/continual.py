"""``continual``: a replay memory + any number of plugins + an optional meta-update.

Composition, not inheritance: each piece is one module with a ``build(settings,
learner)`` function, looked up by the name given in config::

    strategy:
      name: continual
      memory: reservoir            # none | reservoir | class_balanced
      plugins: [ewc, agem]         # ewc | si | mas | lwf | agem, hooks run in this order
      meta: none                   # none | mer | lamaml

Consolidation (the "task boundary" that EWC, SI, MAS and LwF need) in a task-free
stream happens, when enabled in ``strategy``:

* before learning a micro-batch that brought a new label (the classes known so far
  form the finished task);
* every ``consolidate_every_events`` learned events;
* on a drift signal: :meth:`Continual.consolidate` is the hook the drift detector
  calls (through ``Learner.consolidate``).
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol

import torch

from ..config import Settings
from ..memory import ReservoirBuffer
from .base import Batch, Plugin, StrategyBase, Trainable, UpdateStats

PLUGIN_NAMES = ("ewc", "si", "mas", "lwf", "agem")
META_NAMES = ("mer", "lamaml")


class Memory(Protocol):
    """A replay buffer on the device."""

    def __len__(self) -> int: ...

    def add(self, x: torch.Tensor, y: torch.Tensor) -> None: ...

    def sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def clear(self) -> None: ...


class MetaUpdate(Protocol):
    """Replaces the plain gradient step for one chunk of new events (MER, La-MAML)."""

    name: str

    def update(self, learner: Trainable, chunk: Batch, memory: Memory | None,
               plugins: list[Plugin]) -> tuple[torch.Tensor, int]:
        """Learn ``chunk``; returns (detached loss, replayed events used)."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def make_memory(settings: Settings, device: torch.device) -> Memory | None:
    kind = settings.strategy.memory
    capacity, seed = settings.replay.capacity, settings.model.seed
    if kind == "none":
        return None
    if kind == "reservoir":
        return ReservoirBuffer(capacity, device, seed=seed)
    from ..memory_balanced import ClassBalancedBuffer
    return ClassBalancedBuffer(capacity, device, seed=seed)


def _build(name: str, settings: Settings, learner: Trainable) -> Any:
    module = importlib.import_module(f"{__package__}.{name}")
    return module.build(settings, learner)


class Continual(StrategyBase):
    name = "continual"

    def __init__(self, learner: Trainable, settings: Settings) -> None:
        super().__init__()
        cfg = settings.strategy
        self.learner = learner
        self.memory = make_memory(settings, learner.device)
        self.replay_batch_size = settings.replay.batch_size
        self.plugins: list[Plugin] = [_build(n, settings, learner) for n in cfg.plugins]
        self.meta: MetaUpdate | None = (None if cfg.meta == "none"
                                        else _build(cfg.meta, settings, learner))
        self.every = cfg.consolidate_every_events
        self.on_new_class = cfg.consolidate_on_new_class
        self.on_drift = cfg.consolidate_on_drift
        self._since = 0          # learned events since the last consolidation
        self._classes = 0        # classes the model had at the last update

    # -- learning ---------------------------------------------------------------------
    def update(self, batch: Batch) -> UpdateStats:
        model = self.learner.model
        assert model is not None
        n_classes = int(model.n_classes)
        if self.on_new_class and 0 < self._classes < n_classes:
            self.consolidate("new_class")
        self._classes = n_classes
        losses: list[torch.Tensor] = []
        replayed = 0
        for chunk in batch.chunks(self.learner.step_size):
            if self.meta is not None:
                loss, used = self.meta.update(self.learner, chunk, self.memory, self.plugins)
            else:
                loss, used = self._step(chunk)
            losses.append(loss)
            replayed += used
            if self.memory is not None:
                # Added after the step so a chunk never replays itself.
                self.memory.add(chunk.x, chunk.y)
        self._since += len(batch)
        if self.every and self._since >= self.every:
            self.consolidate("every_events")
        return UpdateStats(loss=float(torch.stack(losses).mean()) if losses else 0.0,
                           steps=len(losses), replayed=replayed)

    def _step(self, chunk: Batch) -> tuple[torch.Tensor, int]:
        x, y, used = chunk.x, chunk.y, 0
        if self.memory is not None and len(self.memory):
            rx, ry = self.memory.sample(self.replay_batch_size)
            x, y, used = torch.cat([x, rx]), torch.cat([y, ry]), int(rx.shape[0])
        loss = self.learner.step(x, y, n_new=len(chunk), plugins=self.plugins,
                                 memory=self.memory)
        return loss, used

    def consolidate(self, reason: str = "manual") -> bool:
        """A task boundary: every plugin freezes what matters so far.

        ``reason="drift"`` is ignored unless ``strategy.consolidate_on_drift``.
        """
        if reason == "drift" and not self.on_drift:
            return False
        model = self.learner.model
        if model is None:
            return False
        for plugin in self.plugins:
            plugin.consolidate(model)
        self.consolidations[reason] = self.consolidations.get(reason, 0) + 1
        self._since = 0
        return True

    # -- state ------------------------------------------------------------------------
    def clear_memory(self) -> None:
        if self.memory is not None:
            self.memory.clear()

    def memory_events(self) -> int:
        return 0 if self.memory is None else len(self.memory)

    def state_dict(self) -> dict[str, Any]:
        return {"memory": None if self.memory is None else self.memory.state_dict(),
                "plugins": {p.name: p.state_dict() for p in self.plugins},
                "meta": None if self.meta is None else self.meta.state_dict(),
                "consolidations": dict(self.consolidations),
                "since": self._since, "classes": self._classes}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.memory is not None and state["memory"] is not None:
            self.memory.load_state_dict(state["memory"])
        for plugin in self.plugins:
            if plugin.name in state["plugins"]:
                plugin.load_state_dict(state["plugins"][plugin.name])
        if self.meta is not None and state["meta"] is not None:
            self.meta.load_state_dict(state["meta"])
        self.consolidations = {str(k): int(v) for k, v in state["consolidations"].items()}
        self._since, self._classes = int(state["since"]), int(state["classes"])
