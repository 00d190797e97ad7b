"""``strategy.name: "avalanche:<Name>"``: an Avalanche strategy, driven per micro-batch.

How a micro-batch maps onto Avalanche
-------------------------------------
Avalanche's own online-CL idiom (``split_online_stream`` + ``train_epochs=1``) treats every
small chunk of the stream as one *experience*. This backend does exactly that: each
micro-batch handed to :meth:`AvalancheStrategy.update` becomes one
``DatasetExperience`` (a tensor classification dataset of the batch, task label 0,
``current_experience`` = a running counter), and the strategy's unmodified training loop
runs on it once (``template.train(exp, eval_streams=[])``):

* per *mini-batch* (``train_mb_size = model.max_step_size`` events, fixed when the
  template is built, so the daemon's pacing does not reach it; shuffled within the
  micro-batch): the template's iteration -- plugin ``before_training_iteration`` /
  ``before_forward`` / ``before_backward`` (EWC penalty, MIR retrieval, A-GEM reference
  gradient) / ``after_backward`` (A-GEM projection) / optimiser step;
* per *experience* = per micro-batch: dataset adaptation, data loader construction
  (Replay's ``ReplayDataLoader``, DER/ER-ACE/MIR replay loaders), and
  ``after_training_exp`` (buffer updates, EWC importances + anchor, A-GEM memory).

So "task boundaries" fall after every micro-batch, as in Avalanche's online scenarios.
Where a plugin's per-experience state would then grow without bound, the shim bounds it:

* ``Replay``: ``ReplayPlugin`` with a ``ReservoirSamplingBuffer(replay.capacity)`` (the
  default experience-balanced buffer would split memory over every micro-batch) and
  ``batch_size_mem = replay.batch_size``;
* ``EWC``: ``EWCPlugin`` with ``mode="online"``, ``decay_factor = ewc.decay``,
  ``ewc_lambda = ewc.strength`` (``separate`` keeps one penalty per micro-batch,
  unbounded), whose importances leave out mini-batches with non-finite gradients (as
  the native ``ewc`` does; one poisoned micro-batch would otherwise make the online
  importances, hence every later loss, NaN for good);
* ``AGEM``: ``AGEMPlugin`` whose episodic memory is one reservoir of ``replay.capacity``
  events instead of one list entry per experience; ``sample_size = agem.sample_size``;
* ``MER`` (``mer.inner_steps/beta/gamma``), ``ER_ACE``, ``DER`` (alpha 0.1, beta 0.5),
  ``MIR`` (``subsample = 2 * replay.batch_size``): Avalanche's constructors with
  ``mem_size = replay.capacity``, ``batch_size_mem = replay.batch_size``.

The learner owns the model and optimiser (built lazily on the first event, replaced when
the class head grows, rebuilt on a checkpoint restore): the template is built at the first
update and re-pointed at ``learner.model`` / ``learner.optimizer`` before every update;
Avalanche's own optimiser management (``check_model_and_optimizer``, which resets the
optimiser state) is disabled. A step whose loss or gradients are not finite is skipped and
counted in ``learner.skipped_steps``, MER's per-event inner steps included (Avalanche's MER
calls ``optimizer.step()`` itself there, so its ``_inner_updates`` is restated with the
guard; a NaN step would otherwise make every weight NaN).
DER stores logits of the width at storage time; when the head grows the stored logits are
padded with NaN and, at replay, those columns take the current model's (detached) logits,
so classes that did not exist then get no distillation term.

Costs
-----
Avalanche datasets are indexed one event at a time in Python (~25 us per event, plus
collation), every micro-batch builds datasets and loaders, and the per-experience hooks
run once per micro-batch (EWC: an extra forward/backward over the batch; DER: an extra
forward to store logits; reservoir buffers re-index themselves on every update; MIR and
A-GEM run extra forwards/backwards per step). Measured prequential rates, daemon defaults
(micro-batch 1024, step 256, MLP 64x64, replay 10k/64), one CPU thread: native replay
~35k events/s; Naive ~33k, EWC ~11k, AGEM ~7.9k, MIR ~7.7k, Replay ~5.2k, ER_ACE ~4.7k,
DER ~2.3k, MER ~250 (one optimiser step per event per inner step, as Avalanche's MER).
Avalanche is imported (~10-20 s) when the strategy is built, at start-up.

State
-----
``state_dict()`` is plain data: the micro-batch counter, Avalanche's ``Clock`` counters,
and every buffer materialised as tensors (events, classes, reservoir weights, DER logits,
per-class group order/sizes), EWC's online importances and anchor parameters, MIR's
"classes of the last mini-batch" (it excludes them from its replay loader). Loaders and
iterators are rebuilt from that state. Fresh shuffles come from torch's global RNG, which
the learner checkpoints.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torch import nn

from ..extras import require
from ..finite import gradients, step_is_finite
from .base import Batch, StrategyBase, Trainable, UpdateStats

SUPPORTED: tuple[str, ...] = ("Naive", "Replay", "EWC", "AGEM", "MER", "ER_ACE", "DER", "MIR")

PREFIX = "avalanche:"


def build(settings: Any, learner: Trainable, avalanche_name: str) -> "AvalancheStrategy":
    """The strategy for ``strategy.name == "avalanche:<avalanche_name>"``."""
    if avalanche_name not in SUPPORTED:
        raise ValueError(f"unsupported avalanche strategy {avalanche_name!r}; "
                         f"choose one of {', '.join(SUPPORTED)}")
    # Settings already checked that avalanche is installed; this import is the slow one.
    require("avalanche", "avalanche.training")
    return AvalancheStrategy(settings, learner, avalanche_name)


_PATCHED = False


def _skip_ffcv_probe() -> None:
    """Without the ``ffcv`` package no dataset can have FFCV support, yet Avalanche's
    multi-dataset loaders (ReplayDataLoader, A-GEM's) probe for it on every iteration by
    walking every leaf dataset of the replay buffer: ~0.3 s per micro-batch at a 10k
    buffer. Answer "no" directly when ``ffcv`` is not installed."""
    global _PATCHED
    if _PATCHED:
        return
    import importlib.util
    if importlib.util.find_spec("ffcv") is None:
        from avalanche.benchmarks.utils import data_loader
        data_loader.has_ffcv_support = lambda datasets: False
    _PATCHED = True


# -- plain-data (de)serialisation of Avalanche buffers ---------------------------------------

def _tensor_dataset(x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor | None = None) -> Any:
    from avalanche.benchmarks.utils.classification_dataset import (
        _make_taskaware_tensor_classification_dataset)
    ds = _make_taskaware_tensor_classification_dataset(x, y, task_labels=0)
    if logits is None:
        return ds
    from avalanche.benchmarks.utils import make_avalanche_dataset
    from avalanche.benchmarks.utils.data_attribute import TensorDataAttribute
    from avalanche.benchmarks.utils.flat_data import FlatData
    # As DER builds it (training/supervised/der.py): one logits row per event.
    rows = [row for row in logits]
    return make_avalanche_dataset(ds, data_attributes=[TensorDataAttribute(
        FlatData([rows], discard_elements_not_in_indices=True), name="logits",
        use_in_getitem=True)])


def _materialise(dataset: Any) -> list[torch.Tensor]:
    """Every element of an Avalanche dataset, collated: [x, y, t(, logits)]."""
    from torch.utils.data import DataLoader
    if len(dataset) == 0:
        return []
    return list(next(iter(DataLoader(dataset, batch_size=len(dataset), shuffle=False))))


def _dump_reservoir(buf: Any) -> dict[str, Any]:
    parts = _materialise(buf.buffer)
    state: dict[str, Any] = {"max_size": int(buf.max_size),
                             "weights": buf._buffer_weights.detach().cpu().clone()}
    if parts:
        state["x"], state["y"] = parts[0].cpu(), parts[1].cpu().long()
        if len(parts) > 3:
            state["logits"] = parts[3].cpu()
    return state


def _load_reservoir(state: dict[str, Any]) -> Any:
    from avalanche.training.storage_policy import ReservoirSamplingBuffer
    buf = ReservoirSamplingBuffer(int(state["max_size"]))
    if "x" in state:
        buf.buffer = _tensor_dataset(state["x"], state["y"], state.get("logits"))
    buf._buffer_weights = state["weights"].clone()
    return buf


def _dump_balanced(policy: Any) -> dict[str, Any]:
    return {"max_size": int(policy.max_size),
            "seen_classes": [int(c) for c in policy.seen_classes],
            "groups": [[int(c), _dump_reservoir(g)] for c, g in policy.buffer_groups.items()]}


def _load_balanced(policy: Any, state: dict[str, Any]) -> None:
    policy.max_size = int(state["max_size"])
    policy.seen_classes = set(int(c) for c in state["seen_classes"])
    policy.buffer_groups = {int(c): _load_reservoir(g) for c, g in state["groups"]}


def _pad_der_logits(policy: Any, width: int) -> None:
    """Stored DER logits narrower than ``width`` get NaN columns (filled at replay)."""
    for c, group in list(policy.buffer_groups.items()):
        state = _dump_reservoir(group)
        if "logits" in state and state["logits"].shape[1] < width:
            old = state["logits"]
            pad = torch.full((old.shape[0], width - old.shape[1]), math.nan, dtype=old.dtype)
            state["logits"] = torch.cat([old, pad], dim=1)
            policy.buffer_groups[c] = _load_reservoir(state)


# -- the shim ----------------------------------------------------------------------------------

def _template_class(name: str) -> type:
    """Avalanche's strategy class, with the learner in charge of model and optimiser."""
    from avalanche.training import supervised as sv

    # EWC: sv.EWC is sv.Naive plus an EWCPlugin; ours (_finite_ewc) is added as a plugin.
    base = {"Naive": sv.Naive, "Replay": sv.Naive, "EWC": sv.Naive, "AGEM": sv.Naive,
            "MER": sv.MER, "ER_ACE": sv.ER_ACE, "DER": sv.DER, "MIR": sv.MIR}[name]

    class Shim(base):  # type: ignore[misc, valid-type]
        _sl_learner: Any = None

        def check_model_and_optimizer(self, **kwargs: Any) -> None:
            # The learner builds, grows and restores the model and its optimiser; Avalanche's
            # update_optimizer would reset the optimiser state on the first experience.
            pass

        def optimizer_step(self) -> None:
            self._guarded_step(self.loss)

        def _guarded_step(self, loss: torch.Tensor) -> None:
            """``optimizer.step()``, unless ``loss`` or a gradient is not finite: then the
            gradients are dropped and the step is counted in ``learner.skipped_steps``."""
            if step_is_finite(loss, gradients(self.model.parameters())):
                self.optimizer.step()
                return
            self.optimizer.zero_grad(set_to_none=True)
            learner = self._sl_learner
            if learner is not None:
                learner.note_skipped_step()

        if name == "MER":
            def _inner_updates(self, **kwargs: Any) -> None:
                # Avalanche 0.6's MER._inner_updates, operation for operation, except that
                # each per-event step goes through _guarded_step (Avalanche calls
                # optimizer.step() directly, so optimizer_step never sees these steps).
                from copy import deepcopy

                from avalanche.models.utils import avalanche_forward
                for _ in range(self.n_inner_steps):
                    x, y, t = self.buffer.get_batch(self.mb_x, self.mb_y, self.mb_task_id)
                    w_bef_t = deepcopy(self.model.state_dict())
                    for idx in range(x.shape[0]):
                        self.model.zero_grad()
                        pred = avalanche_forward(self.model, x[idx].unsqueeze(0),
                                                 t[idx].unsqueeze(0))
                        loss = self._criterion(pred, y[idx].unsqueeze(0))
                        loss.backward()
                        self._guarded_step(loss)
                    # Within-batch Reptile update (a skipped step left the weights as
                    # they were, so all-skipped steps leave them bit for bit).
                    w_aft_t = self.model.state_dict()
                    self.model.load_state_dict(
                        {k: w_bef_t[k] + (w_aft_t[k] - w_bef_t[k]) * self.beta
                         for k, _ in self.model.named_parameters()}, strict=False)

        if name == "DER":
            def _before_forward(self, **kwargs: Any) -> None:
                super()._before_forward(**kwargs)
                if self.replay_loader is None:
                    return
                stored, width = self.batch_logits, self.model.n_classes
                if stored.shape[1] < width or bool(torch.isnan(stored).any()):
                    # Columns of classes unknown when stored: the current (detached)
                    # logits, so the distillation term is zero there.
                    with torch.no_grad():
                        current = self.model(self.mbatch[0][: stored.shape[0]])
                    filled = current.clone()
                    w = min(stored.shape[1], width)
                    filled[:, :w] = torch.where(torch.isnan(stored[:, :w]), current[:, :w],
                                                stored[:, :w])
                    self.batch_logits = filled

    Shim.__name__ = Shim.__qualname__ = f"Stream{name}"
    return Shim


def _stats_plugin() -> Any:
    from avalanche.core import SupervisedPlugin

    class UpdateRecorder(SupervisedPlugin):
        """Loss, iterations and replayed rows of one ``train`` call; MIR's last classes."""

        def __init__(self) -> None:
            super().__init__()
            self.reset()
            self.last_classes: list[int] = []

        def reset(self) -> None:
            self.losses: list[torch.Tensor] = []
            self.rows = 0
            self.extra_replayed = 0

        def after_training_iteration(self, strategy: Any, **kwargs: Any) -> None:
            self.losses.append(strategy.loss.detach().reshape(-1)[0])
            self.rows += int(strategy.mb_y.shape[0])
            # Third-party probe: which Avalanche template this is (ER_ACE/MER attributes).
            if getattr(strategy, "replay_loader", None) is not None:
                if hasattr(strategy, "mb_buffer_y"):          # ER_ACE
                    self.extra_replayed += int(strategy.mb_buffer_y.shape[0])
            for plugin in strategy.plugins:
                cls = type(plugin).__name__
                if cls == "MIRPlugin" and plugin.replay_loader is not None:
                    self.extra_replayed += plugin.batch_size_mem
                elif cls == "ReservoirAGEMPlugin" and plugin.buffers:
                    self.extra_replayed += plugin.sample_size
            if hasattr(strategy, "n_inner_steps"):               # MER: per inner step
                self.extra_replayed += strategy.n_inner_steps * min(
                    len(strategy.buffer), strategy.buffer.batch_size_mem)

        def after_training_exp(self, strategy: Any, **kwargs: Any) -> None:
            # Runs before MIRPlugin's hook (plugins run in order), while mb_y still exists.
            if strategy.mbatch is not None:
                self.last_classes = sorted(int(c) for c in torch.unique(strategy.mb_y).tolist())

    return UpdateRecorder()


def _finite_ewc(strength: float, decay: float) -> Any:
    from avalanche.models.utils import avalanche_forward
    from avalanche.training.plugins import EWCPlugin
    from avalanche.training.utils import zerolike_params_dict
    from torch.utils.data import DataLoader

    class FiniteEWCPlugin(EWCPlugin):
        """Online EWC whose importances leave out mini-batches whose loss or gradients are
        not finite, as the native ``ewc`` does (``anchored.mean_grad_power``)."""

        def compute_importances(self, model: nn.Module, criterion: Any, optimizer: Any,
                                dataset: Any, device: Any, batch_size: int,
                                num_workers: int = 0) -> dict[str, Any]:
            # EWCPlugin.compute_importances (Avalanche 0.6) with one change: the mean is
            # over the finite mini-batches (all of them, normally: then it is identical).
            model.eval()
            importances = zerolike_params_dict(model)
            # Third-party probe: only some Avalanche datasets define collate_fn.
            collate_fn = dataset.collate_fn if hasattr(dataset, "collate_fn") else None
            loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate_fn,
                                num_workers=num_workers)
            used = 0
            for batch in loader:
                x, y, task_labels = batch[0], batch[1], batch[-1]
                x, y = x.to(device), y.to(device)
                optimizer.zero_grad()
                out = avalanche_forward(model, x, task_labels)
                loss = criterion(out, y)
                loss.backward()
                if not step_is_finite(loss, gradients(model.parameters())):
                    continue
                used += 1
                for (k1, p), (k2, imp) in zip(model.named_parameters(), importances.items()):
                    assert k1 == k2
                    if p.grad is not None:
                        imp.data += p.grad.data.clone().pow(2)
            if used:
                for imp in importances.values():
                    imp.data /= float(used)
            model.train()
            return importances

    return FiniteEWCPlugin(strength, mode="online", decay_factor=decay)


def _reservoir_agem(capacity: int, sample_size: int) -> Any:
    from avalanche.benchmarks.utils.data_loader import GroupBalancedInfiniteDataLoader
    from avalanche.training.plugins import AGEMPlugin
    from avalanche.training.storage_policy import ReservoirSamplingBuffer

    class ReservoirAGEMPlugin(AGEMPlugin):
        """A-GEM whose episodic memory is one reservoir, not one entry per experience."""

        def __init__(self) -> None:
            super().__init__(patterns_per_experience=capacity, sample_size=sample_size)
            self.storage = ReservoirSamplingBuffer(capacity)

        def update_memory(self, dataset: Any, num_workers: int = 0, **kwargs: Any) -> None:
            self.storage.update_from_dataset(dataset)
            self.rebuild_loader()

        def rebuild_loader(self) -> None:
            if len(self.storage.buffer) == 0:
                self.buffers, self.buffer_dataloader, self.buffer_dliter = [], None, iter([])
                return
            self.buffers = [self.storage.buffer]
            self.buffer_dataloader = GroupBalancedInfiniteDataLoader(
                self.buffers, batch_size=self.sample_size, num_workers=0, pin_memory=False,
                persistent_workers=False)
            self.buffer_dliter = iter(self.buffer_dataloader)

    return ReservoirAGEMPlugin()


class AvalancheStrategy(StrategyBase):
    """One Avalanche strategy behind the :class:`~stream_learner.strategies.Strategy` protocol."""

    def __init__(self, settings: Any, learner: Trainable, avalanche_name: str) -> None:
        super().__init__()
        self.name = PREFIX + avalanche_name
        self.avalanche_name = avalanche_name
        self.settings = settings
        self.learner = learner
        self.template: Any = None
        self.recorder: Any = None
        self.experiences = 0           # micro-batches trained (= Avalanche experiences)
        self._n_classes = 0
        # Import Avalanche (~10-20 s) now, at start-up, not on the first micro-batch.
        _template_class(avalanche_name)

    # -- construction / binding --------------------------------------------------------------
    def _make_template(self) -> Any:
        from avalanche.training.plugins import ReplayPlugin
        from avalanche.training.storage_policy import ReservoirSamplingBuffer

        _skip_ffcv_probe()
        s, lrn = self.settings, self.learner
        cap, bsm = s.replay.capacity, s.replay.batch_size
        self.recorder = _stats_plugin()
        plugins: list[Any] = [self.recorder]
        kw: dict[str, Any] = {}
        name = self.avalanche_name
        if name == "Replay":
            plugins.append(ReplayPlugin(mem_size=cap, batch_size=lrn.step_size,
                                        batch_size_mem=bsm,
                                        storage_policy=ReservoirSamplingBuffer(cap)))
        elif name == "EWC":
            plugins.append(_finite_ewc(s.ewc.strength, s.ewc.decay))
        elif name == "AGEM":
            plugins.append(_reservoir_agem(cap, s.agem.sample_size))
        elif name == "MER":
            kw = {"mem_size": cap, "batch_size_mem": bsm, "n_inner_steps": s.mer.inner_steps,
                  "beta": s.mer.beta, "gamma": s.mer.gamma}
        elif name in ("ER_ACE", "DER"):
            kw = {"mem_size": cap, "batch_size_mem": bsm}
        elif name == "MIR":
            kw = {"mem_size": cap, "batch_size_mem": bsm, "subsample": 2 * bsm}
        cls = _template_class(name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            template = cls(model=lrn.model, optimizer=lrn.optimizer,
                           criterion=nn.CrossEntropyLoss(), train_mb_size=lrn.step_size,
                           train_epochs=1, eval_mb_size=lrn.step_size, device=lrn.device,
                           plugins=plugins, evaluator=None, **kw)
        template._sl_learner = lrn
        return template

    def _bind(self) -> Any:
        """The template, built on first use and pointed at the learner's current model."""
        model, optimizer = self.learner.model, self.learner.optimizer
        if model is None or optimizer is None:
            raise RuntimeError("the learner has no model yet")
        if self.template is None:
            self.template = self._make_template()
        t = self.template
        t.model, t.optimizer = model, optimizer
        n = int(model.n_classes)
        if n > self._n_classes:
            if self.avalanche_name == "DER":
                _pad_der_logits(t.storage_policy, n)
            self._n_classes = n
        return t

    # -- Strategy protocol ----------------------------------------------------------------------
    def update(self, batch: Batch) -> UpdateStats:
        n = len(batch)
        if n == 0:
            return UpdateStats(0.0, 0)
        from avalanche.benchmarks import DatasetExperience

        template = self._bind()
        data = _tensor_dataset(batch.x.detach().cpu(), batch.y.detach().cpu())
        exp = DatasetExperience(dataset=data, current_experience=self.experiences)
        self.recorder.reset()
        with warnings.catch_warnings(record=True) as caught:
            # Avalanche's own plugins call its deprecated ExemplarsBuffer.update, and its
            # decorator forces that warning on at every call: drop those, pass others on.
            template.train(exp, eval_streams=[])
        for w in caught:
            if not issubclass(w.category, DeprecationWarning):
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        self.experiences += 1
        rec = self.recorder
        loss = float(torch.stack(rec.losses).mean()) if rec.losses else 0.0
        return UpdateStats(loss=loss, steps=len(rec.losses),
                           replayed=max(0, rec.rows - n) + rec.extra_replayed)

    def memory_events(self) -> int:
        """Rows in the Avalanche storage policy the strategy replays from."""
        t = self.template
        if t is None:
            return 0
        policy = {"Replay": lambda: self._plugin("ReplayPlugin").storage_policy,
                  "AGEM": lambda: self._plugin("ReservoirAGEMPlugin").storage,
                  "MER": lambda: t.buffer.storage_policy,
                  "ER_ACE": lambda: t.storage_policy, "DER": lambda: t.storage_policy,
                  "MIR": lambda: self._plugin("MIRPlugin").storage_policy,
                  }.get(self.avalanche_name)
        return 0 if policy is None else len(policy().buffer)

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"avalanche": self.avalanche_name, "experiences": self.experiences,
                                 "n_classes": self._n_classes}
        t = self.template
        if t is None:
            return state
        state["clock"] = {k: int(v) for k, v in vars(t.clock).items() if isinstance(v, int)}
        state["last_classes"] = list(self.recorder.last_classes)
        name = self.avalanche_name
        if name == "Replay":
            state["buffer"] = _dump_reservoir(self._plugin("ReplayPlugin").storage_policy)
        elif name == "AGEM":
            state["buffer"] = _dump_reservoir(self._plugin("ReservoirAGEMPlugin").storage)
        elif name == "MER":
            state["buffer"] = _dump_reservoir(t.buffer.storage_policy)
        elif name in ("ER_ACE", "DER"):
            state["buffer"] = _dump_balanced(t.storage_policy)
        elif name == "MIR":
            state["buffer"] = _dump_balanced(self._plugin("MIRPlugin").storage_policy)
        elif name == "EWC":
            ewc = self._plugin("FiniteEWCPlugin")
            state["ewc"] = {
                "importances": [[int(k), {n: p.data.detach().cpu().clone() for n, p in d.items()}]
                                for k, d in ewc.importances.items()],
                "saved_params": [[int(k), {n: p.data.detach().cpu().clone() for n, p in d.items()}]
                                 for k, d in ewc.saved_params.items()]}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("avalanche") != self.avalanche_name:
            raise ValueError(f"checkpoint holds avalanche strategy {state.get('avalanche')!r}, "
                             f"config asks for {self.avalanche_name!r}")
        self.experiences = int(state["experiences"])
        self._n_classes = int(state.get("n_classes", 0))
        if "clock" not in state:               # saved before the first update
            self.template = None
            return
        self.template = None
        t = self._bind()
        for k, v in state["clock"].items():
            setattr(t.clock, k, int(v))
        self.recorder.last_classes = [int(c) for c in state["last_classes"]]
        name = self.avalanche_name
        if name == "Replay":
            self._plugin("ReplayPlugin").storage_policy = _load_reservoir(state["buffer"])
        elif name == "AGEM":
            agem = self._plugin("ReservoirAGEMPlugin")
            agem.storage = _load_reservoir(state["buffer"])
            agem.rebuild_loader()
        elif name == "MER":
            t.buffer.storage_policy = _load_reservoir(state["buffer"])
        elif name in ("ER_ACE", "DER"):
            _load_balanced(t.storage_policy, state["buffer"])
        elif name == "MIR":
            self._restore_mir(state["buffer"])
        elif name == "EWC":
            self._restore_ewc(state["ewc"])

    # -- helpers --------------------------------------------------------------------------------
    def _plugin(self, cls_name: str) -> Any:
        for p in self.template.plugins:
            if type(p).__name__ == cls_name:
                return p
        raise LookupError(cls_name)

    def _restore_ewc(self, state: dict[str, Any]) -> None:
        from collections import defaultdict

        from avalanche.training.utils import ParamData
        ewc = self._plugin("FiniteEWCPlugin")
        device = self.learner.device

        def params(entries: list) -> defaultdict:
            out: defaultdict = defaultdict(dict)
            for k, tensors in entries:
                out[int(k)] = {n: ParamData(n, init_tensor=v.to(device), device=device)
                               for n, v in tensors.items()}
            return out
        ewc.importances = params(state["importances"])
        ewc.saved_params = params(state["saved_params"])

    def _restore_mir(self, state: dict[str, Any]) -> None:
        # MIRPlugin.after_training_exp built its loader over the classes *not* in the last
        # mini-batch; rebuild it the same way.
        from avalanche.benchmarks.utils import concat_datasets
        from avalanche.training.utils import cycle
        mir = self._plugin("MIRPlugin")
        _load_balanced(mir.storage_policy, state)
        last = set(self.recorder.last_classes)
        buffer = concat_datasets([g.buffer for c, g in mir.storage_policy.buffer_groups.items()
                                  if int(c) not in last])
        mir.replay_loader = None
        if len(buffer) > mir.batch_size_mem:
            mir.replay_loader = cycle(torch.utils.data.DataLoader(
                buffer, batch_size=mir.subsample, shuffle=True))

