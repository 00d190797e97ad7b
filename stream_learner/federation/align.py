"""Bring a peer's :class:`~stream_learner.model.MLP` into our frame before averaging.

Two peers' weights are only comparable coordinate by coordinate when they mean the
same thing.  Two things differ between daemons even when the architecture matches:

* the input standardisation (each :class:`~stream_learner.model.Standardizer` has seen
  different events), so the first Linear layer acts on differently scaled inputs;
* the label map (class indices are assigned in order of first appearance), so head
  row ``i`` may be a different class on each side.

Both are fixed exactly (the aligned model computes the same function as the peer's),
the first by re-expressing the first layer in our standardisation, the second by
matching head rows by label.  Pure functions; nothing is modified in place.

>>> w, b = to_local_inputs(torch.eye(1), torch.zeros(1), torch.tensor([1.]),
...                        torch.tensor([2.]), torch.tensor([0.]), torch.tensor([1.]))
>>> w, b                      # (x - 1) / 2 == 0.5 * x - 0.5
(tensor([[0.5000]]), tensor([-0.5000]))
"""

from __future__ import annotations

import re
from typing import Hashable, Mapping, Sequence

import torch
from torch import Tensor

from ..labels import Label

_LINEAR = re.compile(r"^body\.(\d+)\.(weight|bias)$")


def scaler_stats(state: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
    """(mean, std) of a state_dict's ``Standardizer``, as its ``forward`` computes them.

    >>> scaler_stats({"scaler.count": torch.tensor(4.), "scaler.mean": torch.zeros(1),
    ...               "scaler.m2": torch.tensor([16.])})
    (tensor([0.], dtype=torch.float64), tensor([2.], dtype=torch.float64))
    """
    # float64 like the buffers: a count sent as float16 would overflow at 65504.
    count, mean, m2 = (state[f"scaler.{k}"].to(torch.float64) for k in ("count", "mean", "m2"))
    var = m2 / count.clamp(min=1.0)
    return mean, var.clamp(min=1e-12).sqrt().clamp(min=1e-6)


def to_local_inputs(w0: Tensor, b0: Tensor, peer_mean: Tensor, peer_std: Tensor,
                    local_mean: Tensor, local_std: Tensor) -> tuple[Tensor, Tensor]:
    """Re-express a first layer ``W (x - μp)/σp + b`` as ``W' (x - μl)/σl + b'``.

    ``W' = W diag(σl/σp)`` and ``b' = b + W (μl - μp)/σp``, computed in float64 and
    returned in ``w0``'s dtype and device.
    """
    dtype, device = w0.dtype, w0.device
    w = w0.to(device=device, dtype=torch.float64)
    b = b0.to(device=device, dtype=torch.float64)
    mu_p, sd_p, mu_l, sd_l = (t.to(device=device, dtype=torch.float64)
                              for t in (peer_mean, peer_std, local_mean, local_std))
    if w.dim() != 2 or w.shape[1] != mu_p.shape[0] or mu_p.shape != mu_l.shape:
        raise ValueError(f"incompatible: first layer {tuple(w.shape)} for "
                         f"{mu_p.shape[0]} peer / {mu_l.shape[0]} local features")
    return (w * (sd_l / sd_p)).to(dtype), (b + w @ ((mu_l - mu_p) / sd_p)).to(dtype)


def _key(label: Hashable) -> tuple[type, Hashable]:
    # 1 and "1" are different labels (as in LabelMap); so are 1 and True.
    return (type(label), label)


def align_head(peer_w: Tensor, peer_b: Tensor, peer_labels: Sequence[Label],
               local_w: Tensor, local_b: Tensor, local_labels: Sequence[Label]
               ) -> tuple[Tensor, Tensor, Tensor]:
    """Peer head rows reordered to our label order, by label and never by position.

    Row ``i`` is the peer's row for ``local_labels[i]`` when the peer knows that label,
    else our own row (the peer has no information on it); rows past ``local_labels``
    (spare head capacity) are ours too.  Labels only the peer knows are dropped.  Also
    returns the bool mask of rows that came from the peer.

    >>> w, b, from_peer = align_head(torch.tensor([[1.], [2.]]), torch.tensor([1., 2.]),
    ...                              ["a", "b"], torch.zeros(3, 1), torch.zeros(3),
    ...                              ["b", "c"])
    >>> w.flatten(), from_peer
    (tensor([2., 0., 0.]), tensor([ True, False, False]))
    """
    for what, w, b, labels in (("peer", peer_w, peer_b, peer_labels),
                               ("local", local_w, local_b, local_labels)):
        if w.dim() != 2 or b.shape != w.shape[:1] or len(labels) > w.shape[0]:
            raise ValueError(f"incompatible: {what} head {tuple(w.shape)} / bias "
                             f"{tuple(b.shape)} for {len(labels)} labels")
        if len({_key(x) for x in labels}) != len(labels):
            raise ValueError(f"incompatible: duplicate {what} labels")
    if peer_w.shape[1] != local_w.shape[1]:
        raise ValueError(f"incompatible: head input widths {peer_w.shape[1]} vs "
                         f"{local_w.shape[1]}")
    index = {_key(x): j for j, x in enumerate(peer_labels)}
    pairs = [(i, index[_key(x)]) for i, x in enumerate(local_labels) if _key(x) in index]
    w, b = local_w.clone(), local_b.clone()
    mask = torch.zeros(local_w.shape[0], dtype=torch.bool, device=local_w.device)
    if pairs:
        dst = torch.tensor([i for i, _ in pairs], device=local_w.device)
        src = torch.tensor([j for _, j in pairs], device=peer_w.device)
        w[dst] = peer_w[src].to(device=w.device, dtype=w.dtype)
        b[dst] = peer_b[src].to(device=b.device, dtype=b.dtype)
        mask[dst] = True
    return w, b, mask


def _linear_indices(state: Mapping[str, Tensor]) -> list[int]:
    return sorted({int(m.group(1)) for k in state if (m := _LINEAR.match(k))})


def peer_in_local_frame(peer_state: Mapping[str, Tensor], peer_labels: Sequence[Label],
                        local_state: Mapping[str, Tensor], local_labels: Sequence[Label]
                        ) -> dict[str, Tensor]:
    """A peer's MLP state_dict expressed in ours: same keys, shapes, dtypes and device.

    ``body.*`` come from the peer (the first Linear re-expressed in our standardisation:
    :func:`to_local_inputs`), ``head.*`` from :func:`align_head`, everything else
    (scaler buffers, ``n_classes_t``) is ours, since the result lives in our frame.
    With no hidden layers the head is the first layer and gets both treatments.
    Raises ``ValueError("incompatible: ...")`` when the architectures differ.
    """
    required = ("scaler.count", "scaler.mean", "scaler.m2", "head.weight", "head.bias")
    for what, state in (("peer", peer_state), ("local", local_state)):
        missing = [k for k in required if k not in state]
        if missing:
            raise ValueError(f"incompatible: {what} state lacks {', '.join(missing)}")
    n_local = local_state["scaler.mean"].shape
    if peer_state["scaler.mean"].shape != n_local:
        raise ValueError(f"incompatible: n_features {tuple(peer_state['scaler.mean'].shape)}"
                         f" vs {tuple(n_local)}")
    layers = _linear_indices(local_state)
    if _linear_indices(peer_state) != layers:
        raise ValueError("incompatible: body layers differ")
    for i in layers:
        for part in ("weight", "bias"):
            k = f"body.{i}.{part}"
            if peer_state[k].shape != local_state[k].shape:
                raise ValueError(f"incompatible: {k} {tuple(peer_state[k].shape)} vs "
                                 f"{tuple(local_state[k].shape)}")
    first = f"body.{layers[0]}" if layers else "head"
    device = local_state["head.weight"].device

    def peer(k: str) -> Tensor:
        return peer_state[k].detach().to(device=device, dtype=local_state[k].dtype)

    p_mean, p_std = scaler_stats(peer_state)
    l_mean, l_std = scaler_stats(local_state)
    framed: dict[str, Tensor] = {}
    for i in layers:
        for part in ("weight", "bias"):
            framed[f"body.{i}.{part}"] = peer(f"body.{i}.{part}")
    first_w, first_b = to_local_inputs(peer(f"{first}.weight"), peer(f"{first}.bias"),
                                       p_mean, p_std, l_mean, l_std)
    if layers:
        framed[f"{first}.weight"], framed[f"{first}.bias"] = first_w, first_b
        head_w, head_b = peer("head.weight"), peer("head.bias")
    else:
        head_w, head_b = first_w, first_b
    framed["head.weight"], framed["head.bias"], _ = align_head(
        head_w, head_b, peer_labels, local_state["head.weight"].detach(),
        local_state["head.bias"].detach(), local_labels)
    out: dict[str, Tensor] = {}
    for k, v in local_state.items():
        out[k] = framed[k] if k in framed else v.detach().clone()
    return out
