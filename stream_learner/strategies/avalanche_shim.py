"""The Avalanche strategy template with the learner in charge of model and optimiser.

Split out of :mod:`stream_learner.strategies.avalanche_backend` (see its docstring for
why each override exists).
"""

from __future__ import annotations

from typing import Any

import torch

from ..finite import gradients, step_is_finite


_PATCHED = False


def skip_ffcv_probe() -> None:
    """Without the ``ffcv`` package no dataset can have FFCV support, yet Avalanche's
    multi-dataset loaders (ReplayDataLoader, A-GEM's) probe for it on every iteration by
    walking every leaf dataset of the replay buffer: ~0.3 s per micro-batch at a 10k
    buffer. Answer "no" directly when ``ffcv`` is not installed."""
    global _PATCHED
    if _PATCHED:
        return
    import importlib.util
    if importlib.util.find_spec("ffcv") is None:
        from avalanche.benchmarks.utils import data_loader
        data_loader.has_ffcv_support = lambda datasets: False
    _PATCHED = True


def template_class(name: str) -> type:
    """Avalanche's strategy class, with the learner in charge of model and optimiser."""
    from avalanche.training import supervised as sv

    # EWC: sv.EWC is sv.Naive plus an EWCPlugin; ours (finite_ewc) is added as a plugin.
    base = {"Naive": sv.Naive, "Replay": sv.Naive, "EWC": sv.Naive, "AGEM": sv.Naive,
            "MER": sv.MER, "ER_ACE": sv.ER_ACE, "DER": sv.DER, "MIR": sv.MIR}[name]

    class Shim(base):  # type: ignore[misc, valid-type]
        sl_learner: Any = None     # the Learner that counts skipped steps (set by the backend)

        def check_model_and_optimizer(self, **kwargs: Any) -> None:
            # The learner builds, grows and restores the model and its optimiser; Avalanche's
            # update_optimizer would reset the optimiser state on the first experience.
            pass

        def optimizer_step(self) -> None:
            self._guarded_step(self.loss)

        def _guarded_step(self, loss: torch.Tensor) -> None:
            """``optimizer.step()``, unless ``loss`` or a gradient is not finite: then the
            gradients are dropped and the step is counted in ``learner.skipped_steps``."""
            if step_is_finite(loss, gradients(self.model.parameters())):
                self.optimizer.step()
                return
            self.optimizer.zero_grad(set_to_none=True)
            learner = self.sl_learner
            if learner is not None:
                learner.note_skipped_step()

        if name == "MER":
            def _inner_updates(self, **kwargs: Any) -> None:
                # Avalanche 0.6's MER._inner_updates, operation for operation, except that
                # each per-event step goes through _guarded_step (Avalanche calls
                # optimizer.step() directly, so optimizer_step never sees these steps).
                from copy import deepcopy

                from avalanche.models.utils import avalanche_forward
                for _ in range(self.n_inner_steps):
                    x, y, t = self.buffer.get_batch(self.mb_x, self.mb_y, self.mb_task_id)
                    w_bef_t = deepcopy(self.model.state_dict())
                    for idx in range(x.shape[0]):
                        self.model.zero_grad()
                        pred = avalanche_forward(self.model, x[idx].unsqueeze(0),
                                                 t[idx].unsqueeze(0))
                        loss = self._criterion(pred, y[idx].unsqueeze(0))
                        loss.backward()
                        self._guarded_step(loss)
                    # Within-batch Reptile update (a skipped step left the weights as
                    # they were, so all-skipped steps leave them bit for bit).
                    w_aft_t = self.model.state_dict()
                    self.model.load_state_dict(
                        {k: w_bef_t[k] + (w_aft_t[k] - w_bef_t[k]) * self.beta
                         for k, _ in self.model.named_parameters()}, strict=False)

        if name == "DER":
            def _before_forward(self, **kwargs: Any) -> None:
                super()._before_forward(**kwargs)
                if self.replay_loader is None:
                    return
                stored, width = self.batch_logits, self.model.n_classes
                if stored.shape[1] < width or bool(torch.isnan(stored).any()):
                    # Columns of classes unknown when stored: the current (detached)
                    # logits, so the distillation term is zero there.
                    with torch.no_grad():
                        current = self.model(self.mbatch[0][: stored.shape[0]])
                    filled = current.clone()
                    w = min(stored.shape[1], width)
                    filled[:, :w] = torch.where(torch.isnan(stored[:, :w]), current[:, :w],
                                                stored[:, :w])
                    self.batch_logits = filled

    Shim.__name__ = Shim.__qualname__ = f"Stream{name}"
    return Shim
