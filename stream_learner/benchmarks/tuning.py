"""``stream-learner bench tuning``: how the ``model.*`` learning defaults were chosen, on
streams no benchmark reports (:mod:`.tuning_streams`).

Every candidate is the daemon's own :class:`~stream_learner.learner.Learner` at the
shipped defaults but for a few ``model`` settings, run in this process the way the
daemon learns a live stream it keeps up with: micro-batches of ``micro_batch`` events,
each predicted and then learned (``observe``, held-out probes off) at ``model.step_size``.
River's ARF, HAT and logistic regression run test-then-train per event on the same
events in the same run, as the yardstick.  Seeds: stream seed ``stream_seed + k`` (a
real dataset: shuffled by it), model seed ``k``, river seed ``river_seed + k``.

The one bar: the shipped defaults have the highest accuracy, averaged over the tuning
streams, of the candidates.  (Every other candidate is a setting we tried; a new one
belongs here before it becomes a default.)

Options (keyword arguments of :func:`main`, or ``STREAM_LEARNER_BENCH_<NAME>`` env vars):
the fields of :class:`TuningConfig`.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .common import apply_options, machine_info, progress, write_and_report
from .drift_metrics import stats
from .quality import RIVER, river_run
from .tuning_streams import TUNING_STREAMS, TuningStream, build_tuning

DEFAULT_OUT = Path("bench-results/tuning.json")
DEFAULTS = "defaults"

CANDIDATES: dict[str, dict[str, Any]] = {
    DEFAULTS: {},
    "lr0.003-p4": {"lr": 0.003, "warmup_passes": 4},     # proposed on 2026-12-07 (sim runs), not adopted
    "lr0.003-p1": {"lr": 0.003, "warmup_passes": 1},
    "lr0.01-p4": {"lr": 0.01, "warmup_passes": 4},
    "lr0.005-p4": {"lr": 0.005, "warmup_passes": 4},
    "lr0.002-p4": {"lr": 0.002, "warmup_passes": 4},
    "lr0.003-p8": {"lr": 0.003, "warmup_passes": 8},
    # With micro_batch 1024 (a backlog's batches): the whole batch predicted at once, and
    # smaller/larger blocks than the default predict_block.
    "whole-batch": {"predict_block": 0},
    "block64": {"predict_block": 64},
    "block256": {"predict_block": 256},
}
"""Candidate id -> ``model`` settings over the shipped defaults (``lr``: model.lr, ``p``:
model.warmup_passes, ``block``: model.predict_block)."""


@dataclass
class TuningConfig:
    streams: tuple[str, ...] = TUNING_STREAMS
    candidates: tuple[str, ...] = tuple(CANDIDATES)
    seeds: int = 3
    stream_seed: int = 100
    river_seed: int = 42
    micro_batch: int = 64
    river: bool = True

    @classmethod
    def build(cls, quick: bool, **overrides: Any) -> "TuningConfig":
        cfg = cls(streams=("sine", "wine"), candidates=(DEFAULTS, "lr0.003-p4"),
                  seeds=1) if quick else cls()
        apply_options(cfg, overrides, "tuning", str_tuples=("streams", "candidates"))
        unknown = [c for c in cfg.candidates if c not in CANDIDATES]
        if unknown or DEFAULTS not in cfg.candidates:
            raise ValueError(f"tuning benchmark: candidates from {list(CANDIDATES)}, "
                             f"{DEFAULTS!r} among them (got unknown {unknown})")
        if cfg.seeds < 1 or not cfg.streams or cfg.micro_batch < 1:
            raise ValueError("tuning benchmark: seeds >= 1, some streams, micro_batch >= 1")
        return cfg


def ours(candidate: str, stream: TuningStream, cfg: TuningConfig, seed: int
         ) -> dict[str, Any]:
    """One candidate on one stream: prequential accuracy over every event."""
    import torch

    from ..config import Settings
    from ..learner import Learner

    settings = Settings(model={"device": "cpu", "seed": seed,
                               **CANDIDATES[candidate]}, probes={"per_class": 0})
    torch.manual_seed(seed)
    learner = Learner(settings)
    learner.step_size = settings.model.step_size     # a live stream the learner keeps up with
    hits = 0
    t0 = time.perf_counter()
    for i in range(0, len(stream.labels), cfg.micro_batch):
        x = learner.to_tensor(np.ascontiguousarray(stream.x[i:i + cfg.micro_batch]))
        y = learner.encode_labels(stream.labels[i:i + cfg.micro_batch])
        keep, pred, _ = learner.observe(x, y)
        if not bool(keep.all()):
            raise RuntimeError("probes held events out; the benchmark runs with probes off")
        hits += int((pred == y).sum())
    seconds = time.perf_counter() - t0
    m = settings.model
    return {"accuracy": hits / len(stream.labels), "seconds": seconds,
            "lr": m.lr, "warmup_passes": m.warmup_passes, "step_size": m.step_size,
            "predict_block": m.predict_block}


def run(cfg: TuningConfig) -> dict[str, Any]:
    results: dict[str, Any] = {"benchmark": "tuning",
                               "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                               "config": asdict(cfg), "machine": machine_info(),
                               "candidates": {c: CANDIDATES[c] for c in cfg.candidates},
                               "runs": [], "streams": {}}
    wall0 = time.perf_counter()
    for name in cfg.streams:
        for k in range(cfg.seeds):
            stream = build_tuning(name, cfg.stream_seed + k)
            results["streams"].setdefault(name, stream.description)
            row: dict[str, Any] = {"stream": name, "seed": k, "events": len(stream.labels),
                                   "ours": {c: ours(c, stream, cfg, k) for c in cfg.candidates}}
            if cfg.river:
                row["river"] = {r: river_run(r, stream.x, stream.labels, stream.feature_names,
                                             cfg.river_seed + k) for r in RIVER}
            results["runs"].append(row)
            progress(f"{name} seed {k}: " + ", ".join(
                f"{c} {v['accuracy']:.4f}" for c, v in row["ours"].items()))
    results["wall_seconds"] = time.perf_counter() - wall0
    results["summary"] = summarise(results)
    results["bars"] = bars(results)
    return results


def summarise(results: dict[str, Any]) -> dict[str, Any]:
    """Per stream: each contender's accuracy over the seeds; per candidate: its mean over
    the streams and its mean rank among the candidates (1 = best on a stream)."""
    cfg = results["config"]
    per_stream = []
    for name in cfg["streams"]:
        rows = [r for r in results["runs"] if r["stream"] == name]
        entry: dict[str, Any] = {"stream": name, "events": rows[0]["events"],
                                 "ours": {c: stats([r["ours"][c]["accuracy"] for r in rows])
                                          for c in cfg["candidates"]}}
        if all("river" in r for r in rows):
            entry["river"] = {m: stats([r["river"][m]["accuracy"] for r in rows])
                              for m in RIVER}
        per_stream.append(entry)
    overall = {}
    for c in cfg["candidates"]:
        means = [e["ours"][c]["mean"] for e in per_stream]
        ranks = [1 + sum(1 for o in cfg["candidates"] if e["ours"][o]["mean"] > e["ours"][c]["mean"])
                 for e in per_stream]
        overall[c] = {"mean_accuracy": float(np.mean(means)), "mean_rank": float(np.mean(ranks))}
    return {"streams": per_stream, "candidates": overall}


def bars(results: dict[str, Any]) -> list[dict[str, Any]]:
    overall = results["summary"]["candidates"]
    best = max(overall, key=lambda c: overall[c]["mean_accuracy"])
    ok = overall[DEFAULTS]["mean_accuracy"] >= overall[best]["mean_accuracy"]
    return [{"name": "the shipped defaults have the highest accuracy averaged over the "
                     "tuning streams", "ours": overall[DEFAULTS]["mean_accuracy"],
             "best_other": best, "best": overall[best]["mean_accuracy"],
             "verdict": "pass" if ok else "fail", "passed": ok}]


def print_report(results: dict[str, Any], out: Path) -> None:
    from rich.console import Console

    from .tuning_report import render_markdown

    console = Console()
    console.print(render_markdown(results), markup=False)
    console.print(f"wrote {out} ({results['wall_seconds']:.0f}s)")


def main(out: Path | None = None, quick: bool = False, **options: Any) -> int:
    return write_and_report(run(TuningConfig.build(quick, **options)), out or DEFAULT_OUT,
                            quick, print_report)
