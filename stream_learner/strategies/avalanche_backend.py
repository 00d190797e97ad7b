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

import warnings
from typing import Any

import torch
from torch import nn

from .avalanche_buffers import (dump_balanced, dump_reservoir, load_balanced,
                                load_reservoir, pad_der_logits, tensor_dataset)
from .avalanche_plugins import finite_ewc, reservoir_agem, stats_plugin
from .avalanche_shim import skip_ffcv_probe, template_class
from ..extras import require
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
        template_class(avalanche_name)

    # -- construction / binding --------------------------------------------------------------
    def _make_template(self) -> Any:
        from avalanche.training.plugins import ReplayPlugin
        from avalanche.training.storage_policy import ReservoirSamplingBuffer

        skip_ffcv_probe()
        s, lrn = self.settings, self.learner
        cap, bsm = s.replay.capacity, s.replay.batch_size
        self.recorder = stats_plugin()
        plugins: list[Any] = [self.recorder]
        kw: dict[str, Any] = {}
        name = self.avalanche_name
        if name == "Replay":
            plugins.append(ReplayPlugin(mem_size=cap, batch_size=lrn.step_size,
                                        batch_size_mem=bsm,
                                        storage_policy=ReservoirSamplingBuffer(cap)))
        elif name == "EWC":
            plugins.append(finite_ewc(s.ewc.strength, s.ewc.decay))
        elif name == "AGEM":
            plugins.append(reservoir_agem(cap, s.agem.sample_size))
        elif name == "MER":
            kw = {"mem_size": cap, "batch_size_mem": bsm, "n_inner_steps": s.mer.inner_steps,
                  "beta": s.mer.beta, "gamma": s.mer.gamma}
        elif name in ("ER_ACE", "DER"):
            kw = {"mem_size": cap, "batch_size_mem": bsm}
        elif name == "MIR":
            kw = {"mem_size": cap, "batch_size_mem": bsm, "subsample": 2 * bsm}
        cls = template_class(name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            template = cls(model=lrn.model, optimizer=lrn.optimizer,
                           criterion=nn.CrossEntropyLoss(), train_mb_size=lrn.step_size,
                           train_epochs=1, eval_mb_size=lrn.step_size, device=lrn.device,
                           plugins=plugins, evaluator=None, **kw)
        template.sl_learner = lrn
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
                pad_der_logits(t.storage_policy, n)
            self._n_classes = n
        return t

    # -- Strategy protocol ----------------------------------------------------------------------
    def update(self, batch: Batch) -> UpdateStats:
        n = len(batch)
        if n == 0:
            return UpdateStats(0.0, 0)
        from avalanche.benchmarks import DatasetExperience

        template = self._bind()
        data = tensor_dataset(batch.x.detach().cpu(), batch.y.detach().cpu())
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
            state["buffer"] = dump_reservoir(self._plugin("ReplayPlugin").storage_policy)
        elif name == "AGEM":
            state["buffer"] = dump_reservoir(self._plugin("ReservoirAGEMPlugin").storage)
        elif name == "MER":
            state["buffer"] = dump_reservoir(t.buffer.storage_policy)
        elif name in ("ER_ACE", "DER"):
            state["buffer"] = dump_balanced(t.storage_policy)
        elif name == "MIR":
            state["buffer"] = dump_balanced(self._plugin("MIRPlugin").storage_policy)
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
            self._plugin("ReplayPlugin").storage_policy = load_reservoir(state["buffer"])
        elif name == "AGEM":
            agem = self._plugin("ReservoirAGEMPlugin")
            agem.storage = load_reservoir(state["buffer"])
            agem.rebuild_loader()
        elif name == "MER":
            t.buffer.storage_policy = load_reservoir(state["buffer"])
        elif name in ("ER_ACE", "DER"):
            load_balanced(t.storage_policy, state["buffer"])
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
        load_balanced(mir.storage_policy, state)
        last = set(self.recorder.last_classes)
        buffer = concat_datasets([g.buffer for c, g in mir.storage_policy.buffer_groups.items()
                                  if int(c) not in last])
        mir.replay_loader = None
        if len(buffer) > mir.batch_size_mem:
            mir.replay_loader = cycle(torch.utils.data.DataLoader(
                buffer, batch_size=mir.subsample, shuffle=True))

