"""Flattening named tensors to one vector and back: pure functions, no I/O.

Split out of :mod:`stream_learner.federation.aggregate` (which re-exports these names),
because the aggregators only ever see the flat ``[n, d]`` rows this module makes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import reduce
from typing import Mapping, Sequence

import torch
from torch import Tensor

@dataclass(frozen=True)
class Spec:
    """How a flat vector maps back to named tensors (order, shapes, dtypes)."""

    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]
    dtypes: tuple[torch.dtype, ...]

    @property
    def numel(self) -> int:
        return sum(math.prod(s) for s in self.shapes)


def flatten(params: Mapping[str, Tensor], keys: Sequence[str] | None = None,
            dtype: torch.dtype | None = None) -> tuple[Tensor, Spec]:
    """Concatenate ``params`` (in the mapping's order, or ``keys``' order) into one vector.

    The vector's dtype is ``dtype`` or else the widest floating dtype among the tensors,
    so float32 weights next to float64 buffers round-trip exactly.

    >>> vec, spec = flatten({"w": torch.ones(2, 2), "b": torch.zeros(2)})
    >>> vec.shape, spec.names
    (torch.Size([6]), ('w', 'b'))
    >>> unflatten(vec, spec)["w"]
    tensor([[1., 1.],
            [1., 1.]])
    """
    names = tuple(params) if keys is None else tuple(keys)
    tensors = [params[k] for k in names]
    if dtype is None:
        floats = [t.dtype for t in tensors if t.is_floating_point()]
        dtype = reduce(torch.promote_types, floats) if floats else torch.get_default_dtype()
    spec = Spec(names, tuple(t.shape for t in tensors), tuple(t.dtype for t in tensors))
    if not tensors:
        return torch.zeros(0, dtype=dtype), spec
    return torch.cat([t.detach().reshape(-1).to(dtype) for t in tensors]), spec


def unflatten(vec: Tensor, spec: Spec) -> dict[str, Tensor]:
    """Split ``vec`` back into fresh tensors (no aliasing of ``vec``) of ``spec``'s shapes.

    Integer entries are rounded first: an average of equal counts may come out as
    ``4.9999`` in floating point and must not truncate to 4.

    >>> vec, spec = flatten({"n": torch.tensor(5), "w": torch.ones(1)})
    >>> unflatten(vec * (1 / 3) * 3, spec)["n"]
    tensor(5)
    """
    if vec.dim() != 1 or vec.numel() != spec.numel:
        raise ValueError(f"vector of shape {tuple(vec.shape)} does not match the spec "
                         f"({spec.numel} values)")
    out: dict[str, Tensor] = {}
    for name, chunk, shape, dtype in zip(spec.names, vec.split([math.prod(s) for s in spec.shapes]),
                                         spec.shapes, spec.dtypes):
        if not dtype.is_floating_point and not dtype.is_complex:
            chunk = chunk.round()
        out[name] = chunk.reshape(shape).to(dtype, copy=True)
    return out
