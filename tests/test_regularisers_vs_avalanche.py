"""Our EWC, SI and MAS plugins against Avalanche's own code, on identical inputs.

Each test drives one small model through the same data and calls Avalanche's plugin
internals (``EWCPlugin.after_training_exp``/``before_backward``, ``MASPlugin`` likewise,
``SynapticIntelligencePlugin``'s static update functions) with a minimal fake strategy,
then compares importances, anchors and penalties.

Where the numbers must differ, by design (see each module's docstring):

* SI: Avalanche integrates the gradient of the *total* loss (its own penalty included;
  avalanche issue #106, "Problem 2") and clamps the importance to ``<= 1e-3``; we integrate the task-loss gradient and
  clamp to ``>= 0``; and Avalanche's penalty is ``lambda / 2 * ...``.  The test feeds
  Avalanche the task-loss gradient, calls its update with ``clip_to=inf``, clamps its
  importance at 0 and uses ``si_lambda = 2 * strength``: then everything matches.
  Also, on the CPU Avalanche 0.6.0's SI stores ``param.detach().cpu().flatten()``, a
  *view* of the live parameter, as the start-of-step and start-of-task weights, so the
  in-place optimiser step makes every ``delta`` 0 and the importance identically 0 (on
  CUDA ``.cpu()`` copies).  The test clones those snapshots, which is what Avalanche
  computes on a GPU.
* EWC and MAS: a task-free stream has no experience dataset, so ours estimate the
  importance on the new events of the last steps; the test gives Avalanche exactly those
  events as the experience's dataset (one DataLoader batch per step).

A class head that grows between the two "tasks" is part of the EWC and MAS tests
(Avalanche pads with zeros; so does :func:`~stream_learner.strategies.base.fit_rows`).

The behavioural tests learn task A, consolidate, learn a conflicting task B on the same
inputs through the real :class:`~stream_learner.learner.Learner`, and check that the
penalty keeps task A better than strength 0 does.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from avalanche.training.plugins import EWCPlugin, MASPlugin, SynapticIntelligencePlugin
from avalanche.training.utils import ParamData
from stream_learner.config import Settings
from stream_learner.learner import Learner
from stream_learner.model import MLP
from stream_learner.strategies.base import Step
from stream_learner.strategies.ewc import EWC
from stream_learner.strategies.mas import MAS
from stream_learner.strategies.si import SI

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIP = SynapticIntelligencePlugin
MB = 16  # events per step / per Avalanche DataLoader batch


def _net() -> MLP:
    torch.manual_seed(0)
    net = MLP(4, (8,), n_classes=2, head_capacity=2)
    net.scaler.update(torch.randn(256, 4))
    return net


def _task(seed: int, n_classes: int, n: int = 4 * MB) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    return x, torch.randint(0, n_classes, (n,), generator=g)


def _fake(net: nn.Module, data, exp: int) -> SimpleNamespace:
    """The fields of a SupervisedTemplate that Avalanche's plugins read.

    The optimiser is only used for ``zero_grad``; made here so it holds the grown head.
    """
    x, y = data
    return SimpleNamespace(
        model=net, optimizer=torch.optim.SGD(net.parameters(), lr=0.0), device="cpu", train_mb_size=MB,
        _criterion=nn.CrossEntropyLoss(), clock=SimpleNamespace(train_exp_counter=exp),
        experience=SimpleNamespace(dataset=TensorDataset(x, y, torch.zeros_like(y))),
        loss=torch.tensor(1.0, dtype=torch.float64))


def _train(net: nn.Module, data, steps: int = 20) -> None:
    """Move the parameters (plain Adam, no plugin), so the anchors differ."""
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    x, y = data
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()


def _record(plugin, net: nn.Module, data) -> None:
    """What the learner's steps leave in a plugin's recent-events ring."""
    x, y = data
    for i in range(0, len(x), MB):
        plugin.after_step(Step(net, x[i:i + MB], y[i:i + MB], n_new=len(x[i:i + MB])))


def _close(ours: torch.Tensor, theirs: torch.Tensor, what: str, rtol=1e-5, atol=1e-7) -> float:
    theirs = theirs.reshape(ours.shape).to(ours.dtype)
    assert torch.allclose(ours, theirs, rtol=rtol, atol=atol), what
    return float((ours - theirs).abs().max())


def _regulariser_vs_avalanche(ours, theirs) -> None:
    """Shared by EWC and MAS: two consolidations, a head growth between, the penalty."""
    net = _net()
    a = _task(1, 2)
    _train(net, a)
    _record(ours, net, a)
    ours.consolidate(net)
    theirs.after_training_exp(_fake(net, a, exp=0))

    net.add_classes(3)            # a new class: the head is replaced by a larger one
    b = _task(2, 3)
    _train(net, b)
    _record(ours, net, b)
    ours.consolidate(net)
    theirs.after_training_exp(_fake(net, b, exp=1))
    if isinstance(theirs, EWCPlugin):
        imp, anchor = theirs.importances[1], theirs.saved_params[1]
    else:
        imp, anchor = theirs.importance, theirs.params
    for k, p in net.named_parameters():
        _close(ours.importance[k], imp[k].data, f"importance {k}")
        _close(ours.anchor[k], anchor[k].data, f"anchor {k}", rtol=0, atol=0)
    assert ours.importance["head.weight"][2:].abs().sum() > 0   # the new class counts now

    _train(net, _task(3, 3), steps=5)
    fake = _fake(net, b, exp=2)
    theirs.before_backward(fake)
    x, y = b
    penalty = ours.penalty(Step(net, x, y, len(x)))
    assert penalty is not None and penalty.item() > 0
    _close(penalty.detach().double(), fake.loss - 1.0, "penalty", rtol=1e-6)


def test_ewc_matches_avalanche_online_ewc():
    strength, decay = 7.0, 0.9
    ours = EWC(strength, decay, batches=4)
    theirs = EWCPlugin(ewc_lambda=strength, mode="online", decay_factor=decay)
    _regulariser_vs_avalanche(ours, theirs)


def test_mas_matches_avalanche():
    strength, alpha = 3.0, 0.3
    ours = MAS(strength, alpha, batches=4)
    theirs = MASPlugin(lambda_reg=strength, alpha=alpha)
    _regulariser_vs_avalanche(ours, theirs)


def test_si_matches_avalanche_on_the_task_gradient():
    strength, eps = 0.5, 1e-3
    net = _net()
    params = [p for _, p in net.named_parameters()]
    opt = torch.optim.Adam(params, lr=0.05)
    ours = SI(strength, eps)
    ewc_data: tuple[dict, dict] = ({}, {})
    syn = {k: {} for k in ("old_theta", "new_theta", "grad", "trajectory", "cum_trajectory")}

    def unalias(store: dict) -> None:     # Avalanche's CPU snapshots are views (see above)
        for v in store.values():
            v.data = v.data.clone()

    def learn(data) -> None:
        SIP.create_syn_data(net, ewc_data, syn, set())       # before_training_exp
        SIP.init_batch(net, ewc_data, syn, set())
        unalias(ewc_data[0])
        x, y = data
        for _ in range(3):
            for i in range(0, len(x), MB):
                xb, yb = x[i:i + MB], y[i:i + MB]
                SIP.pre_update(net, syn, set())
                unalias(syn["old_theta"])
                opt.zero_grad()
                logits = net(xb)
                ce = nn.functional.cross_entropy(logits, yb)
                step = Step(net, xb, yb, len(xb), logits)
                pen = ours.penalty(step)            # None during the first task
                task_grads = torch.autograd.grad(ce, params, retain_graph=True)
                (ce if pen is None else ce + pen).backward()
                ours.after_backward(step)
                opt.step()
                ours.after_step(step)
                # Avalanche integrates p.grad: hand it the task-loss gradient (see above).
                for p, g in zip(params, task_grads):
                    p.grad = g
                SIP.post_update(net, syn, set())
        ours.consolidate(net)
        SIP.update_ewc_data(net, ewc_data, syn, float("inf"), set(), 1, eps=eps)

    diffs = []
    for seed in (1, 2):                  # the second task runs with the penalty on
        learn(_task(seed, 2))
        for k, p in net.named_parameters():
            diffs.append(_close(ours.omega[k], ewc_data[1][k].data, f"omega {k}",
                                rtol=1e-4, atol=1e-6))
            _close(ours.anchor[k], ewc_data[0][k].data, f"anchor {k}", rtol=0, atol=0)
            assert float(ours.path[k].abs().sum()) == 0.0
    assert any(bool((o < 0).any()) or bool((o > 1e-3).any()) for o in ours.omega.values()), \
        "the clamps that differ from Avalanche's were never exercised"

    _train(net, _task(3, 2), steps=5)
    clamped = {k: ParamData(k, init_tensor=v.data.clamp(min=0)) for k, v in ewc_data[1].items()}
    theirs = SIP.compute_ewc_loss(net, (ewc_data[0], clamped), set(), "cpu", lambd=2 * strength)
    x, y = _task(3, 2)
    ours_pen = ours.penalty(Step(net, x, y, len(x)))
    assert ours_pen is not None and ours_pen.item() > 0
    _close(ours_pen.detach(), theirs.detach(), "penalty", rtol=1e-5)


def test_si_skipped_step_leaves_the_path_integral_alone():
    net = _net()
    si = SI(1.0, 1e-3)
    x, y = _task(1, 2)
    step = Step(net, x, y, len(x), net(x))
    nn.functional.cross_entropy(step.logits, y).mul(float("nan")).backward()
    si.after_backward(step)                 # the learner skips: no after_step follows
    si.consolidate(net)
    assert all(bool(torch.isfinite(o).all()) and float(o.abs().sum()) == 0
               for o in si.omega.values())


# -- behaviour: the penalty protects an old task ------------------------------------------

def _forgetting(plugin: str, strength: float) -> tuple[float, float]:
    """Task A: class = x0 > 0; consolidate; task B: class = x1 > 0 (same inputs).

    Returns the accuracy on A after learning B, and on B.
    """
    settings = Settings(
        strategy={"name": "continual", "memory": "none", "plugins": (plugin,), "meta": "none",
                  "consolidate_on_new_class": False, "consolidate_on_drift": False},
        model={"device": "cpu", "hidden": (16, 16), "step_size": 32, "max_step_size": 32, "seed": 0,
               "warmup_events": 0},
        **{plugin: {"strength": strength}})
    learner = Learner(settings)
    x = np.random.default_rng(0).normal(size=(1024, 4)).astype(np.float32)
    ya, yb = (x[:, 0] > 0).astype(int).tolist(), (x[:, 1] > 0).astype(int).tolist()
    learner.learn(x[:2], [0, 1])               # both classes known from the start

    def accuracy(y: list[int]) -> float:
        return float(np.mean(np.array(learner.predict(x)[0]) == np.array(y)))

    for _ in range(3):
        learner.learn(x, ya)
    assert accuracy(ya) > 0.95
    learner.consolidate("manual")
    for _ in range(3):
        learner.learn(x, yb)
    return accuracy(ya), accuracy(yb)


@pytest.mark.parametrize("plugin, strength", [("ewc", 1e5), ("si", 10.0), ("mas", 10.0)])
def test_penalty_keeps_the_old_task(plugin, strength):
    a_free, b_free = _forgetting(plugin, 0.0)
    a_kept, _ = _forgetting(plugin, strength)
    assert b_free > 0.95 and a_free < 0.6      # without the penalty, A is forgotten
    assert a_kept > a_free + 0.15, (a_kept, a_free)
