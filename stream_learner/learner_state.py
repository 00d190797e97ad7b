"""A :class:`~stream_learner.learner.Learner`'s checkpoint state: plain state_dicts only.

Split out of the learner class; the keys are the checkpoint format (old checkpoints
load: optional keys default as they always did), so they do not change here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from .learner import Learner


def dump(lrn: Learner) -> dict[str, Any]:
    return {
        "labels": lrn.labels.state_dict(),
        "n_features": None if lrn.model is None else lrn.model.n_features,
        "model": None if lrn.model is None else _to_cpu(lrn.model.state_dict()),
        # The standardiser's first rows until its robust re-estimate (raw events:
        # kept out of the model's state_dict, which peers receive).
        "scaler_start_rows": None if lrn.model is None else
        _to_cpu(lrn.model.scaler.start_rows),
        "optimizer": None if lrn.optimizer is None else _to_cpu(lrn.optimizer.state_dict()),
        "strategy_name": lrn.strategy.name,
        "strategy": lrn.strategy.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "seen": lrn.seen,
        "skipped_steps": lrn.skipped_steps,
        "probes": lrn.probes.state_dict(),
        "consolidations": lrn.consolidations,
        "drift": lrn.drift.state_dict(),
        "proximal": None if lrn.proximal.anchor is None else
        {"mu": lrn.proximal.mu, "anchor": _to_cpu(lrn.proximal.anchor)},
        "federated": lrn.federated.state_dict(),
    }


def load(lrn: Learner, state: dict[str, Any]) -> None:
    if state["strategy_name"] != lrn.strategy.name:
        raise ValueError(f"checkpoint was written by strategy {state['strategy_name']!r}, "
                         f"config asks for {lrn.strategy.name!r}")
    lrn.labels.load_state_dict(state["labels"])
    if state["model"] is not None:
        lrn.model = None
        lrn.build(state["n_features"])
        assert lrn.model is not None
        lrn.model.load_state_dict(state["model"])
        rows = state.get("scaler_start_rows")
        lrn.model.scaler.start_rows = None if rows is None else rows.to(lrn.device)
        lrn.optimizer = lrn.make_optimizer(lrn.model.parameters())
        lrn.optimizer.load_state_dict(state["optimizer"])
    lrn.strategy.load_state_dict(state["strategy"])
    lrn.seen = int(state.get("seen", 0))
    lrn.skipped_steps = int(state.get("skipped_steps", 0))
    if "probes" in state:
        lrn.probes.load_state_dict(state["probes"], lrn.device)
        lrn.consolidations = int(state["consolidations"])
    if "drift" in state:
        lrn.drift.load_state_dict(state["drift"])
    lrn.federated.load_state_dict(state.get("federated", {}))
    prox = state.get("proximal")
    lrn.set_proximal_anchor(None if prox is None else
                            {k: v.to(lrn.device) for k, v in prox["anchor"].items()},
                            0.0 if prox is None else float(prox["mu"]))
    lrn.apply_lr_factor(force=True)
    # Last: rebuilding the drift monitor and the pool draws from the generator.
    torch.set_rng_state(state["torch_rng"])


def _to_cpu(obj: Any) -> Any:
    if torch.is_tensor(obj):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj
