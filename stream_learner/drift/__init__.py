"""Drift: river's detectors on the learner's error, loss and inputs, and what to do then.

One module each: :mod:`.detectors` (river's detectors by name, checkpointable),
:mod:`.monitor` (feeding them), :mod:`.boost`, :mod:`.pool` (the adaptation policies),
:mod:`.adapter` (composing them for a learner) and :mod:`.report` (what the daemon reads).

The names below load on first use (PEP 562): the Kafka loop imports :mod:`.report` and
:mod:`.export`, and importing a submodule runs this file, which must not pull in the
detectors and policies (torch) there.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {"POLICIES": "report", "DriftReport": "report", "DriftAdapter": "adapter",
          "PlasticityBoost": "boost", "BINARY": "detectors", "NAMES": "detectors",
          "DriftMonitor": "monitor", "Signal": "monitor", "ConceptPool": "pool"}

__all__ = ["BINARY", "NAMES", "POLICIES", "ConceptPool", "DriftAdapter", "DriftMonitor",
           "DriftReport", "PlasticityBoost", "Signal"]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
