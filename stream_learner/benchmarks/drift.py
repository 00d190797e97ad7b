"""``stream-learner bench drift``: accuracy, recovery, detection and cost on drifting streams.

Streams with known drift points (see :mod:`stream_learner.benchmarks.drift_streams`):
SEA (abrupt), Agrawal (abrupt and gradual), Hyperplane and RandomRBFDrift (incremental),
LEDDrift (abrupt), a recurring Agrawal stream (A, B, A, B; abrupt) and river's bundled
Phishing, Bananas and ImageSegments (no known drifts).  Every contender makes one single
test-then-train pass over the same events in the same order, in the same process:

``adapt``     ours, the daemon's defaults (replay strategy, drift detectors and every
              adaptation policy: pool, consolidate, boost);
``no-adapt``  ours with ``adapt.boost/pool/consolidate`` off: the detectors still run;
``none``      ours with no drift handling at all (no detector either): the cost baseline;
``arf``       river ``forest.ARFClassifier(seed=s)``, ``predict_one`` then ``learn_one``;
``hat``       river ``tree.HoeffdingAdaptiveTreeClassifier(seed=s)``, the same way;
``logreg``    river ``StandardScaler | OneVsRestClassifier(LogisticRegression())``.

Seeds: each of ``seeds`` repetitions k uses stream seed ``seed + k`` (synthetic streams;
the real datasets keep their data and order), model seed ``model_seed + k`` for ours and
``river_seed + k`` for river's forests and trees.  Every figure is reported as mean ± sd
over the seeds, and a verdict passes only when it holds for the mean and the gap
exceeds the larger sd (:data:`~.drift_metrics.SPREAD_RULE`); no published figure
decides anything (river's published ARF accuracies are shown beside, unused).

Ours runs the daemon's per-batch step, ``Learner.observe``, on micro-batches of
``micro_batch`` events (``model.device=cpu``, one torch thread, probes off so nothing is
held out).  Our three configurations run in lockstep, batch by batch, rotating which
goes first, each with its own torch RNG state: a burst of other load on a shared
machine slows all three alike, and their events/s compare.

Detection is counted like for like (:func:`~.drift_metrics.count_detections`): ours'
raw detections are every error-signal detection of the daemon's monitor, rises and
falls alike (``drift`` and ``improvement`` signals, at the event that fired); the
reference's are those of river's ``drift.ADWIN()`` with its defaults reading the raw
per-event error stream of ``no-adapt`` from the first event.  The one counting function
keeps, of both, only rises in error after the same ``warmup`` events (ours is also not
fed before then: ``drift.warmup_events = warmup``), and only drifts that begin after the
warm-up are scored.  A true drift is detected by the first counted detection in
``(start, min(next drift's start, end + tolerance)]``; delay = that position minus the
start; every other counted detection is a false alarm (per 100k events after warm-up).

Also measured: recovery (mean accuracy over the ``recovery_events`` events after each
drift has set in, cut at the next drift) and, on the recurring stream, accuracy after
each return of a concept vs just before it last left.

Options (keyword arguments of :func:`main`, or ``STREAM_LEARNER_BENCH_<NAME>`` env
vars): the fields of :class:`DriftConfig`, e.g. ``STREAM_LEARNER_BENCH_SEEDS=5``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..config import DriftSettings
from .common import (ADAPT_OFF, DRIFT_OFF, apply_options, machine_info, progress,
                     write_and_report)
from .drift_bars import bars, summarise
from .drift_metrics import (COUNT_RULE, REFERENCE, SPREAD_RULE, adwin_raw, detection,
                            recovery, recurring_returns)
from .drift_streams import ALL_STREAMS, REAL, Stream
from .drift_streams import build as build_stream

DEFAULT_OUT = Path("bench-results/drift.json")

OURS = ("adapt", "no-adapt", "none")
RIVER = ("arf", "hat", "logreg")
ALL_CONFIGS = OURS + RIVER
DEFAULT_WARMUP = DriftSettings().warmup_events   # the daemon's own detector warm-up


@dataclass
class DriftConfig:
    """Sizes of one run; ``quick`` shrinks them, env vars / options override."""

    streams: tuple[str, ...] = ALL_STREAMS
    configs: tuple[str, ...] = ALL_CONFIGS
    seeds: int = 3                     # repetitions; every figure is mean ± sd over them
    events: int = 20_000               # per synthetic stream
    drift_every: int = 5_000
    gradual_width: int = 1_000         # agrawal-gradual transition
    incremental_width: int = 1_000     # hyperplane / rbf: events the concept moves for
    rbf_move: float = 0.5              # rbf: distance each centroid moves per drift
    recurring_functions: tuple[int, ...] = (0, 2)   # Agrawal functions of A and B
    real_events: int = 0               # cap on the real streams (0 = the whole dataset)
    micro_batch: int = 256             # events per Learner.observe call
    recovery_events: int = 1_000
    tolerance: int = 2_500             # detection window after a drift has set in
    warmup: int = DEFAULT_WARMUP       # events before any detection counts (both detectors)
    device: str = "cpu"
    torch_threads: int = 1
    seed: int = 42                     # synthetic streams: seed + k for seed k
    model_seed: int = 0                # model.seed of ours: model_seed + k
    river_seed: int = 42               # river's ARF / HAT: river_seed + k
    step_size: int = 0                 # events per step of ours (0 = model.step_size's default)

    @classmethod
    def build(cls, quick: bool, **overrides: Any) -> "DriftConfig":
        cfg = cls(events=4_000, drift_every=1_000, gradual_width=300, incremental_width=300,
                  real_events=1_000, seeds=1) if quick else cls()
        apply_options(cfg, overrides, "drift", str_tuples=("streams", "configs"))
        unknown = [s for s in cfg.streams if s not in ALL_STREAMS]
        if unknown:
            raise ValueError(f"unknown streams {unknown}; choose from {list(ALL_STREAMS)}")
        bad = [c for c in cfg.configs if c not in ALL_CONFIGS]
        if bad:
            raise ValueError(f"unknown configurations {bad}; choose from {list(ALL_CONFIGS)}")
        if min(cfg.events, cfg.drift_every, cfg.gradual_width, cfg.incremental_width,
               cfg.micro_batch, cfg.recovery_events, cfg.tolerance, cfg.seeds) < 1:
            raise ValueError("benchmark sizes must be positive")
        if cfg.warmup < 0:
            raise ValueError("warmup: events, >= 0")
        if len(cfg.recurring_functions) != 2:
            raise ValueError("recurring_functions: two Agrawal functions (A, B)")
        return cfg


# ----------------------------------------------------------------------------- settings

def config_settings(config: str, cfg: DriftConfig, model_seed: int) -> dict[str, Any]:
    """The Settings sections of one of our configurations (recorded in the JSON)."""
    sections: dict[str, Any] = {
        "model": {"device": cfg.device, "threads": cfg.torch_threads, "seed": model_seed},
        "probes": {"per_class": 0},
        # The same warm-up the counting applies to the reference: ours' detectors are not
        # fed before it, so neither detector gets a say on the first learning curve.
        "drift": {"warmup_events": cfg.warmup},
    }
    from ..config import ModelSettings

    # A daemon that keeps up with its stream learns at its smallest step size (pacing).
    step = cfg.step_size or ModelSettings().step_size
    sections["model"].update(step_size=step, max_step_size=step)
    if config == "no-adapt":
        sections.update(ADAPT_OFF)
    if config == "none":
        sections.update(DRIFT_OFF)
    return sections


# ----------------------------------------------------------------------------- one run

class OursRun:
    """One of our configurations on one stream, fed micro-batch by micro-batch.

    Each run keeps its own torch RNG state (restored around its step, outside the timed
    part), so interleaving runs gives exactly what separate runs would."""

    def __init__(self, config: str, stream: Stream, cfg: DriftConfig, model_seed: int) -> None:
        import torch

        from ..config import Settings
        from ..learner import Learner

        self.config, self.stream, self.cfg = config, stream, cfg
        self.sections = config_settings(config, cfg, model_seed)
        torch.manual_seed(model_seed)
        self.learner = Learner(Settings(**self.sections))
        self.rng = torch.get_rng_state()
        self.correct = np.zeros(stream.n, dtype=bool)
        self.raw: list[int] = []          # every error-signal detection, rise or fall
        self.seconds = 0.0

    def step(self, i: int) -> None:
        """Test then train events ``[i, i + micro_batch)`` with the daemon's step."""
        import torch

        learner, stream = self.learner, self.stream
        xb = stream.x[i:i + self.cfg.micro_batch]
        labels = stream.labels[i:i + self.cfg.micro_batch]
        torch.set_rng_state(self.rng)
        t0 = time.perf_counter()
        x = learner.to_tensor(xb)
        y = learner.encode_labels(labels)
        keep, pred, _ = learner.observe(x, y)
        if learner.device.type == "cuda":
            torch.cuda.synchronize()
        self.seconds += time.perf_counter() - t0
        self.rng = torch.get_rng_state()
        if not bool(keep.all()):
            raise RuntimeError("probes held events out; the benchmark runs with probes off")
        self.correct[i:i + len(labels)] = (pred == y).cpu().numpy()
        for s in learner.drift.signals:
            # The monitor's own direction verdict is ignored here: the counting applies
            # one rule to ours and to the reference alike.
            if s.signal == "error" and s.kind in ("drift", "improvement"):
                self.raw.append(i + (s.at + 1 if s.at >= 0 else len(labels)))

    def result(self, seed: int) -> tuple[dict[str, Any], np.ndarray]:
        stream, cfg = self.stream, self.cfg
        report = asdict(self.learner.drift.report())
        row = _row(self.config, stream, cfg, self.correct, self.seconds, seed)
        det = None if self.config == "none" else _detection(self.raw, ~self.correct, stream,
                                                              cfg)
        row.update({
            "detection": det,
            "drift_report": {k: report[k] for k in ("drifts", "warnings", "adaptations",
                                                    "concept_reuse", "concepts_known")},
            "skipped_steps": self.learner.skipped_steps, "settings": self.sections})
        return row, self.correct


def run_ours(configs: Sequence[str], stream: Stream, cfg: DriftConfig, seed: int = 0
             ) -> dict[str, tuple[dict[str, Any], np.ndarray]]:
    """Our configurations in lockstep, micro-batch by micro-batch, rotating which goes
    first: on a shared machine a burst of other load slows all of them alike, so their
    events/s compare (the cost bar) even when the machine is busy."""
    np.random.seed(cfg.model_seed + seed)
    runs = [OursRun(c, stream, cfg, cfg.model_seed + seed) for c in configs]
    for b, i in enumerate(range(0, stream.n, cfg.micro_batch)):
        k = b % len(runs)
        for run_ in runs[k:] + runs[:k]:
            run_.step(i)
    return {r.config: r.result(seed) for r in runs}


RIVER_MODELS = {"arf": "river forest.ARFClassifier",
                "hat": "river tree.HoeffdingAdaptiveTreeClassifier",
                "logreg": "river StandardScaler | OneVsRestClassifier(LogisticRegression())"}


def river_model(config: str, seed: int) -> Any:
    from river import forest, linear_model, multiclass, preprocessing, tree

    if config == "arf":
        return forest.ARFClassifier(seed=seed)
    if config == "hat":
        return tree.HoeffdingAdaptiveTreeClassifier(seed=seed)
    # One-vs-rest: ImageSegments and LED have more than two classes.  No seed to vary:
    # its sd over seeds is that of the data (0 on the real datasets).
    return preprocessing.StandardScaler() | multiclass.OneVsRestClassifier(
        linear_model.LogisticRegression())


def run_river(config: str, stream: Stream, xs: list[dict[str, float]],
              cfg: DriftConfig, seed: int = 0) -> tuple[dict[str, Any], np.ndarray]:
    model = river_model(config, cfg.river_seed + seed)
    correct = np.zeros(stream.n, dtype=bool)
    t0 = time.perf_counter()
    for i, (x, y) in enumerate(zip(xs, stream.labels)):
        correct[i] = model.predict_one(x) == y
        model.learn_one(x, y)
    seconds = time.perf_counter() - t0
    row = _row(config, stream, cfg, correct, seconds, seed)
    row["model"] = RIVER_MODELS[config]
    row["river_seed"] = None if config == "logreg" else cfg.river_seed + seed
    return row, correct


def _row(config: str, stream: Stream, cfg: DriftConfig, correct: np.ndarray,
         seconds: float, seed: int) -> dict[str, Any]:
    rec = recovery(correct, stream.drifts, cfg.recovery_events)
    row: dict[str, Any] = {
        "config": config, "stream": stream.name, "seed": seed, "events": stream.n,
        "learn_seconds": seconds, "rate": stream.n / max(seconds, 1e-9),
        "accuracy": float(correct.mean()), "recovery": rec,
        "mean_recovery": float(np.mean(rec)) if rec else None,
    }
    if stream.segments:
        row["recurring"] = recurring_returns(correct, stream.segments, stream.n,
                                             cfg.recovery_events)
    return row


def _detection(raw: Sequence[int], errors: np.ndarray, stream: Stream,
               cfg: DriftConfig) -> dict[str, Any]:
    """Ours and the reference both go through here: one counting, one matching."""
    return detection(raw, errors, stream.drifts, stream.n, cfg.warmup, cfg.tolerance,
                     cfg.micro_batch)


def reference(stream: Stream, no_adapt_correct: np.ndarray, cfg: DriftConfig,
              seed: int = 0) -> dict[str, Any]:
    """river ADWIN defaults on the raw error stream of ``no-adapt``, from event 0."""
    t0 = time.perf_counter()
    errors = ~no_adapt_correct
    raw = adwin_raw(errors)
    seconds = time.perf_counter() - t0
    return {"config": REFERENCE, "stream": stream.name, "seed": seed, "events": stream.n,
            "seconds": seconds, "detection": _detection(raw, errors, stream, cfg)}


# ----------------------------------------------------------------------------- run

def run(cfg: DriftConfig) -> dict[str, Any]:
    import torch

    t_start = time.perf_counter()
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    results: dict[str, Any] = {"benchmark": "drift", "config": asdict(cfg),
                               "machine": machine_info(), "streams": [], "runs": [],
                               "reference": [], "count_rule": COUNT_RULE,
                               "spread_rule": SPREAD_RULE}
    if any(c in OURS for c in cfg.configs):
        # Untimed warm-up: torch's first steps in a process are several times slower.
        from .drift_streams import sea
        run_ours(["adapt"], sea(3_000, 1_000, cfg.seed + 1), cfg)
    for name in cfg.streams:
        real = name in REAL
        stream = build_stream(name, cfg)
        results["streams"].append({
            "name": stream.name, "description": stream.description, "events": stream.n,
            "features": int(stream.x.shape[1]), "classes": len(set(stream.labels)),
            "synthetic": stream.synthetic, "drifts": [asdict(d) for d in stream.drifts],
            "segments": stream.segments,
            # The real datasets keep their data and order: only the models' seeds vary.
            "stream_seeds": None if real else [cfg.seed + k for k in range(cfg.seeds)]})
        for k in range(cfg.seeds):
            if k and not real:
                stream = build_stream(name, cfg, seed=cfg.seed + k)
            _one_seed(results, stream, cfg, k)
    results["summary"] = summarise(results)
    results["bars"] = bars(results)
    results["wall_seconds"] = time.perf_counter() - t_start
    return results


def _one_seed(results: dict[str, Any], stream: Stream, cfg: DriftConfig, k: int) -> None:
    correct: dict[str, np.ndarray] = {}
    xs = stream.dicts() if any(c in RIVER for c in cfg.configs) else []
    ours = run_ours([c for c in cfg.configs if c in OURS], stream, cfg, k)
    for config in cfg.configs:
        if config in OURS:
            row, correct[config] = ours[config]
        else:
            row, correct[config] = run_river(config, stream, xs, cfg, k)
        results["runs"].append(row)
        det = (row.get("detection") or {}).get("detection")
        progress(f"{stream.name} seed {k} {config}: acc {row['accuracy']:.4f} "
                 f"{row['rate']:,.0f} ev/s" + (
                     f", {det['detections']} counted detections, {det['missed']} missed"
                     if det else ""))
    if "no-adapt" in correct:
        results["reference"].append(reference(stream, correct["no-adapt"], cfg, k))


def main(out: Path | None = None, quick: bool = False, **options: Any) -> int:
    from .drift_report import print_report

    return write_and_report(run(DriftConfig.build(quick, **options)), out or DEFAULT_OUT,
                            quick, print_report)
