"""Conformance tests every update strategy must pass (in the spirit of river's check_estimator).

They are parametrized over :data:`CONFIGS`: every strategy name, ``continual`` with
each memory, plugin and meta-update alone, and every Avalanche-backed strategy
(``avalanche:<Name>``), so a new piece gets all of them for free by joining its registry
(``STRATEGIES``, ``PLUGIN_NAMES``, ``META_NAMES``, the Avalanche backend's ``SUPPORTED``):

* it satisfies the :class:`~stream_learner.strategies.Strategy` protocol and reports
  sane :class:`~stream_learner.strategies.UpdateStats`;
* its state, inside the learner's, holds plain data only (tensors, numbers, strings,
  lists, dicts, None), so a checkpoint loads with ``torch.load(weights_only=True)``;
* a learner saved through :class:`~stream_learner.checkpoint.CheckpointStore` and
  restored into a fresh learner continues *exactly* like the original: same losses
  and bit-identical parameters after more updates on identical data;
* an empty state (before any event) round-trips too;
* the same seed gives the same result twice;
* all of it on the CPU, and on CUDA too where there is one (``<config>@cuda``);
* a step whose loss is NaN/inf is skipped and counted, the weights stay as they were,
  and learning resumes finite afterwards (the model's output is NaN for one micro-batch,
  so whatever the strategy computes from it in that batch must not poison it for good).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import numpy as np
import pytest
import torch

from stream_learner.checkpoint import CheckpointStore
from stream_learner.config import Settings
from stream_learner.learner import Learner
from stream_learner.strategies import (META_NAMES, PLUGIN_NAMES, STRATEGIES, Strategy,
                                      UpdateStats, make_strategy)
from stream_learner.strategies.avalanche_backend import PREFIX as AVALANCHE_PREFIX
from stream_learner.strategies.avalanche_backend import SUPPORTED as AVALANCHE_SUPPORTED

ATOMS = (torch.Tensor, bool, int, float, str, type(None))


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# "continual" alone is its defaults (reservoir + LwF + MER); each piece is also tested
# alone, on a bare continual (no plugins, no meta).
CONFIGS: dict[str, dict] = {name: {"name": name} for name in STRATEGIES}
_BARE = {"name": "continual", "plugins": (), "meta": "none"}
CONFIGS["continual+class_balanced"] = {**_BARE, "memory": "class_balanced"}
CONFIGS["continual+no_memory"] = {**_BARE, "memory": "none"}
for _plugin in PLUGIN_NAMES:
    CONFIGS[f"continual+{_plugin}"] = {**_BARE, "plugins": (_plugin,),
                                       "consolidate_every_events": 250}
for _meta in META_NAMES:
    CONFIGS[f"continual+{_meta}"] = {**_BARE, "meta": _meta}
CONFIGS["continual+all"] = {"name": "continual", "memory": "class_balanced",
                            "plugins": PLUGIN_NAMES, "meta": "mer",
                            "consolidate_every_events": 250}
for _avalanche in AVALANCHE_SUPPORTED:
    CONFIGS[AVALANCHE_PREFIX + _avalanche] = {"name": AVALANCHE_PREFIX + _avalanche}


# Settings that differ from _settings' defaults for one config, to keep it fast.
# avalanche:MER takes one optimiser step per event (new and replayed) per inner step, 5
# inner steps by default: one inner step and 4 replayed events per mini-batch (not 16)
# make it ~6x cheaper; it still runs the whole inner-step / within-batch Reptile /
# outer Reptile structure, with replay.
OVERRIDES: dict[str, dict] = {
    AVALANCHE_PREFIX + "MER": {"mer": {"inner_steps": 1},
                               "replay": {"capacity": 300, "batch_size": 4}},
}


# Every config runs on the CPU; on a machine with CUDA, every config runs there too
# (named "<config>@cuda").
DEVICES = ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",)
PARAMS = [n if d == "cpu" else f"{n}@{d}" for d in DEVICES for n in CONFIGS]


def _base(name: str) -> str:
    return name.split("@")[0]


def _settings(name: str) -> Settings:
    base, _, device = name.partition("@")
    return Settings(**{"strategy": CONFIGS[base],
                       "model": {"device": device or "cpu", "hidden": (16, 16),
                                 "step_size": 32, "max_step_size": 32, "seed": 3,
                                 "warmup_events": 0},
                       "replay": {"capacity": 300, "batch_size": 16},
                       **OVERRIDES.get(base, {})})


def _batches(seed: int, count: int, n: int = 100, d: int = 4, n_classes: int = 3):
    """Deterministic labeled micro-batches; labels mix ints and strings."""
    rng = np.random.default_rng(seed)
    names = [0, "b", 2, "d", "e"][:n_classes]
    w = rng.normal(size=(d, n_classes))
    for _ in range(count):
        x = rng.normal(size=(n, d)).astype(np.float32) * 3 + 1
        yield x, [names[i] for i in (x @ w).argmax(1)]


def _walk(obj, path="state"):
    """Yield (path, value) for every leaf; fail on anything that is not plain data."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            assert isinstance(k, (str, int)), f"{path}: key {k!r} is {type(k).__name__}"
            yield from _walk(v, f"{path}[{k!r}]")
    elif isinstance(obj, (list, tuple)):
        # tuple: only torch's own optimiser state uses one (Adam's betas).
        for i, v in enumerate(obj):
            yield from _walk(v, f"{path}[{i}]")
    else:
        assert isinstance(obj, ATOMS), f"{path} is a {type(obj).__name__}, not plain data"
        yield path, obj


def _identical(a: torch.Tensor, b: torch.Tensor) -> bool:
    """``torch.equal``, with NaN equal to NaN at the same places (avalanche:DER keeps NaN
    in stored logits for classes that did not exist yet) and the same dtype."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if not a.is_floating_point():
        return torch.equal(a, b)
    nan = torch.isnan(a)
    return torch.equal(nan, torch.isnan(b)) and torch.equal(a[~nan], b[~nan])


@pytest.fixture(params=PARAMS)
def name(request) -> str:
    return request.param


def test_strategy_follows_protocol(name):
    learner = Learner(_settings(name))
    strategy = make_strategy(_settings(name), learner)
    assert isinstance(strategy, Strategy)
    assert strategy.name == CONFIGS[_base(name)]["name"]
    assert learner.strategy.name == CONFIGS[_base(name)]["name"]
    for x, y in _batches(0, 3):
        stats = learner.learn(x, y)
        assert isinstance(stats, UpdateStats)
        assert stats.steps == -(-len(x) // learner.step_size)
        assert np.isfinite(stats.loss) and stats.loss >= 0
        assert stats.replayed >= 0
    empty = learner.learn(np.empty((0, 4), np.float32), [])
    assert empty.steps == 0 and empty.loss == 0.0


def test_state_is_plain_data(name, tmp_path):
    learner = Learner(_settings(name))
    for x, y in _batches(1, 4):
        learner.learn(x, y)
    state = learner.state_dict()
    leaves = list(_walk(state))
    assert leaves
    strategy_state = state["strategy"]
    assert isinstance(strategy_state, dict)
    list(_walk(strategy_state, "strategy"))
    assert all(not t.is_cuda for _, t in leaves if torch.is_tensor(t))
    path = CheckpointStore(tmp_path).save({"learner": state})
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    assert loaded["state"]["learner"]["strategy_name"] == CONFIGS[_base(name)]["name"]


def test_checkpoint_restore_continues_identically(name, tmp_path):
    settings = _settings(name)
    a = Learner(settings)
    for x, y in _batches(2, 6):
        a.learn(x, y)
    store = CheckpointStore(tmp_path / "ckpt", keep=2)
    store.save({"learner": a.state_dict()})

    data = list(_batches(3, 8, n_classes=5))          # two new classes appear too
    losses_a = [a.learn(x, y).loss for x, y in data]

    # A restart: a fresh store on the same directory, a fresh learner.
    state = CheckpointStore(tmp_path / "ckpt", keep=2).load_latest()
    assert state is not None
    b = Learner(settings)
    b.load_state_dict(state["learner"])
    losses_b = [b.learn(x, y).loss for x, y in data]

    assert losses_a == losses_b
    assert a.labels.labels == b.labels.labels
    pa = dict(a.model.named_parameters())
    pb = dict(b.model.named_parameters())
    assert pa.keys() == pb.keys()
    for key in pa:
        assert torch.equal(pa[key], pb[key]), key
    for (ka, ta), (kb, tb) in zip(a.model.named_buffers(), b.model.named_buffers()):
        assert ka == kb and torch.equal(ta, tb), ka
    # Strategy state (e.g. a replay buffer and its RNG) ends up identical too.
    sa, sb = a.strategy.state_dict(), b.strategy.state_dict()
    leaves_a, leaves_b = list(_walk(sa)), list(_walk(sb))
    assert [p for p, _ in leaves_a] == [p for p, _ in leaves_b]
    for (p, va), (_, vb) in zip(leaves_a, leaves_b):
        assert (_identical(va, vb) if torch.is_tensor(va) else va == vb), p


def test_restore_from_empty_state(name, tmp_path):
    settings = _settings(name)
    store = CheckpointStore(tmp_path)
    a = Learner(settings)
    store.save({"learner": a.state_dict()})
    data = list(_batches(4, 3))
    losses_a = [a.learn(x, y).loss for x, y in data]
    b = Learner(settings)
    b.load_state_dict(store.load_latest()["learner"])
    assert [b.learn(x, y).loss for x, y in data] == losses_a


def test_same_seed_same_result(name):
    runs = []
    for _ in range(2):
        learner = Learner(_settings(name))
        losses = [learner.learn(x, y).loss for x, y in _batches(5, 5, n_classes=4)]
        runs.append((losses, [p.detach().clone() for p in learner.model.parameters()]))
    assert runs[0][0] == runs[1][0]
    for a, b in zip(runs[0][1], runs[1][1]):
        assert torch.equal(a, b)


@contextlib.contextmanager
def _nan_outputs(model: torch.nn.Module) -> Iterator[None]:
    """Every forward of ``model`` returns NaN logits while the context is open.

    A forward hook, so it reaches every strategy, whatever its loss: the native ones
    (``learner.loss_fn``) and the Avalanche ones (their own criterion on
    ``learner.model``).  ``copy.deepcopy`` copies a module's hooks, and removing the
    handle removes the hook from ``model`` only, so the hook poisons ``model`` itself and
    never a copy of it (LwF's snapshot, taken when the poisoned batch ends with a
    consolidation, would otherwise return NaN forever).  Everything else that runs the
    model during the poisoned ``learn`` sees NaN too and must cope: a consolidation's
    importances (native EWC/MAS, avalanche:EWC), DER's stored logits, A-GEM's reference
    gradient.
    """
    def poison(module: torch.nn.Module, args: object, output: torch.Tensor) -> torch.Tensor | None:
        return output * float("nan") if module is model else None

    handle = model.register_forward_hook(poison)
    try:
        yield
    finally:
        handle.remove()


def test_a_non_finite_step_is_skipped_and_counted(name, monkeypatch):
    learner = Learner(_settings(name))
    data = list(_batches(6, 4))
    for x, y in data[:2]:
        learner.learn(x, y)
    before = [p.detach().clone() for p in learner.model.parameters()]
    skipped = learner.skipped_steps
    # Every path decides through the one shared guard (stream_learner.finite).
    import stream_learner.finite as finite
    import stream_learner.strategies.mer as mer
    verdicts: list[bool] = []
    real = finite.finite_grad_norm

    def spy(loss, grads):
        norm = real(loss, grads)
        verdicts.append(norm is not None)
        return norm

    monkeypatch.setattr(finite, "finite_grad_norm", spy)
    monkeypatch.setattr(mer, "finite_grad_norm", spy)
    with _nan_outputs(learner.model):
        poisoned = learner.learn(*data[2])
    assert learner.skipped_steps > 0
    assert verdicts.count(False) >= learner.skipped_steps - skipped, \
        "a step was skipped without the shared finiteness guard"
    # Every step of the batch was skipped and counted (meta-updates count inner steps).
    assert learner.skipped_steps - skipped >= poisoned.steps > 0
    for a, p in zip(before, learner.model.parameters()):
        assert torch.isfinite(p).all()
        assert torch.equal(a, p.detach()), "a NaN step moved the weights"
    stats = learner.learn(*data[3])
    assert np.isfinite(stats.loss)
    assert all(torch.isfinite(p).all() for p in learner.model.parameters())
