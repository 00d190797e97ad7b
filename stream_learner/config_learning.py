"""Settings of the learner: the model, the strategy and its plugins, replay and probes.

One module per concept of :class:`~stream_learner.config.Settings`; the field order and
descriptions are the generated docs/configuration.md's.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from .config_section import Section
from .extras import MissingExtra, require_installed


class ModelSettings(Section):
    hidden: tuple[int, ...] = Field((64, 64), description="Hidden layer sizes of the MLP.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto = cuda if present.")
    optimizer: Literal["adam", "sgd"] = Field("adam", description="Optimiser for online steps.")
    lr: float = Field(1e-2, gt=0, description="Learning rate.")
    step_size: int = Field(8, ge=1, description="The fewest new events per gradient step, "
                           "used while the stream leaves the learner idle: spare compute "
                           "becomes more, smaller steps. See learn_budget.")
    max_step_size: int = Field(256, ge=1, description="The most new events per gradient step: "
                               "a backlog that step_size cannot clear within "
                               "catch_up_seconds, or learning over learn_budget, grows the "
                               "step size up to this. Equal to step_size: a fixed step size.")
    catch_up_seconds: float = Field(300.0, gt=0, description="Under backlog (full "
                                    "micro-batches) a backlog must be cleared this long "
                                    "after it was first seen: the step stays at step_size "
                                    "while the lag fits in the time left at the learner's "
                                    "measured rate at step_size; beyond it, the step grows "
                                    "by the power of two that clears the lag in time (past "
                                    "the deadline: max_step_size).")
    learn_budget: float = Field(0.5, gt=0, le=1, description="Share of wall time the learner "
                                "may spend learning; the step size shrinks while it spends "
                                "less than budget/2.5 and grows above the budget.")
    warmup_events: int = Field(4096, ge=0, description="Until this many events are learned, "
                               "chunks are smaller (half the events seen so far), so a new "
                               "model is useful after a few events, not a whole batch.")
    predict_block: int = Field(128, ge=0, description="A micro-batch is tested then trained "
                               "in blocks of this many events, so no prediction comes from a "
                               "model more than this many events old: a backlog's batch of "
                               "1024 predicted whole scored worse on a stream the model is "
                               "still learning (chosen on bench tuning's streams). Never "
                               "below the current step size; 0: the whole batch at once.")
    warmup_passes: int = Field(1, ge=1, description="replay: gradient steps per chunk until "
                               "warmup_events are learned, each with a fresh replay sample, "
                               "so a young model learns its first events faster (small "
                               "datasets); afterwards one. 1: one step throughout (see bench tuning).")
    max_label_length: int = Field(256, ge=1, description="Longer string labels are rejected "
                                  "as bad_label.")
    max_classes: int = Field(1000, ge=2, description="Classes the model may know; an event "
                             "whose label would add one more is rejected as "
                             "too_many_classes, and peers cannot add more either.")
    max_abs_feature: float = Field(1e9, gt=0, description="Events with a feature of larger "
                                   "magnitude are rejected as out_of_range.")
    scaler_clip_sigmas: float = Field(6.0, ge=0, description="The input standardiser counts "
                                      "a value beyond this many standard deviations as the "
                                      "bound, so one extreme event cannot rescale a feature "
                                      "for good; 0 keeps plain running moments.")
    n_features: int | None = Field(None, ge=1, description="Feature count; learned from the "
                                                           "first valid event when unset.")
    feature_names: tuple[str, ...] | None = Field(
        None, description="Order for object-valued features; learned from the first event.")
    seed: int = Field(0, description="Seed for weights, replay sampling and RNG state.")
    worker: Literal["process", "inline"] = Field(
        "process", description="process: the model learns in a worker process while the "
        "daemon consumes the next batch (two cores; kafka-python's record parsing holds "
        "the GIL, so a thread cannot overlap). inline: in the daemon's own process.")
    threads: int = Field(1, ge=0, description="torch CPU threads (0 = torch's default). One "
                                              "leaves the other cores to Kafka's IO thread; "
                                              "the MLP is too small to gain from more.")

    @model_validator(mode="after")
    def _step_range(self) -> "ModelSettings":
        if self.max_step_size < self.step_size:
            raise ValueError(f"model.max_step_size ({self.max_step_size}) is below "
                             f"model.step_size ({self.step_size})")
        return self


class StrategySettings(Section):
    name: str = Field(
        "replay", description="naive: new events only. replay: reservoir experience replay. "
        "continual: composed from memory + plugins + meta below. avalanche:<Name> (Naive, "
        "Replay, EWC, AGEM, MER, ER_ACE, DER, MIR): an Avalanche strategy per micro-batch.")
    memory: Literal["none", "reservoir", "class_balanced"] = Field(
        "reservoir", description="continual: the replay buffer (on the device).")
    # The defaults (reservoir + LwF + one-step MER) are the forgetting-aware default that
    # `bench continual` judges: see MERSettings for how they were picked.
    plugins: tuple[Literal["ewc", "si", "mas", "lwf", "agem"], ...] = Field(
        ("lwf",), description="continual: regularisers/projections, hooks run in this order.")
    meta: Literal["none", "mer", "lamaml"] = Field(
        "mer", description="continual: meta-update replacing the plain gradient step.")
    consolidate_every_events: int = Field(
        0, ge=0, description="continual: a task boundary every K learned events (0 = off).")
    consolidate_on_new_class: bool = Field(
        True, description="continual: a task boundary when a new label appears.")
    consolidate_on_drift: bool = Field(
        True, description="continual: a task boundary on a drift signal.")

    @field_validator("name")
    @classmethod
    def _known_strategy(cls, v: str) -> str:
        # Light import: avalanche itself loads only when the strategy is built.
        from .strategies.avalanche_backend import PREFIX, SUPPORTED
        if v in ("naive", "replay", "continual"):
            return v
        if v.startswith(PREFIX) and v[len(PREFIX):] in SUPPORTED:
            # Checked here, at start-up, so a core-only install fails with one line
            # instead of the learner worker's traceback at the first event.
            try:
                require_installed("avalanche", "avalanche")
            except MissingExtra as exc:
                raise ValueError(f"{v}: {exc}") from None
            return v
        raise ValueError(f"unknown strategy {v!r}: choose naive, replay, continual or "
                         f"avalanche:<Name> with Name in {', '.join(SUPPORTED)}")


class EWCSettings(Section):
    strength: float = Field(100.0, ge=0, description="Penalty strength.")
    decay: float = Field(0.9, ge=0, le=1, description="Online EWC: old importance is "
                         "multiplied by this at each consolidation (1 = keep all).")
    fisher_batches: int = Field(8, ge=1, description="Replay/recent batches used to "
                                "estimate the Fisher diagonal at a consolidation.")


class SISettings(Section):
    strength: float = Field(1.0, ge=0, description="Penalty strength (c).")
    eps: float = Field(1e-3, gt=0, description="Damping of the importance denominator (xi).")


class MASSettings(Section):
    strength: float = Field(1.0, ge=0, description="Penalty strength.")
    alpha: float = Field(0.5, ge=0, le=1, description="Weight of old importance when "
                         "merged with the new one at a consolidation.")


class LwFSettings(Section):
    alpha: float = Field(1.0, ge=0, description="Distillation loss weight.")
    temperature: float = Field(2.0, gt=0, description="Softmax temperature.")


class AGEMSettings(Section):
    sample_size: int = Field(64, ge=1, description="Replayed events in the reference gradient.")


class MERSettings(Section):
    # From a `bench continual` grid of MER(1 inner step) + LwF over all four streams
    # (inner_lr 0.14-0.3 x beta 0.5-1 x LwF alpha 1-2): the net step beta * inner_lr ~ 0.2
    # matters most; these had the best mean final accuracy with beta < 1 (0.886). Five
    # inner steps (inner_lr 0.1, beta 0.5) gain ~0.01-0.05 more for 3-5x the cost.
    beta: float = Field(0.8, gt=0, le=1, description="Within-batch Reptile step.")
    gamma: float = Field(1.0, gt=0, le=1, description="Across-batch Reptile step.")
    inner_steps: int = Field(1, ge=1, description="Inner batches per chunk, each with a fresh "
                             "replay sample.")
    inner_lr: float = Field(0.25, gt=0, description="Inner SGD learning rate.")
    mini_batches: int = Field(4, ge=1, description="Sequential SGD steps per inner batch: the "
                              "chunk and its replay sample are split into this many parts.")


class LaMAMLSettings(Section):
    alpha_init: float = Field(0.1, gt=0, description="Initial per-parameter learning rate.")
    lr_alpha: float = Field(0.3, gt=0, description="Learning rate of the learning rates.")
    inner_steps: int = Field(3, ge=1, description="Inner steps per chunk.")


class ReplaySettings(Section):
    capacity: int = Field(10_000, ge=1, description="Reservoir size in events (on the device).")
    batch_size: int = Field(64, ge=1, description="Replayed events mixed into each step.")


class ProbeSettings(Section):
    per_class: int = Field(32, ge=0, description="Events held out (never learned) per class "
                           "and concept period to measure forgetting (0 = off).")
    max_probes: int = Field(16, ge=0, description="Probe sets kept; the oldest is dropped.")
    eval_every: int = Field(5_000, ge=1, description="Re-score every probe after this many "
                            "learned events (one forward pass over all probes).")
