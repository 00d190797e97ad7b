"""A malicious federation site for the benchmarks: ``python -m stream_learner.benchmarks.attacker run``.

The daemon has no attack option: this wrapper makes the one site it starts publish a
corrupted model, chosen by ``$BENCH_FEDERATION_ATTACK``:

* ``sign_flip``: the last aggregate (the proximal anchor) minus 10x our update from it;
* ``noise``: our weights plus N(0, 10^2).

The patch is applied when this module is imported, so the spawned learner worker (which
imports the ``-m`` module as ``__mp_main__``) is corrupted too.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from ..federation import merge

ENV = "BENCH_FEDERATION_ATTACK"
ATTACKS = ("sign_flip", "noise")


def corrupt(state: dict[str, torch.Tensor], attack: str,
            anchor: dict[str, torch.Tensor], seed: int) -> None:
    """Rewrite ``state``'s parameters (in place) as the attacker publishes them."""
    gen = torch.Generator().manual_seed(seed)
    for name, value in state.items():
        if not name.startswith(merge.PARAM_PREFIXES):
            continue
        if attack == "sign_flip":
            ref = anchor.get(name)
            ref = ref.cpu() if ref is not None and ref.shape == value.shape else \
                torch.zeros_like(value)
            state[name] = ref - 10.0 * (value - ref)
        else:
            state[name] = value + 10.0 * torch.randn(value.shape, generator=gen)


def install(attack: str) -> None:
    """Make every :class:`~stream_learner.federation.merge.Federated` publish ``attack``."""
    if attack not in ATTACKS:
        raise ValueError(f"{ENV}={attack!r}: expected one of {ATTACKS}")
    honest = merge.Federated.snapshot

    def snapshot(self: merge.Federated) -> Any:
        snap = honest(self)
        if snap is not None:   # seeded by the events seen at the previous snapshot
            corrupt(snap.params, attack, self.learner.proximal_anchor() or {},
                    int(self.learner.seen) - snap.samples)
        return snap

    merge.Federated.snapshot = snapshot    # type: ignore[method-assign]


if os.environ.get(ENV):
    install(os.environ[ENV])

if __name__ == "__main__":
    from ..cli import main
    raise SystemExit(main())
