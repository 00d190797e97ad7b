"""Federation aggregators and model alignment: pure functions, no broker, no daemon."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch

from stream_learner.federation import aggregate as A
from stream_learner.federation.align import (align_head, peer_in_local_frame, scaler_stats,
                                             to_local_inputs)
from stream_learner.model import MLP

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device here; the CPU case runs everywhere"))]


def rows(*xs: list[float]) -> torch.Tensor:
    return torch.tensor(xs, dtype=torch.float64)


# --- hand-computed cases ---------------------------------------------------------------

def test_fedavg_weighted_and_errors() -> None:
    X = rows([0, 0], [2, 4], [10, 10])
    assert A.fedavg(X, [1, 1, 0]).tolist() == [1, 2]
    assert A.fedavg(X, torch.tensor([3.0, 1.0, 0.0])).tolist() == [0.5, 1]
    assert A.fedavg(X).tolist() == [4, 14 / 3]
    with pytest.raises(ValueError, match="zero"):
        A.fedavg(X, [0, 0, 0])
    with pytest.raises(ValueError, match=">= 0"):
        A.fedavg(X, [1, -1, 1])
    with pytest.raises(ValueError, match="2 weights for 3"):
        A.fedavg(X, [1, 1])


def test_fedavg_large_counts_in_float16() -> None:
    X = torch.ones(2, 3, dtype=torch.float16)
    out = A.fedavg(X, [1e6, 3e6])     # a float16 weight sum would be inf
    assert out.dtype == torch.float16 and out.tolist() == [1, 1, 1]


def test_trimmed_mean_hand_and_scipy() -> None:
    X = rows([1, 10], [2, 20], [3, 30], [4, 40], [100, -100])
    assert A.trimmed_mean(X, 0.2).tolist() == [3, 20]      # drops 1 low, 1 high per column
    assert A.trimmed_mean(X, 0.0).tolist() == X.mean(0).tolist()
    gen = torch.Generator().manual_seed(1)
    for n in (1, 2, 5, 7, 10, 11):
        for trim in (0.0, 0.1, 0.2, 0.25, 0.3, 0.49):
            X = torch.randn(n, 13, generator=gen, dtype=torch.float64)
            np.testing.assert_allclose(A.trimmed_mean(X, trim).numpy(),
                                       scipy.stats.trim_mean(X.numpy(), trim, axis=0),
                                       rtol=1e-12, atol=1e-12)
    for bad in (-0.1, 0.5):
        with pytest.raises(ValueError, match="trim"):
            A.trimmed_mean(X, bad)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 8])
def test_median_matches_numpy(n: int) -> None:
    X = torch.randn(n, 17, generator=torch.Generator().manual_seed(n), dtype=torch.float64)
    np.testing.assert_allclose(A.median(X).numpy(), np.median(X.numpy(), axis=0), rtol=0,
                               atol=1e-15)


def test_median_even_is_midpoint_not_lower() -> None:
    assert A.median(rows([1], [2], [3], [10])).tolist() == [2.5]   # torch.median says 2


def test_krum_hand_computed() -> None:
    X = rows([0], [1], [2], [3], [10])
    # n - f - 2 = 2 nearest: row 1 -> 1 + 1, row 0 -> 1 + 4, row 4 -> 49 + 64.
    assert A.krum_scores(X, 1).tolist() == [5, 2, 2, 5, 113]
    assert A.krum(X, 1) == 1                      # tie with row 2: lowest index
    assert A.multi_krum(X, 1, 1).tolist() == X[1].tolist()
    assert A.multi_krum(X, 1, 2).tolist() == [1.5]
    assert A.multi_krum(X, 1).tolist() == [1.5]  # m = n - f = 4: rows 1, 2, 0, 3
    with pytest.raises(ValueError, match="m must be"):
        A.multi_krum(X, 1, 6)


def test_krum_needs_2f_plus_3() -> None:
    X = torch.zeros(4, 2)
    assert A.krum(X, 0) == 0
    with pytest.raises(ValueError, match=r"n >= 2f \+ 3 = 5 models, got n=4"):
        A.krum(X, 1)
    with pytest.raises(ValueError, match="n >= 2f"):
        A.multi_krum(X, 1, 1)


def test_krum_picks_an_honest_row() -> None:
    gen = torch.Generator().manual_seed(2)
    honest = 5 + 0.1 * torch.randn(5, 50, generator=gen)
    X = torch.cat([torch.randn(2, 50, generator=gen) * 20, honest])   # 2 Byzantine first
    assert A.krum(X, 2) >= 2


def test_krum_distances_do_not_cancel() -> None:
    # Models close together, far from the origin: the |a|^2 + |b|^2 - 2ab form loses
    # every digit of the distance in float32.
    X = 1e4 + torch.tensor([[0.0], [0.01], [0.02], [0.03], [1.0]])
    exact = A.krum_scores(X.double(), 1).float()
    torch.testing.assert_close(A.krum_scores(X, 1), exact, rtol=1e-5, atol=0)
    assert 1e-4 < exact[1] < 1e-3


def test_non_finite_rows_are_rejected() -> None:
    X = rows([1, 2], [float("nan"), 0], [3, float("inf")])
    for name in A.AGGREGATORS:
        with pytest.raises(ValueError, match=r"non-finite values in row\(s\) \[1, 2\]"):
            A.aggregate(name, X, None, f=0)


# --- robustness: 4 peers, one malicious -----------------------------------------------

@pytest.mark.parametrize("n_honest", [3, 4])
@pytest.mark.parametrize("attack", ["sign_flip", "noise"])
def test_robust_aggregators_resist_one_attacker(n_honest: int, attack: str) -> None:
    gen = torch.Generator().manual_seed(3)
    center = torch.randn(1000, generator=gen, dtype=torch.float64)      # |center| ~ 31.6
    honest = center + 0.01 * torch.randn(n_honest, 1000, generator=gen, dtype=torch.float64)
    mean = honest.mean(0)
    bad = -10 * mean if attack == "sign_flip" else \
        mean + 10 * torch.randn(1000, generator=gen, dtype=torch.float64)
    X = torch.cat([honest, bad[None]])
    n = X.shape[0]
    f = (n - 3) // 2        # the most Krum allows: 0 for 4 models, 1 for 5
    got = {
        "median": A.aggregate("median", X),
        "trimmed_mean": A.aggregate("trimmed_mean", X, trim=0.25),   # int(0.25 n) = 1
        "krum": A.aggregate("krum", X, f=f),
        "multi_krum": A.aggregate("multi_krum", X, f=f, m=n - 1),
        "fedavg": A.aggregate("fedavg", X, torch.ones(n)),
        "centered_clip": A.aggregate("centered_clip", X),      # around row 0, an honest one
    }
    dist = {k: float(torch.linalg.vector_norm(v - mean)) for k, v in got.items()}
    # An honest row is ~0.32 from the honest mean; the attack moves the mean by >60.
    for name in ("median", "trimmed_mean", "krum", "multi_krum", "centered_clip"):
        assert dist[name] < 0.5, dist
    assert dist["multi_krum"] < 1e-9                 # exactly the honest rows
    assert dist["fedavg"] > 50, dist


# --- clipping, staleness, mixing, dispatch ----------------------------------------------

def test_clip_norms() -> None:
    ref = torch.tensor([1.0, 1.0])
    X = torch.tensor([[4.0, 5.0], [1.1, 1.0], [1.0, 1.0]])
    before = X.clone()
    out = A.clip_norms(X, ref, 1.0)
    assert torch.equal(X, before)
    assert torch.allclose(out[0], torch.tensor([1.6, 1.8]))           # (3, 4) -> (0.6, 0.8)
    assert torch.equal(out[1:], X[1:])                                 # within: untouched
    assert float(torch.linalg.vector_norm(out[0] - ref)) == pytest.approx(1.0, rel=1e-6)
    assert torch.equal(A.clip_norms(X, ref, 0.0), ref.expand(3, 2))
    with pytest.raises(ValueError, match="max_norm"):
        A.clip_norms(X, ref, -1)


def test_centered_clip_bounds_an_attacker_and_keeps_a_lone_peers_knowledge() -> None:
    # Label skew: row 2 alone moved coordinate 2 (a class only it sees); row 3 attacks.
    local = torch.zeros(3, dtype=torch.float64)
    X = torch.stack([local, torch.tensor([1., 0., 0.]), torch.tensor([0., 0., 1.]),
                     torch.tensor([0., -1e6, 0.])]).double()
    out = A.centered_clip(X, local)
    assert out[2] == pytest.approx(0.25)                      # kept, with a 1/n share
    assert float(torch.linalg.vector_norm(out - A.fedavg(X[:3]) * 3 / 4)) <= 0.25 + 1e-12
    assert abs(float(out[1])) <= 0.25 + 1e-12                 # the attacker: at most tau / n
    assert A.trimmed_mean(X, 0.25)[2] == 0                    # a coordinate trim loses it
    assert torch.equal(A.centered_clip(local.expand(2, 3), local), local)   # no movement
    assert torch.equal(A.centered_clip(X, local, tau=0.0), local)
    with pytest.raises(ValueError, match="tau"):
        A.centered_clip(X, local, tau=-1.0)
    with pytest.raises(ValueError, match="center of shape"):
        A.centered_clip(X, torch.zeros(2))


def test_staleness_weight() -> None:
    ages = [0, 0.5, 1, 3, 10, 1e6]
    ws = [A.staleness_weight(a) for a in ages]
    assert ws[0] == 1.0 and ws[3] == 0.5
    assert all(a > b for a, b in zip(ws, ws[1:]))
    assert A.staleness_weight(-5) == 1.0
    assert A.staleness_weight(3, exponent=0) == 1.0
    assert A.staleness_weight(3, exponent=1) == 0.25
    with pytest.raises(ValueError):
        A.staleness_weight(float("nan"))


def test_mix() -> None:
    local, agg = torch.tensor([0.1, 2.0, -3.0]), torch.tensor([1.0, 0.3, 7.0])
    assert torch.equal(A.mix(local, agg, 0.0), local)
    assert torch.equal(A.mix(local, agg, 1.0), agg)
    torch.testing.assert_close(A.mix(local, agg, 0.3), 0.7 * local + 0.3 * agg)
    for bad in (-0.1, 1.1):
        with pytest.raises(ValueError, match="alpha"):
            A.mix(local, agg, bad)


def test_dispatcher_and_results() -> None:
    X = rows([0], [1], [2], [3], [10])
    assert A.AGGREGATORS == ("fedavg", "trimmed_mean", "median", "krum", "multi_krum",
                             "centered_clip")
    assert A.aggregate("median", X).tolist() == [2]
    assert A.aggregate("krum", X, f=1).tolist() == [1]
    assert A.aggregate("fedavg", X, [0, 0, 0, 0, 1]).tolist() == [10]
    with pytest.raises(ValueError, match="choose one of fedavg, trimmed_mean, median"):
        A.aggregate("mean", X)
    results = [(X[i], 1.0) for i in range(5)]
    assert A.aggregate_results("trimmed_mean", results, [RuntimeError("bad sig"), "stale"],
                               trim=0.2).tolist() == [2]
    with pytest.raises(ValueError, match=r"no results to aggregate \(2 failure"):
        A.aggregate_results("median", [], ["x", KeyError("y")])


def test_krum_result_is_a_copy() -> None:
    X = rows([0], [1], [2], [3], [10])
    A.aggregate("krum", X, f=1).add_(100)
    assert X[1].item() == 1


def test_flatten_round_trip() -> None:
    net = MLP(n_features=3, hidden=(4, 5), n_classes=2)
    net.scaler.update(torch.randn(7, 3))
    state = net.state_dict()
    vec, spec = A.flatten(state)
    assert vec.dtype == torch.float64 and vec.numel() == spec.numel
    assert spec.names == tuple(state)
    back = A.unflatten(vec, spec)
    assert list(back) == list(state)
    for k, v in state.items():
        assert back[k].dtype == v.dtype and torch.equal(back[k], v), k
    back["head.bias"].add_(1)                     # fresh tensors, not views of vec
    assert torch.equal(A.unflatten(vec, spec)["head.bias"], state["head.bias"])
    params, spec2 = A.flatten(state, keys=["head.bias", "body.0.weight"])
    assert params.dtype == torch.float32 and spec2.names == ("head.bias", "body.0.weight")
    with pytest.raises(ValueError, match="does not match"):
        A.unflatten(params[:-1], spec2)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_dtype_device_preserved_and_inputs_untouched(device: str, dtype: torch.dtype) -> None:
    X = torch.randn(7, 11, generator=torch.Generator().manual_seed(4)).to(device, dtype)
    before = X.clone()
    ref = X[0].clone()
    outs = [A.aggregate(name, X, torch.ones(7, device=device), f=1) for name in A.AGGREGATORS]
    outs += [A.clip_norms(X, ref, 0.5), A.mix(X[1], X[2], 0.5)]
    for out in outs:
        assert out.dtype == dtype and out.device.type == device
    assert torch.equal(X, before)
    want = np.median(before.double().cpu().numpy(), axis=0)
    np.testing.assert_allclose(A.median(X).double().cpu().numpy(), want,
                               rtol=1e-2 if dtype in (torch.float16, torch.bfloat16) else 1e-6)


# --- alignment --------------------------------------------------------------------------

def _fitted(n_features: int, hidden: tuple[int, ...], n_classes: int, capacity: int,
            seed: int, shift: float, scale: float) -> MLP:
    torch.manual_seed(seed)
    net = MLP(n_features, hidden, n_classes=n_classes, head_capacity=capacity).double()
    gen = torch.Generator().manual_seed(seed)
    net.scaler.update(shift + scale * torch.randn(50, n_features, generator=gen,
                                                  dtype=torch.float64))
    return net


def test_to_local_inputs_is_exact() -> None:
    gen = torch.Generator().manual_seed(5)
    w, b = torch.randn(6, 4, generator=gen, dtype=torch.float64), torch.randn(6, generator=gen,
                                                                             dtype=torch.float64)
    mp, sp = torch.randn(4, generator=gen, dtype=torch.float64), torch.rand(4, generator=gen,
                                                                           dtype=torch.float64) + .1
    ml, sl = 3 * torch.randn(4, generator=gen, dtype=torch.float64), 5 * sp.flip(0)
    x = 10 * torch.randn(20, 4, generator=gen, dtype=torch.float64)
    w2, b2 = to_local_inputs(w, b, mp, sp, ml, sl)
    torch.testing.assert_close(((x - ml) / sl) @ w2.T + b2, ((x - mp) / sp) @ w.T + b,
                               rtol=1e-12, atol=1e-10)
    w32, b32 = to_local_inputs(w.float(), b.float(), mp, sp, ml, sl)
    assert w32.dtype == b32.dtype == torch.float32


def test_align_head_by_label_not_position() -> None:
    peer_w = torch.tensor([[1.0], [2.0], [3.0], [9.0]])       # 4 rows, 3 labels
    peer_b = torch.tensor([10.0, 20.0, 30.0, 90.0])
    local_w, local_b = -torch.ones(5, 1), -torch.ones(5)      # capacity 5, 4 labels
    w, b, mask = align_head(peer_w, peer_b, ["1", 7, "x"], local_w, local_b,
                            [7, 1, "x", "new"])
    assert w.flatten().tolist() == [2, -1, 3, -1, -1]         # int 1 is not "1"
    assert b.tolist() == [20, -1, 30, -1, -1]
    assert mask.tolist() == [True, False, True, False, False]
    assert local_w.flatten().tolist() == [-1] * 5             # inputs untouched
    with pytest.raises(ValueError, match="incompatible: duplicate"):
        align_head(peer_w, peer_b, [1, 1], local_w, local_b, [1])
    with pytest.raises(ValueError, match="incompatible: head input"):
        align_head(torch.ones(2, 3), torch.ones(2), [1], local_w, local_b, [1])


def _peer_twin(local: MLP, local_labels: list, peer_labels: list, capacity: int) -> MLP:
    """A peer computing exactly ``local``'s function, with its own scaler and label order."""
    peer = _fitted(local.n_features, local.hidden, len(peer_labels), capacity, seed=99,
                   shift=-4.0, scale=0.2)
    (mp, sp), (ml, sl) = scaler_stats(peer.state_dict()), scaler_stats(local.state_dict())
    state, local_state = peer.state_dict(), local.state_dict()
    for k, v in local_state.items():
        if k.startswith("body."):
            state[k] = v.clone()
    first = "body.0" if local.hidden else "head"
    # the inverse re-expression: our first layer, acting on the peer's standardisation
    w, b = to_local_inputs(local_state[f"{first}.weight"], local_state[f"{first}.bias"],
                           ml, sl, mp, sp)
    head_w, head_b = (local_state["head.weight"], local_state["head.bias"]) if local.hidden \
        else (w, b)
    for j, label in enumerate(peer_labels):
        if label in local_labels:
            i = local_labels.index(label)
            state["head.weight"][j] = head_w[i]
            state["head.bias"][j] = head_b[i]
    if local.hidden:
        state["body.0.weight"], state["body.0.bias"] = w, b
    peer.load_state_dict(state)
    return peer


@pytest.mark.parametrize("hidden", [(8, 6), ()])
def test_twin_peer_aligns_to_local_state(hidden: tuple[int, ...]) -> None:
    local_labels = ["a", 1, "1"]
    peer_labels = ["1", "a", 1]
    local = _fitted(5, hidden, 3, capacity=4, seed=1, shift=100.0, scale=30.0)
    peer = _peer_twin(local, local_labels, peer_labels, capacity=8)
    x = 100 + 30 * torch.randn(16, 5, dtype=torch.float64)
    # the twin really is the same function, up to the label order
    torch.testing.assert_close(peer(x)[:, [1, 2, 0]], local(x))
    framed = peer_in_local_frame(peer.state_dict(), peer_labels, local.state_dict(),
                                 local_labels)
    local_state = local.state_dict()
    assert list(framed) == list(local_state)
    for k, v in local_state.items():
        assert framed[k].shape == v.shape and framed[k].dtype == v.dtype, k
        torch.testing.assert_close(framed[k], v, rtol=1e-9, atol=1e-9, msg=k)


def test_aligned_peer_predicts_like_peer_through_label_maps() -> None:
    local_labels = [3, "cat", 0, "dog"]                # the peer has never seen "dog"
    peer_labels = ["cat", "bird", 0, 3]                # we have never seen "bird"
    local = _fitted(4, (7,), 4, capacity=6, seed=2, shift=0.0, scale=1.0)
    peer = _fitted(4, (7,), 4, capacity=4, seed=3, shift=50.0, scale=9.0)
    framed = peer_in_local_frame(peer.state_dict(), peer_labels, local.state_dict(),
                                 local_labels)
    aligned = MLP(4, (7,), n_classes=4, head_capacity=6).double()
    aligned.load_state_dict(framed)
    x = 20 + 20 * torch.randn(32, 4, dtype=torch.float64)
    got, want = aligned(x), peer(x)
    for i, label in enumerate(local_labels):
        if label in peer_labels:
            torch.testing.assert_close(got[:, i], want[:, peer_labels.index(label)])
        else:                                          # the local row, kept
            assert torch.equal(framed["head.weight"][i], local.state_dict()["head.weight"][i])
    assert torch.equal(framed["head.weight"][4:], local.state_dict()["head.weight"][4:])
    for k in ("scaler.mean", "scaler.m2", "scaler.count", "n_classes_t"):
        assert torch.equal(framed[k], local.state_dict()[k])


def test_peer_in_local_frame_float16_peer_and_no_aliasing() -> None:
    local = _fitted(3, (4,), 2, capacity=2, seed=4, shift=0.0, scale=1.0).float()
    peer = _fitted(3, (4,), 2, capacity=2, seed=5, shift=1.0, scale=2.0)
    # as sent with federation.float16: weights halved, float64 scaler buffers kept
    peer_state = {k: v.half() if k.startswith(("body.", "head.")) else v
                  for k, v in peer.state_dict().items()}
    local_state = local.state_dict()
    framed = peer_in_local_frame(peer_state, [0, 1], local_state, [1, 0])
    assert {k: v.dtype for k, v in framed.items()} == {k: v.dtype for k, v in local_state.items()}
    torch.testing.assert_close(framed["head.bias"], peer_state["head.bias"].flip(0).float())
    framed["scaler.mean"].add_(1)
    assert not torch.equal(framed["scaler.mean"], local_state["scaler.mean"])


def test_incompatible_peers() -> None:
    local = _fitted(3, (4,), 2, 2, seed=6, shift=0.0, scale=1.0)
    for other in (_fitted(4, (4,), 2, 2, seed=7, shift=0.0, scale=1.0),    # n_features
                  _fitted(3, (5,), 2, 2, seed=7, shift=0.0, scale=1.0),    # width
                  _fitted(3, (4, 4), 2, 2, seed=7, shift=0.0, scale=1.0),  # depth
                  _fitted(3, (), 2, 2, seed=7, shift=0.0, scale=1.0)):
        with pytest.raises(ValueError, match="^incompatible: "):
            peer_in_local_frame(other.state_dict(), [0, 1], local.state_dict(), [0, 1])
    state = local.state_dict()
    del state["scaler.m2"]
    with pytest.raises(ValueError, match="incompatible: peer state lacks scaler.m2"):
        peer_in_local_frame(state, [0, 1], local.state_dict(), [0, 1])
