"""The learner's side of a round, without Kafka: the FedProx pull and the outlier filter."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stream_learner.config import Settings
from stream_learner.federation import aggregate as A
from stream_learner.federation.merge import PeerModel
from stream_learner.learner import Learner


def _learner(**fed: object) -> Learner:
    lrn = Learner(Settings(model={"device": "cpu"}, federation=fed))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(512, 4)).astype(np.float32)
    lrn.learn(x, ["p" if v > 0 else "n" for v in x[:, 0]])
    return lrn


def _moved(state: dict[str, torch.Tensor], scale: float,
           gen: torch.Generator) -> dict[str, torch.Tensor]:
    """``state`` with its weights (not the standardiser) moved by N(0, scale^2)."""
    return {k: (v + scale * torch.randn(v.shape, generator=gen)
                if k.startswith(("body.", "head.")) else v.clone())
            for k, v in state.items()}


def test_proximal_pull_is_the_gradient_of_the_fedprox_term() -> None:
    lrn = _learner()
    assert lrn.model is not None
    anchor = {k: v.detach() + 0.1 * torch.randn_like(v) for k, v in lrn.model.named_parameters()}
    mu = 0.3
    x = torch.randn(16, 4)
    y = torch.randint(0, 2, (16,))
    # Reference: the term in the loss, through autograd.
    lrn.model.zero_grad()
    loss = lrn.loss_fn(lrn.model(x), y) + 0.5 * mu * sum(
        ((p - anchor[k]) ** 2).sum() for k, p in lrn.model.named_parameters())
    loss.backward()
    want = {k: p.grad.clone() for k, p in lrn.model.named_parameters()}
    # Ours: the task gradient, then the pull added to it.
    lrn.model.zero_grad()
    lrn.loss_fn(lrn.model(x), y).backward()
    lrn.set_proximal_anchor(anchor, mu)
    lrn.proximal.pull(lrn.model)
    for k, p in lrn.model.named_parameters():
        torch.testing.assert_close(p.grad, want[k], rtol=1e-5, atol=1e-6)


def test_far_outliers_mask() -> None:
    center = torch.zeros(2)
    X = torch.tensor([[0., 0.], [1., 0.], [0., 1.5], [2., 0.], [40., 0.]])
    assert A.far_outliers(X, center, 3.0).tolist() == [False, False, False, False, True]
    assert not A.far_outliers(X, center, 0.0).any()              # off
    assert not A.far_outliers(center.expand(3, 2), center, 3.0).any()   # nobody moved
    with pytest.raises(ValueError, match="factor"):
        A.far_outliers(X, center, -1.0)


@pytest.mark.parametrize("aggregator", ["trimmed_mean", "median", "centered_clip"])
def test_a_far_peer_is_dropped_before_a_robust_aggregator(aggregator: str) -> None:
    lrn = _learner(aggregator=aggregator)
    assert lrn.model is not None
    state = {k: v.clone() for k, v in lrn.model.state_dict().items()}
    labels = list(lrn.labels.labels)
    gen = torch.Generator().manual_seed(1)

    honest = [PeerModel(f"h{i}", _moved(state, 0.01, gen), labels, 100, 0.0) for i in range(2)]
    attacker = PeerModel("bad", _moved(state, 10.0, gen), labels, 100, 0.0)
    report = lrn.federated.merge([*honest, attacker])
    assert report.merged and report.participants == 2
    assert report.rejected == {"oversize_norm": 1} and report.rejected_senders == ["bad"]
    # Only the honest peers moved us: by at most their own (small) distance.
    after = lrn.model.state_dict()
    drift = max(float((after[k] - state[k]).abs().max()) for k in state
                if k.startswith(("body.", "head.")))
    assert drift < 0.1


def test_fedavg_stays_plain() -> None:
    lrn = _learner(aggregator="fedavg")
    assert lrn.model is not None
    state = {k: v.clone() for k, v in lrn.model.state_dict().items()}
    far = {k: (v + 10.0 if k.startswith(("body.", "head.")) else v.clone())
           for k, v in state.items()}
    report = lrn.federated.merge([PeerModel("far", far, list(lrn.labels.labels), 100, 0.0)])
    assert report.merged and report.participants == 1 and report.rejected == {}


def test_few_peers_still_filter_a_far_one() -> None:
    """Two peers: the median would be half the attacker's distance; the nearer is used.
    Then one peer alone is judged by the scale the earlier round found."""
    lrn = _learner(aggregator="trimmed_mean")
    assert lrn.model is not None
    state = {k: v.clone() for k, v in lrn.model.state_dict().items()}
    labels = list(lrn.labels.labels)
    gen = torch.Generator().manual_seed(2)

    report = lrn.federated.merge([PeerModel("h", _moved(state, 0.01, gen), labels, 100, 0.0),
                                  PeerModel("bad", _moved(state, 10.0, gen), labels, 100, 0.0)])
    assert report.rejected_senders == ["bad"] and report.participants == 1
    report = lrn.federated.merge([PeerModel("bad", _moved(state, 10.0, gen), labels, 100, 0.0)])
    assert report.rejected_senders == ["bad"] and not report.merged
    restored = _learner(aggregator="trimmed_mean")
    restored.federated.load_state_dict(lrn.federated.state_dict())   # the scale travels
    assert restored.federated.merge([PeerModel("bad", _moved(state, 10.0, gen), labels, 100, 0.0)]
                                    ).rejected_senders == ["bad"]


def test_converged_peers_are_not_outliers() -> None:
    """Near convergence two honest peers differ by hairs, one hair 3x the other."""
    lrn = _learner(aggregator="trimmed_mean")
    assert lrn.model is not None
    state = {k: v.clone() for k, v in lrn.model.state_dict().items()}
    labels = list(lrn.labels.labels)
    gen = torch.Generator().manual_seed(3)
    report = lrn.federated.merge([PeerModel("a", _moved(state, 1e-5, gen), labels, 100, 0.0),
                                  PeerModel("b", _moved(state, 1e-3, gen), labels, 100, 0.0)])
    assert report.rejected == {} and report.participants == 2
