"""The Avalanche plugins the backend adds: update statistics, finite EWC, reservoir A-GEM.

Split out of :mod:`stream_learner.strategies.avalanche_backend`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..finite import gradients, step_is_finite


def stats_plugin() -> Any:
    from avalanche.core import SupervisedPlugin
    from avalanche.training import supervised as sv

    class UpdateRecorder(SupervisedPlugin):
        """Loss, iterations and replayed rows of one ``train`` call; MIR's last classes."""

        def __init__(self) -> None:
            super().__init__()
            self.reset()
            self.last_classes: list[int] = []

        def reset(self) -> None:
            self.losses: list[torch.Tensor] = []
            self.rows = 0
            self.extra_replayed = 0

        def after_training_iteration(self, strategy: Any, **kwargs: Any) -> None:
            self.losses.append(strategy.loss.detach().reshape(-1)[0])
            self.rows += int(strategy.mb_y.shape[0])
            # ER_ACE draws its replay rows itself (mb_buffer_y, set whenever its
            # replay_loader exists); the shim subclasses the real class, so isinstance.
            if isinstance(strategy, sv.ER_ACE) and strategy.replay_loader is not None:
                self.extra_replayed += int(strategy.mb_buffer_y.shape[0])
            for plugin in strategy.plugins:
                cls = type(plugin).__name__
                if cls == "MIRPlugin" and plugin.replay_loader is not None:
                    self.extra_replayed += plugin.batch_size_mem
                elif cls == "ReservoirAGEMPlugin" and plugin.buffers:
                    self.extra_replayed += plugin.sample_size
            if isinstance(strategy, sv.MER):                     # per inner step
                self.extra_replayed += strategy.n_inner_steps * min(
                    len(strategy.buffer), strategy.buffer.batch_size_mem)

        def after_training_exp(self, strategy: Any, **kwargs: Any) -> None:
            # Runs before MIRPlugin's hook (plugins run in order), while mb_y still exists.
            if strategy.mbatch is not None:
                self.last_classes = sorted(int(c) for c in torch.unique(strategy.mb_y).tolist())

    return UpdateRecorder()


def finite_ewc(strength: float, decay: float) -> Any:
    from avalanche.benchmarks.utils.data import AvalancheDataset
    from avalanche.models.utils import avalanche_forward
    from avalanche.training.plugins import EWCPlugin
    from avalanche.training.utils import zerolike_params_dict
    from torch.utils.data import DataLoader

    class FiniteEWCPlugin(EWCPlugin):
        """Online EWC whose importances leave out mini-batches whose loss or gradients are
        not finite, as the native ``ewc`` does (``anchored.mean_grad_power``)."""

        def compute_importances(self, model: nn.Module, criterion: Any, optimizer: Any,
                                dataset: Any, device: Any, batch_size: int,
                                num_workers: int = 0) -> dict[str, Any]:
            # EWCPlugin.compute_importances (Avalanche 0.6) with one change: the mean is
            # over the finite mini-batches (all of them, normally: then it is identical).
            model.eval()
            importances = zerolike_params_dict(model)
            # Avalanche datasets carry their collate_fn; a plain torch dataset has none.
            collate_fn = dataset.collate_fn if isinstance(dataset, AvalancheDataset) else None
            loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate_fn,
                                num_workers=num_workers)
            used = 0
            for batch in loader:
                x, y, task_labels = batch[0], batch[1], batch[-1]
                x, y = x.to(device), y.to(device)
                optimizer.zero_grad()
                out = avalanche_forward(model, x, task_labels)
                loss = criterion(out, y)
                loss.backward()
                if not step_is_finite(loss, gradients(model.parameters())):
                    continue
                used += 1
                for (k1, p), (k2, imp) in zip(model.named_parameters(), importances.items()):
                    assert k1 == k2
                    if p.grad is not None:
                        imp.data += p.grad.data.clone().pow(2)
            if used:
                for imp in importances.values():
                    imp.data /= float(used)
            model.train()
            return importances

    return FiniteEWCPlugin(strength, mode="online", decay_factor=decay)


def reservoir_agem(capacity: int, sample_size: int) -> Any:
    from avalanche.benchmarks.utils.data_loader import GroupBalancedInfiniteDataLoader
    from avalanche.training.plugins import AGEMPlugin
    from avalanche.training.storage_policy import ReservoirSamplingBuffer

    class ReservoirAGEMPlugin(AGEMPlugin):
        """A-GEM whose episodic memory is one reservoir, not one entry per experience."""

        def __init__(self) -> None:
            super().__init__(patterns_per_experience=capacity, sample_size=sample_size)
            self.storage = ReservoirSamplingBuffer(capacity)

        def update_memory(self, dataset: Any, num_workers: int = 0, **kwargs: Any) -> None:
            self.storage.update_from_dataset(dataset)
            self.rebuild_loader()

        def rebuild_loader(self) -> None:
            if len(self.storage.buffer) == 0:
                self.buffers, self.buffer_dataloader, self.buffer_dliter = [], None, iter([])
                return
            self.buffers = [self.storage.buffer]
            self.buffer_dataloader = GroupBalancedInfiniteDataLoader(
                self.buffers, batch_size=self.sample_size, num_workers=0, pin_memory=False,
                persistent_workers=False)
            self.buffer_dliter = iter(self.buffer_dataloader)

    return ReservoirAGEMPlugin()
