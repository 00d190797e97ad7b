"""One frozen settings object, read from a YAML file and ``STREAM_LEARNER_`` env vars.

Precedence, highest first: keyword arguments, environment, YAML file, defaults.
Nested fields use ``__`` in env names: ``STREAM_LEARNER_KAFKA__TOPIC=clicks``.

>>> s = Settings(kafka={"topic": "clicks"})
>>> s.kafka.topic, s.batch.size
('clicks', 1024)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Literal

from pydantic import BaseModel, Field
from pydantic.fields import FieldInfo
from pydantic_settings import (BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict,
                               YamlConfigSettingsSource)

# The sections live by concept in sibling modules; named here, so `from .config import
# DriftSettings` (and every other section) keeps working.
from .config_drift import AdaptSettings, DetectorName, DriftSettings
from .config_federation import FederationSettings
from .config_learning import (AGEMSettings, EWCSettings, LaMAMLSettings, LwFSettings,
                              MASSettings, MERSettings, ModelSettings, ProbeSettings,
                              ReplaySettings, SISettings, StrategySettings)
from .config_section import Section
from .config_service import (CheckpointSettings, ExportSettings, LabelSettings, LogSettings,
                             MetricsSettings)

ENV_PREFIX = "STREAM_LEARNER_"
__all__ = ["ENV_PREFIX", "AGEMSettings", "AdaptSettings", "BatchSettings",
           "CheckpointSettings", "DetectorName", "DriftSettings", "EWCSettings",
           "ExportSettings", "FederationSettings", "KafkaSettings", "LaMAMLSettings",
           "LabelSettings", "LogSettings", "LwFSettings", "MASSettings", "MERSettings",
           "MetricsSettings", "ModelSettings", "ProbeSettings", "ReplaySettings",
           "SISettings", "Section", "Settings", "StrategySettings", "describe_settings",
           "load_settings"]


class KafkaSettings(Section):
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


class BatchSettings(Section):
    size: int = Field(1024, ge=1, description="Events per micro-batch (upper bound).")
    max_wait_ms: int = Field(50, ge=1, description="Process a partial batch after this wait.")


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
