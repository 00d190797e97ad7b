"""Drift: river's detectors on the learner's error, loss and inputs, and what to do then.

One module each: :mod:`.detectors` (river's detectors by name, checkpointable),
:mod:`.monitor` (feeding them), :mod:`.boost`, :mod:`.pool` (the adaptation policies)
and :mod:`.adapter` (composing them for a learner).
"""

from .adapter import POLICIES, DriftAdapter, DriftReport
from .boost import PlasticityBoost
from .detectors import BINARY, NAMES
from .monitor import DriftMonitor, Signal
from .pool import ConceptPool

__all__ = ["BINARY", "NAMES", "POLICIES", "ConceptPool", "DriftAdapter", "DriftMonitor",
           "DriftReport", "PlasticityBoost", "Signal"]
