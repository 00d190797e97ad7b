"""LwF and A-GEM against avalanche's reference implementations, plus behaviour.

Equivalence, on identical models and inputs:

* :class:`~stream_learner.strategies.lwf.LwF`'s penalty equals avalanche's
  ``LearningWithoutForgetting`` (``alpha * kl_div(log_softmax(new/T), softmax(old/T),
  "batchmean")`` over the previously learned classes, no ``T**2``), value and gradient,
  also after the head grew and when the consolidation came after the head grew a row
  for a not-yet-learned class (avalanche distils only classes of past experiences).
* :func:`~stream_learner.strategies.agem.project` and the :class:`AGEM` hook give the
  gradients avalanche's ``AGEMPlugin`` writes, driven through its own hooks with a
  minimal fake strategy. The one difference is *when* ``g_ref`` is computed: avalanche
  runs ``backward`` on the memory sample in ``before_training_iteration``; ours uses
  ``autograd.grad`` in ``after_backward`` so ``.grad`` is never clobbered. Both see the
  same weights (nothing moves between those hooks), so the result is the same.

Behaviour: a projected gradient never points against ``g_ref``; NaN gradients stay NaN;
on a two-task problem both keep more task-A accuracy than plain fine-tuning.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from stream_learner.config import Settings
from stream_learner.learner import Learner
from stream_learner.model import MLP
from stream_learner.strategies.agem import AGEM, project
from stream_learner.strategies.base import Step
from stream_learner.strategies.lwf import LwF

pytestmark = pytest.mark.usefixtures("one_torch_thread")

avalanche_reg = pytest.importorskip("avalanche.training.regularization")
avalanche_agem = pytest.importorskip("avalanche.training.plugins.agem")


def _net(seed: int, n_classes: int, head_capacity: int = 8, d: int = 6) -> MLP:
    torch.manual_seed(seed)
    net = MLP(d, (16, 16), n_classes=n_classes, head_capacity=head_capacity)
    net.scaler.update(torch.randn(64, d) * 2 + 1)     # else the scaler divides by 1e-6
    return net


def _perturb(net: nn.Module, seed: int, scale: float = 0.3) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)


# -- LwF ---------------------------------------------------------------------------------
@pytest.mark.parametrize("alpha,temperature", [(1.0, 2.0), (0.5, 1.0), (3.0, 4.0)])
@pytest.mark.parametrize("grow_first", [False, True])
def test_lwf_penalty_equals_avalanche(alpha, temperature, grow_first):
    net = _net(0, n_classes=3, head_capacity=3)
    x_old = torch.randn(32, 6)
    ours = LwF(alpha, temperature)
    ours.after_step(Step(net, x_old, torch.tensor([0, 1, 2] * 10 + [0, 1]), 32))
    if grow_first:
        # A new label arrived: the head grew a row *before* the consolidation ran.
        net.add_classes(4)
    ours.consolidate(net)
    theirs = avalanche_reg.LearningWithoutForgetting(alpha, temperature)
    theirs.prev_model = copy.deepcopy(net)                 # what post_adapt stores
    theirs.prev_classes_by_task[0] = {0, 1, 2}             # classes of past experiences
    assert ours.classes == 3

    net.add_classes(5)                                     # more classes; head replaced
    _perturb(net, 1)
    x = torch.randn(40, 6)
    out = net(x)
    assert out.shape[1] == 5
    params = list(net.parameters())

    p_ours = ours.penalty(Step(net, x, torch.zeros(40, dtype=torch.int64), 24, out))
    p_theirs = theirs(x, out, net)
    assert p_ours is not None
    v_ours, v_theirs = float(p_ours.detach()), float(p_theirs.detach())
    assert v_ours > 1e-3                                   # a real, non-trivial penalty
    assert abs(v_ours - v_theirs) <= 1e-6 * max(1.0, abs(v_theirs)), (v_ours, v_theirs)
    g_ours = torch.autograd.grad(p_ours, params, retain_graph=True)
    g_theirs = torch.autograd.grad(p_theirs, params)
    for a, b in zip(g_ours, g_theirs):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_lwf_no_penalty_before_consolidation_and_zero_right_after():
    net = _net(1, n_classes=3)
    x = torch.randn(20, 6)
    lwf = LwF(1.0, 2.0)
    step = Step(net, x, torch.arange(20) % 3, 20, net(x))
    assert lwf.penalty(step) is None
    lwf.after_step(step)
    lwf.consolidate(net)
    assert not any(p.requires_grad for p in lwf.snapshot.parameters())
    assert not lwf.snapshot.training
    assert float(lwf.penalty(Step(net, x, step.y, 20, net(x))).detach()) == pytest.approx(0.0, abs=1e-7)


def test_lwf_state_round_trip_rebuilds_the_snapshot():
    net = _net(2, n_classes=3, head_capacity=3)
    x = torch.randn(20, 6)
    lwf = LwF(1.0, 2.0)
    lwf.after_step(Step(net, x, torch.arange(20) % 3, 20))
    lwf.consolidate(net)
    net.add_classes(6)
    _perturb(net, 3)
    state = lwf.state_dict()
    assert all(torch.is_tensor(v) for v in state["snapshot"]["weights"].values())
    fresh = LwF(1.0, 2.0)
    fresh.load_state_dict(state)
    out = net(x)
    step = Step(net, x, torch.zeros(20, dtype=torch.int64), 20, out)
    assert torch.equal(lwf.penalty(step), fresh.penalty(step))
    assert fresh.state_dict()["classes"] == 3 and fresh.state_dict()["seen"] == 3


# -- A-GEM -------------------------------------------------------------------------------
class _Vec(nn.Module):
    def __init__(self, g: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros_like(g))
        self.w.grad = g.clone()


def test_project_equals_avalanche_arithmetic():
    gen = torch.Generator().manual_seed(0)
    projected = 0
    for _ in range(50):
        g, g_ref = torch.randn(300, generator=gen), torch.randn(300, generator=gen)
        plugin = avalanche_agem.AGEMPlugin(patterns_per_experience=10, sample_size=10)
        plugin.buffers = [None]                        # "memory is not empty"
        plugin.reference_gradients = g_ref
        model = _Vec(g)
        plugin.after_backward(SimpleNamespace(model=model, device=torch.device("cpu")))
        ours, conflict = project(g, g_ref)
        assert torch.equal(ours, model.w.grad)         # bit for bit
        assert bool(conflict) == bool(torch.dot(g, g_ref) < 0)
        projected += int(conflict)
    assert 10 < projected < 40                         # both branches were exercised


class _FixedMemory:
    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y, self.requests = x, y, []

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        self.requests.append(n)
        return self.x[:n], self.y[:n]


@pytest.mark.parametrize("conflicting", [True, False])
def test_agem_hook_equals_avalanche_plugin(conflicting):
    base = _net(3, n_classes=4)
    x, y = torch.randn(48, 6), torch.zeros(48, dtype=torch.int64)
    # Same inputs, another label: the memory's gradient opposes the batch's.
    yr = torch.ones_like(y) if conflicting else y.clone()
    memory = _FixedMemory(x[:32], yr[:32])

    ours_net = copy.deepcopy(base)
    agem = AGEM(sample_size=32)
    out = ours_net(x)
    F.cross_entropy(out, y).backward()
    agem.after_backward(Step(ours_net, x, y, 48, out, memory))
    assert memory.requests == [32]
    assert (agem.checks, agem.projections) == (1, int(conflicting))

    their_net = copy.deepcopy(base)
    plugin = avalanche_agem.AGEMPlugin(patterns_per_experience=32, sample_size=32)
    plugin.buffers = [None]
    plugin.sample_from_memory = lambda: (memory.x, memory.y, torch.zeros(32, dtype=torch.int64))
    strategy = SimpleNamespace(model=their_net, device=torch.device("cpu"),
                               optimizer=torch.optim.SGD(their_net.parameters(), lr=0.1),
                               _criterion=F.cross_entropy)
    plugin.before_training_iteration(strategy)         # g_ref by backward, then zero_grad
    F.cross_entropy(their_net(x), y).backward()
    plugin.after_backward(strategy)

    worst = 0.0
    for (name, a), (_, b) in zip(ours_net.named_parameters(), their_net.named_parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-7, msg=name)
        worst = max(worst, float((a.grad - b.grad).abs().max()))
    assert worst < 1e-6


def test_projected_gradient_never_opposes_the_reference():
    gen = torch.Generator().manual_seed(1)
    for _ in range(200):
        g = torch.randn(100, generator=gen) * torch.rand(1, generator=gen) * 10
        g_ref = torch.randn(100, generator=gen)
        new, _ = project(g, g_ref)
        assert float(new @ g_ref) >= -1e-4 * float(g.norm() * g_ref.norm())
    # Through the hook: the rewritten .grad against g_ref recomputed on the memory.
    net = _net(4, n_classes=3)
    x, y = torch.randn(40, 6), torch.randint(0, 3, (40,))
    memory = _FixedMemory(x, (y + 1) % 3)
    F.cross_entropy(net(x), y).backward()
    AGEM(sample_size=40).after_backward(Step(net, x, y, 40, None, memory))
    params = list(net.parameters())
    ref = torch.autograd.grad(F.cross_entropy(net(memory.x), memory.y), params)
    dot = sum(float((p.grad * r).sum()) for p, r in zip(params, ref))
    assert dot >= -1e-5


def test_agem_keeps_nan_gradients_nan_and_ignores_a_nan_reference():
    g = torch.randn(50)
    nan_g = g.clone()
    nan_g[3] = float("nan")
    for bad in (nan_g, torch.full_like(g, float("inf"))):
        new, conflict = project(bad, -g)
        assert not torch.isfinite(new).all() and not bool(conflict)
    new, conflict = project(g, nan_g)                  # NaN reference: g untouched
    assert torch.equal(new, g) and not bool(conflict)
    # Through the hook, with the learner's NaN-loss trick.
    net = _net(5, n_classes=3)
    x, y = torch.randn(30, 6), torch.randint(0, 3, (30,))
    (F.cross_entropy(net(x), y) * float("nan")).backward()
    before = [p.grad.clone() for p in net.parameters()]
    agem = AGEM(sample_size=16)
    agem.after_backward(Step(net, x, y, 30, None, _FixedMemory(x, (y + 1) % 3)))
    for a, p in zip(before, net.parameters()):
        assert torch.allclose(a, p.grad, equal_nan=True)
    assert all(torch.isnan(p.grad).any() for p in net.parameters())
    assert agem.projections == 0 and agem.state_dict() == {"checks": 1, "projections": 0}


def test_agem_without_memory_is_a_no_op():
    net = _net(6, n_classes=3)
    x, y = torch.randn(10, 6), torch.randint(0, 3, (10,))
    F.cross_entropy(net(x), y).backward()
    before = [p.grad.clone() for p in net.parameters()]
    agem = AGEM(sample_size=8)
    for memory in (None, _FixedMemory(x[:0], y[:0])):
        agem.after_backward(Step(net, x, y, 10, None, memory))
    assert all(torch.equal(a, p.grad) for a, p in zip(before, net.parameters()))
    assert agem.checks == 0


# -- two tasks ---------------------------------------------------------------------------
def _two_tasks(plugins: tuple[str, ...], memory: str, seed: int = 0) -> tuple[float, float]:
    """Task A: classes 0/1 by x0; task B: classes 2/3 by x1, same input distribution.

    Returns task-A accuracy (argmax over A's two classes: the task-aware score LwF and
    A-GEM protect; class-incremental argmax over all four is ~0 for every variant)
    after A, then after B.
    """
    settings = Settings(strategy={"name": "continual", "memory": memory, "plugins": plugins,
                                  "meta": "none"},
                        model={"device": "cpu", "hidden": (32, 32), "step_size": 64,
                               "max_step_size": 64,
                               "seed": seed, "warmup_events": 0},
                        replay={"capacity": 500, "batch_size": 1})
    lrn = Learner(settings)
    if lrn.strategy.memory is not None:
        lrn.strategy.replay_batch_size = 0   # memory feeds A-GEM's g_ref only, no replay
    g = torch.Generator().manual_seed(seed)
    xa, xb = torch.randn(2000, 8, generator=g), torch.randn(2000, 8, generator=g)
    ya, yb = (xa[:, 0] > 0).long(), 2 + (xb[:, 1] > 0).long()

    def acc_a() -> float:
        with torch.no_grad():
            return float((lrn.model(xa)[:, :2].argmax(1) == ya).float().mean())

    lrn.labels.encode([0, 1])
    for _ in range(2):
        lrn.learn_tensors(xa, ya)
    after_a = acc_a()
    lrn.labels.encode([2, 3])                # new labels: a consolidation (LwF snapshot)
    for _ in range(2):
        lrn.learn_tensors(xb, yb)
    return after_a, acc_a()


def test_lwf_and_agem_keep_more_of_task_a_than_fine_tuning():
    naive_a, naive = _two_tasks((), "none")
    lwf_a, lwf = _two_tasks(("lwf",), "none")
    agem_a, agem = _two_tasks(("agem",), "reservoir")
    for learned in (naive_a, lwf_a, agem_a):
        assert learned > 0.95
    print(f"task-A accuracy after B: naive {naive:.3f}  lwf {lwf:.3f}  agem {agem:.3f}")
    assert naive < 0.8                       # the problem does make fine-tuning forget
    assert lwf > naive + 0.2
    assert agem > naive + 0.1
