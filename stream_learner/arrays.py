"""numpy views of array-like values, without importing torch.

The Kafka loop's parts (accuracy, the label join) keep numpy arrays; a checkpoint file
stores them as tensors (:mod:`stream_learner.checkpoint_codec` converts, on the worker's
side). Their ``load_state_dict`` methods take either, and this tells a tensor apart
without importing torch: when torch is not loaded, no value can be a tensor.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np


def is_tensor(value: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def as_numpy(value: Any) -> np.ndarray | None:
    """``value`` as a numpy array when it is one or a tensor; None for anything else
    (a list stays a list: callers that want only arrays must not coerce one)."""
    if isinstance(value, np.ndarray):
        return value
    if is_tensor(value):
        # .numpy() refuses tensors that need grad or live on an accelerator.
        return value.detach().cpu().numpy()
    return None
