"""One frozen settings object, read from a YAML file and ``STREAM_LEARNER_`` env vars.

Precedence, highest first: keyword arguments, environment, YAML file, defaults.
Nested fields use ``__`` in env names: ``STREAM_LEARNER_KAFKA__TOPIC=clicks``.

>>> s = Settings(kafka={"topic": "clicks"})
>>> s.kafka.topic, s.batch.size
('clicks', 1024)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict,
                               YamlConfigSettingsSource)

from .extras import MissingExtra, require_installed

ENV_PREFIX = "STREAM_LEARNER_"


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class KafkaSettings(_Section):
    bootstrap_servers: str | None = Field(
        None, description="Comma-separated host:port list. Required by `run`; "
                          "the embedded broker is never used implicitly.")
    topic: str = Field("events", description="Topic of labeled/unlabeled events to learn from.")
    group_id: str = Field("stream-learner", description="Consumer group; replicas split partitions.")
    dlq_topic: str = Field("events.dlq", description="Dead-letter topic for rejected events.")
    predictions_topic: str = Field("events.predictions",
                                   description="Where predictions for `label: null` events go.")
    predictions_top_k: int = Field(1, ge=1, le=100, description="Above 1, each prediction "
                                   "record also lists the top-k labels with probabilities.")
    client_id: str = Field("stream-learner", description="Kafka client id.")
    auto_offset_reset: Literal["earliest", "latest"] = Field(
        "earliest", description="Where to start when neither a checkpoint nor a commit exists.")
    session_timeout_ms: int = Field(10_000, ge=1000, description="Group session timeout.")
    heartbeat_interval_ms: int = Field(3_000, ge=100, description="Group heartbeat interval.")
    max_event_bytes: int = Field(1_048_576, ge=64,
                                 description="Larger message values are rejected as too_large.")
    check_crcs: bool = Field(True, description="Verify record CRCs (needs crc32c to be fast).")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="Kafka security protocol.")
    sasl_mechanism: str | None = Field(None, description="e.g. PLAIN, SCRAM-SHA-512.")
    sasl_plain_username: str | None = Field(None, description="SASL user name.")
    sasl_plain_password: str | None = Field(None, description="SASL password.")
    ssl_cafile: str | None = Field(None, description="CA bundle for SSL.")
    bootstrap_timeout_ms: int = Field(
        5_000, ge=100, description="One attempt to bootstrap a client; start-up retries "
        "with backoff, so a SIGTERM while Kafka is slow or away is served within this.")
    max_id_length: int = Field(256, ge=1, description="Longer event ids are rejected as "
                               "bad_metadata.")
    max_event_age_seconds: float = Field(365 * 86400.0, gt=0, description="An event `ts` "
                                         "older than this is rejected as bad_metadata.")
    max_event_future_seconds: float = Field(86400.0, gt=0, description="An event `ts` this "
                                            "far ahead of the clock is rejected as "
                                            "bad_metadata.")
    max_pending_bytes: int = Field(256 * 1024 * 1024, ge=1024, description="Consumption "
                                   "pauses while DLQ and prediction records of this many "
                                   "bytes wait for the broker's acknowledgement.")
    output_retry_seconds: float = Field(30.0, gt=0, description="A DLQ or prediction record "
                                        "Kafka refuses permanently (too large, not "
                                        "authorised, unknown topic) is retried this long, "
                                        "then spilled to undeliverable.jsonl beside the "
                                        "checkpoints.")

    def client_options(self) -> dict[str, Any]:
        """Connection options shared by every kafka-python client we create."""
        opts: dict[str, Any] = {"bootstrap_servers": self.bootstrap_servers,
                                "client_id": self.client_id,
                                "security_protocol": self.security_protocol,
                                # kafka-python's default is 30 s per client, during which
                                # start-up cannot look at the stop flag.
                                "bootstrap_timeout_ms": self.bootstrap_timeout_ms}
        for key in ("sasl_mechanism", "sasl_plain_username", "sasl_plain_password", "ssl_cafile"):
            if getattr(self, key) is not None:
                opts[key] = getattr(self, key)
        return opts


class BatchSettings(_Section):
    size: int = Field(1024, ge=1, description="Events per micro-batch (upper bound).")
    max_wait_ms: int = Field(50, ge=1, description="Process a partial batch after this wait.")


class ModelSettings(_Section):
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
                                    "micro-batches) the step stays at step_size while the "
                                    "consumer lag divided by the learner's measured rate at "
                                    "step_size is at most this; beyond it, the step grows by "
                                    "the power of two that clears the lag in time.")
    learn_budget: float = Field(0.5, gt=0, le=1, description="Share of wall time the learner "
                                "may spend learning; the step size shrinks while it spends "
                                "less than budget/2.5 and grows above the budget.")
    warmup_events: int = Field(4096, ge=0, description="Until this many events are learned, "
                               "chunks are smaller (half the events seen so far), so a new "
                               "model is useful after a few events, not a whole batch.")
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


class StrategySettings(_Section):
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


class EWCSettings(_Section):
    strength: float = Field(100.0, ge=0, description="Penalty strength.")
    decay: float = Field(0.9, ge=0, le=1, description="Online EWC: old importance is "
                         "multiplied by this at each consolidation (1 = keep all).")
    fisher_batches: int = Field(8, ge=1, description="Replay/recent batches used to "
                                "estimate the Fisher diagonal at a consolidation.")


class SISettings(_Section):
    strength: float = Field(1.0, ge=0, description="Penalty strength (c).")
    eps: float = Field(1e-3, gt=0, description="Damping of the importance denominator (xi).")


class MASSettings(_Section):
    strength: float = Field(1.0, ge=0, description="Penalty strength.")
    alpha: float = Field(0.5, ge=0, le=1, description="Weight of old importance when "
                         "merged with the new one at a consolidation.")


class LwFSettings(_Section):
    alpha: float = Field(1.0, ge=0, description="Distillation loss weight.")
    temperature: float = Field(2.0, gt=0, description="Softmax temperature.")


class AGEMSettings(_Section):
    sample_size: int = Field(64, ge=1, description="Replayed events in the reference gradient.")


class MERSettings(_Section):
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


class LaMAMLSettings(_Section):
    alpha_init: float = Field(0.1, gt=0, description="Initial per-parameter learning rate.")
    lr_alpha: float = Field(0.3, gt=0, description="Learning rate of the learning rates.")
    inner_steps: int = Field(3, ge=1, description="Inner steps per chunk.")


class ReplaySettings(_Section):
    capacity: int = Field(10_000, ge=1, description="Reservoir size in events (on the device).")
    batch_size: int = Field(64, ge=1, description="Replayed events mixed into each step.")


class ProbeSettings(_Section):
    per_class: int = Field(32, ge=0, description="Events held out (never learned) per class "
                           "and concept period to measure forgetting (0 = off).")
    max_probes: int = Field(16, ge=0, description="Probe sets kept; the oldest is dropped.")
    eval_every: int = Field(5_000, ge=1, description="Re-score every probe after this many "
                            "learned events (one forward pass over all probes).")


DetectorName = Literal["adwin", "page_hinkley", "kswin", "ddm", "eddm", "fhddm", "hddm_a",
                       "hddm_w"]


class DriftSettings(_Section):
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


class AdaptSettings(_Section):
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


class FederationSettings(_Section):
    private_key_file: Path | None = Field(None, description="Our Ed25519 key (PEM, from "
                                          "`stream-learner keys generate`). Federation is on "
                                          "when this and at least one peer key are set.")
    peer_id: str | None = Field(None, description="Our id in updates; peers list our public "
                                "key under it. Default: the key file's stem.")
    peers: dict[str, str] = Field(default_factory=dict, description="Allowlist: peer id -> "
                                  "public key (base64) or the path of its .pub file.")
    peers_dir: Path | None = Field(None, description="Allowlist directory: every NAME.pub in "
                                   "it is peer NAME's key (a mounted Secret, say).")
    topic: str | None = Field(None, description="Federation topic (default: kafka.topic + "
                              "'.federation').")
    every_events: int = Field(50_000, ge=1, description="Publish our model after this many "
                              "learned events (a round costs the loop ~10 ms here: at "
                              "100k events/s, 2 rounds a second)...")
    every_seconds: float = Field(30.0, gt=0, description="...or this many seconds, whichever "
                                 "comes first; each publication is also a merge round.")
    aggregator: Literal["fedavg", "trimmed_mean", "median", "krum", "multi_krum",
                        "centered_clip"] = Field(
        "trimmed_mean", description="How our model and the peers' latest are combined.")
    trim: float = Field(0.25, ge=0, lt=0.5, description="trimmed_mean: share cut at each end.")
    byzantine: int = Field(1, ge=0, description="krum/multi_krum: peers assumed malicious.")
    mix: float = Field(0.5, ge=0, le=1, description="Merge: local = (1-mix) local + mix "
                       "aggregate.")
    proximal_mu: float = Field(0.01, ge=0, description="FedProx pull toward the last aggregate "
                               "while learning locally (mu/2 * ||w - w_agg||^2): keeps local "
                               "steps near the consensus without erasing a drift adaptation.")
    staleness_exponent: float = Field(0.5, ge=0, description="A peer's weight is samples * "
                                      "(1 + age in rounds) ** -exponent (FedAsync).")
    max_age_seconds: float = Field(300.0, gt=0, description="Older updates are rejected "
                                   "(stale); peers heard from within it count as live.")
    outlier_factor: float = Field(3.0, ge=0, description="Robust aggregators (all but fedavg) "
                                  "first drop peers farther from our model than this x the "
                                  "median peer distance (counted as oversize_norm); 0: never.")
    max_distance: float = Field(1e3, gt=0, description="Reject a peer model farther than this "
                                "(L2, in our frame) from ours: oversize_norm.")
    float16: bool = Field(True, description="Send float32 weights as float16 (half the bytes).")
    federation_id: str | None = Field(None, description="Signed into every update: an "
                                      "update published in another federation is rejected "
                                      "(wrong_federation). Default: the federation topic.")
    max_samples: int = Field(1_000_000, ge=1, description="A peer's claimed sample count is "
                             "capped at this when weighting (fedavg): no peer outweighs the "
                             "rest by claiming more.")

    @property
    def enabled(self) -> bool:
        return self.private_key_file is not None and bool(self.peers or self.peers_dir)


def _default_checkpoint_dir() -> Path:
    # systemd's StateDirectory= exports STATE_DIRECTORY (a ':'-separated list): the unit's
    # own writable, persistent place, so a unit needs no checkpoint setting at all.
    state = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    return Path(state) if state else Path("checkpoints")


class CheckpointSettings(_Section):
    dir: Path = Field(default_factory=_default_checkpoint_dir, description="Directory for "
                      "checkpoints (default: $STATE_DIRECTORY under systemd, else ./checkpoints).")
    every_events: int = Field(50_000, ge=1, description="Checkpoint after this many events.")
    every_seconds: float = Field(30.0, gt=0, description="...or after this many seconds.")
    keep: int = Field(3, ge=1, description="How many checkpoints to keep.")
    max_unsaved_events: int = Field(500_000, ge=1, description="While checkpoints fail "
                                    "(disk full, read-only), consumption pauses after this "
                                    "many events past the last checkpoint; readiness fails.")
    undeliverable_max_bytes: int = Field(256 * 1024 * 1024, ge=1024, description="Bound of "
                                         "undeliverable.jsonl (records Kafka refused); when "
                                         "full, readiness fails and consumption pauses.")


class ExportSettings(_Section):
    every_seconds: float = Field(0.0, ge=0, description="Export the model to ONNX after a "
                                 "checkpoint at most this often (0: never; needs the "
                                 "[export] extra, docs/export.md).")
    dir: Path = Field(Path("exports"), description="Directory of the periodic exports.")
    layout: Literal["plain", "triton"] = Field("plain", description="plain: "
                                               "DIR/VERSION/model.onnx; triton: "
                                               "DIR/NAME/VERSION/model.onnx and "
                                               "DIR/NAME/config.pbtxt.")
    name: str = Field("stream_learner", pattern=r"^[A-Za-z0-9_.-]{1,64}$",
                      description="Model name (triton layout).")
    keep: int = Field(3, ge=1, description="How many export versions to keep.")


class MetricsSettings(_Section):
    host: str = Field("0.0.0.0", description="Bind address of /metrics, /healthz, /readyz: "
                      "every interface by default, so a remote Prometheus and the kubelet's "
                      "probes reach it; 127.0.0.1 when only local clients scrape (it has no "
                      "authentication: restrict it with a firewall or NetworkPolicy).")
    port: int = Field(9108, ge=0, le=65535, description="HTTP port (0 = pick a free one).")
    rolling_window: int = Field(1000, ge=1, description="Events in the rolling accuracy window.")
    stall_seconds: float = Field(60.0, gt=0, description="/healthz fails when the loop has not "
                                                         "ticked for this long.")
    max_connections: int = Field(32, ge=1, description="HTTP connections held open at once; "
                                 "a new one beyond it closes the longest-idle one, or is "
                                 "answered 503 when all are mid-answer (none are queued).")
    connection_timeout_seconds: float = Field(5.0, gt=0, description="An HTTP connection "
                                              "that has not sent a whole request (or taken "
                                              "the answer) within this long is closed.")


class LabelSettings(_Section):
    enabled: bool = Field(True, description="Label-later events: a `label: null` event with "
                          "an `id` is kept until `{id, label}` arrives, then learned "
                          "(docs/labels.md). Off: such label events are missing_features.")
    join_window_seconds: float = Field(3600.0, gt=0, description="How long (in Kafka record "
                                       "time) a prediction waits for its label; later labels "
                                       "are label_expired.")
    max_pending: int = Field(100_000, ge=1, description="Predictions waiting for a label; "
                             "beyond it the oldest is evicted (reason capacity).")


class LogSettings(_Section):
    level: str = Field("INFO", description="Log level of the stream_learner logger.")
    json_format: bool = Field(False, description="Structured JSON log lines on stderr.")


class Settings(BaseSettings):
    """Every setting of the daemon; frozen once built."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__",
                                      frozen=True, extra="forbid", yaml_file=None)

    kafka: KafkaSettings = KafkaSettings()
    batch: BatchSettings = BatchSettings()
    model: ModelSettings = ModelSettings()
    strategy: StrategySettings = StrategySettings()
    replay: ReplaySettings = ReplaySettings()
    ewc: EWCSettings = EWCSettings()
    si: SISettings = SISettings()
    mas: MASSettings = MASSettings()
    lwf: LwFSettings = LwFSettings()
    agem: AGEMSettings = AGEMSettings()
    mer: MERSettings = MERSettings()
    lamaml: LaMAMLSettings = LaMAMLSettings()
    probes: ProbeSettings = ProbeSettings()
    drift: DriftSettings = DriftSettings()
    adapt: AdaptSettings = AdaptSettings()
    federation: FederationSettings = FederationSettings()
    checkpoint: CheckpointSettings = Field(default_factory=CheckpointSettings)  # env read per load
    export: ExportSettings = ExportSettings()
    metrics: MetricsSettings = MetricsSettings()
    labels: LabelSettings = LabelSettings()
    log: LogSettings = LogSettings()

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings],
                                   init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, YamlConfigSettingsSource(settings_cls),
                file_secret_settings)


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Build settings from an optional YAML file, the environment and overrides."""
    if config_file is None:
        return Settings(**overrides)
    path = Path(config_file)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")

    class _FromFile(Settings):
        model_config = SettingsConfigDict(yaml_file=path)

    return Settings.model_validate(_FromFile(**overrides).model_dump())


def describe_settings() -> Iterator[tuple[str, str, Any, str]]:
    """(dotted name, env var, default, description) for every setting, for --help."""
    for section, field in Settings.model_fields.items():
        model = field.annotation
        assert isinstance(model, type) and issubclass(model, BaseModel)
        for name, info in model.model_fields.items():
            yield (f"{section}.{name}", f"{ENV_PREFIX}{section.upper()}__{name.upper()}",
                   _default(info), info.description or "")


def _default(info: FieldInfo) -> Any:
    value = info.get_default(call_default_factory=True)
    return list(value) if isinstance(value, tuple) else value
