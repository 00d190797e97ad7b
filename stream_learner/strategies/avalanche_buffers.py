"""Plain-data (de)serialisation of the Avalanche backend's buffers (no pickle).

Split out of :mod:`stream_learner.strategies.avalanche_backend`: each buffer is
materialised as tensors (events, classes, reservoir weights, DER logits) and rebuilt
from them, so checkpoints hold only plain state.
"""

from __future__ import annotations

import math
from typing import Any

import torch


def tensor_dataset(x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor | None = None) -> Any:
    from avalanche.benchmarks.utils.classification_dataset import (
        _make_taskaware_tensor_classification_dataset)
    ds = _make_taskaware_tensor_classification_dataset(x, y, task_labels=0)
    if logits is None:
        return ds
    from avalanche.benchmarks.utils import make_avalanche_dataset
    from avalanche.benchmarks.utils.data_attribute import TensorDataAttribute
    from avalanche.benchmarks.utils.flat_data import FlatData
    # As DER builds it (training/supervised/der.py): one logits row per event.
    rows = [row for row in logits]
    return make_avalanche_dataset(ds, data_attributes=[TensorDataAttribute(
        FlatData([rows], discard_elements_not_in_indices=True), name="logits",
        use_in_getitem=True)])


def materialise(dataset: Any) -> list[torch.Tensor]:
    """Every element of an Avalanche dataset, collated: [x, y, t(, logits)]."""
    from torch.utils.data import DataLoader
    if len(dataset) == 0:
        return []
    return list(next(iter(DataLoader(dataset, batch_size=len(dataset), shuffle=False))))


def dump_reservoir(buf: Any) -> dict[str, Any]:
    parts = materialise(buf.buffer)
    state: dict[str, Any] = {"max_size": int(buf.max_size),
                             "weights": buf._buffer_weights.detach().cpu().clone()}
    if parts:
        state["x"], state["y"] = parts[0].cpu(), parts[1].cpu().long()
        if len(parts) > 3:
            state["logits"] = parts[3].cpu()
    return state


def load_reservoir(state: dict[str, Any]) -> Any:
    from avalanche.training.storage_policy import ReservoirSamplingBuffer
    buf = ReservoirSamplingBuffer(int(state["max_size"]))
    if "x" in state:
        buf.buffer = tensor_dataset(state["x"], state["y"], state.get("logits"))
    buf._buffer_weights = state["weights"].clone()
    return buf


def dump_balanced(policy: Any) -> dict[str, Any]:
    return {"max_size": int(policy.max_size),
            "seen_classes": [int(c) for c in policy.seen_classes],
            "groups": [[int(c), dump_reservoir(g)] for c, g in policy.buffer_groups.items()]}


def load_balanced(policy: Any, state: dict[str, Any]) -> None:
    policy.max_size = int(state["max_size"])
    policy.seen_classes = set(int(c) for c in state["seen_classes"])
    policy.buffer_groups = {int(c): load_reservoir(g) for c, g in state["groups"]}


def pad_der_logits(policy: Any, width: int) -> None:
    """Stored DER logits narrower than ``width`` get NaN columns (filled at replay)."""
    for c, group in list(policy.buffer_groups.items()):
        state = dump_reservoir(group)
        if "logits" in state and state["logits"].shape[1] < width:
            old = state["logits"]
            pad = torch.full((old.shape[0], width - old.shape[1]), math.nan, dtype=old.dtype)
            state["logits"] = torch.cat([old, pad], dim=1)
            policy.buffer_groups[c] = load_reservoir(state)
