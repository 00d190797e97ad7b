"""What drift detection reports to the daemon: plain data, no torch.

Apart from :mod:`.adapter` so the Kafka loop (which exports these counts and never
imports torch) can read a report without importing the detectors and policies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

POLICIES = ("pool", "consolidate", "boost")


@dataclass(frozen=True)
class DriftReport:
    """What the daemon exports; cumulative counts, so a lost report loses nothing."""

    drifts: dict[str, int] = field(default_factory=dict)      # "signal:detector" -> n
    warnings: dict[str, int] = field(default_factory=dict)
    adaptations: dict[str, int] = field(default_factory=dict)  # policy -> n
    concept_reuse: int = 0
    concept_id: int = 0
    concepts_known: int = 0
    last_drift_time: float = 0.0
    window_events: float = 0.0
    accuracy_before: float = math.nan
    accuracy_since: float = math.nan
    lr_factor: float = 1.0
