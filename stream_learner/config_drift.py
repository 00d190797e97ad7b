"""Settings of drift detection (which river detectors watch what) and of the adaptation
to a drift (plasticity boost, consolidation, the recurring-concept pool).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .config_section import Section


DetectorName = Literal["adwin", "page_hinkley", "kswin", "ddm", "eddm", "fhddm", "hddm_a",
                       "hddm_w"]


class DriftSettings(Section):
    detector: DetectorName | Literal["none"] = Field(
        "adwin", description="river detector on the per-event error stream (0/1). ddm, eddm, "
        "fhddm, hddm_a, hddm_w are river's drift.binary detectors and also give warnings.")
    detector_params: dict[str, float] = Field(
        default_factory=dict, description="Keyword arguments of that detector (JSON in the "
        "environment), e.g. {\"delta\": 0.002}; river's defaults otherwise.")
    loss_detector: Literal["none", "adwin", "page_hinkley"] = Field(
        "adwin", description="river detector on the mean training loss of each micro-batch.")
    input_detector: Literal["none", "adwin", "page_hinkley", "kswin"] = Field(
        "adwin", description="river detector on random projections of the standardised "
        "features (covariate drift; labeled and unlabeled events).")
    input_projections: int = Field(3, ge=1, le=16, description="Random projections watched.")
    input_summary_events: int = Field(64, ge=1, description="Projections are averaged over "
                                      "this many events before the detector sees them (cost).")
    warmup_events: int = Field(2_000, ge=0, description="Learned events before detectors are "
                               "fed: the first learning curve is not a drift.")
    cooldown_events: int = Field(1_000, ge=0, description="After an adaptation, drifts are "
                                 "counted but not acted on for this many learned events.")
    new_class_grace_events: int = Field(2_000, ge=0, description="Errors on a class first seen "
                                        "fewer than this many learned events ago are not fed "
                                        "to the error detector: a new class is not a drift.")


    @model_validator(mode="after")
    def _detector_accepts_params(self) -> "DriftSettings":
        # A typo in detector_params must stop the daemon at start-up with a clear message,
        # not as a TypeError from river inside the learner.
        if self.detector != "none" and self.detector_params:
            from .drift.detectors import make
            try:
                make(self.detector, self.detector_params)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"drift.detector_params {self.detector_params} do not fit "
                                 f"river's {self.detector}: {exc}") from None
        return self


class AdaptSettings(Section):
    boost: bool = Field(True, description="Plasticity boost on a drift: a higher learning rate "
                        "and weaker regularisation that return to normal linearly.")
    boost_lr_factor: float = Field(3.0, ge=1, description="Learning-rate multiplier at the start.")
    boost_events: int = Field(2_000, ge=1, description="Learned events for the boost to fade.")
    boost_reset_optimizer: bool = Field(True, description="Also clear the optimiser's moments "
                                        "(after a long calm, Adam's tiny second moments turn "
                                        "the new, large gradients into wild steps).")
    boost_replay_reset: bool = Field(True, description="Also empty the replay memory: events "
                                     "of the old concept contradict the new one (with the "
                                     "pool on, the old concept lives on as a snapshot).")
    boost_regularisation_scale: float = Field(0.1, ge=0, le=1, description="Plugin penalties "
                                              "(EWC, SI, MAS, LwF) are multiplied by this at "
                                              "the start of a boost.")
    consolidate: bool = Field(True, description="Call the continual strategy's consolidation "
                              "(a task boundary) on a drift; see strategy.consolidate_on_drift.")
    pool: bool = Field(True, description="Recurring-concept pool: snapshot each concept; after "
                       "a drift (and every pool_check_events) switch to a snapshot that beats "
                       "the current model on the recent labeled events.")
    pool_size: int = Field(8, ge=1, description="Snapshots kept (least recently used goes).")
    pool_window: int = Field(256, ge=16, description="Recent labeled events the pool is scored "
                             "on (kept on the device, in the checkpoint).")
    pool_margin: float = Field(0.03, ge=0, le=1, description="Accuracy a snapshot must gain "
                               "over the current model on the window to be switched to.")
    pool_early_events: int = Field(32, ge=16, description="From this many labeled events "
                                   "after a drift on, a snapshot better than the model by "
                                   "three standard errors is recalled at once.")
    pool_decide_events: int = Field(256, ge=16, description="Labeled events after a drift "
                                    "by which the pool decides (the plain margin rule).")
    recall_lr_factor: float = Field(0.1, gt=0, le=1, description="After a recall the "
                                    "learning rate starts at this multiple and returns to "
                                    "normal over boost_events: the recalled model already "
                                    "fits, and full steps from an emptied replay memory "
                                    "knock it off (1 = off).")
    pool_lag_events: int = Field(256, ge=0, description="Keep a copy of the model every this "
                                 "many learned events (4 copies): a drift saves the old "
                                 "concept from the newest copy before the change began, not "
                                 "the model that has learned the new concept's first events "
                                 "(0 = save the model at the detection).")
    pool_check_events: int = Field(2_000, ge=0, description="Also score the pool every this many "
                                   "learned events (0 = only on drifts).")
