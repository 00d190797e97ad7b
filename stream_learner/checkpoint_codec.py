"""The Kafka loop's part of a checkpoint: numpy arrays in the loop, tensors on disk.

The loop's parts (accuracy, loss, decoder, counters, offsets, lineage, the label join,
the peers' versions) keep numpy arrays, since the loop never imports torch. Files stay
what they were (tensors, loaded with ``weights_only``), so the worker, which writes and
reads them, converts here: :func:`to_file` as it saves (in
:meth:`~stream_learner.checkpoint.CheckpointStore.save`), :func:`to_loop` on what it
hands back after a restore (a tensor sent to the loop would import torch there when
unpickled).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch


def _map(value: Any, leaf: Callable[[Any], Any]) -> Any:
    """``leaf`` applied to every value inside dicts, lists and tuples, the rest kept."""
    if isinstance(value, dict):
        return {k: _map(v, leaf) for k, v in value.items()}
    if isinstance(value, list):
        return [_map(v, leaf) for v in value]
    if isinstance(value, tuple):
        return tuple(_map(v, leaf) for v in value)
    return leaf(value)


def to_file(value: Any) -> Any:
    """numpy arrays anywhere in ``value`` as tensors (copies: later updates must not
    change a state already taken)."""
    return _map(value, lambda v: torch.from_numpy(np.array(v))
                if isinstance(v, np.ndarray) else v)


def to_loop(value: Any) -> Any:
    """Tensors anywhere in ``value`` as numpy arrays: what the loop's parts load."""
    return _map(value, lambda v: v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else v)
