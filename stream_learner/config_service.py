"""Settings of the service around the loop: checkpoints, model exports, the HTTP endpoint
and its metrics, label-later joins and logging.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field

from .config_section import Section


def _default_checkpoint_dir() -> Path:
    # systemd's StateDirectory= exports STATE_DIRECTORY (a ':'-separated list): the unit's
    # own writable, persistent place, so a unit needs no checkpoint setting at all.
    state = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    return Path(state) if state else Path("checkpoints")


class CheckpointSettings(Section):
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


class ExportSettings(Section):
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


class MetricsSettings(Section):
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


class LabelSettings(Section):
    enabled: bool = Field(True, description="Label-later events: a `label: null` event with "
                          "an `id` is kept until `{id, label}` arrives, then learned "
                          "(docs/labels.md). Off: such label events are missing_features.")
    join_window_seconds: float = Field(3600.0, gt=0, description="How long (in Kafka record "
                                       "time) a prediction waits for its label; later labels "
                                       "are label_expired.")
    max_pending: int = Field(100_000, ge=1, description="Predictions waiting for a label; "
                             "beyond it the oldest is evicted (reason capacity).")


class LogSettings(Section):
    level: str = Field("INFO", description="Log level of the stream_learner logger.")
    json_format: bool = Field(False, description="Structured JSON log lines on stderr.")
