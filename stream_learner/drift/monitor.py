"""Feeds river's detectors from the learner's batches and keeps the drift bookkeeping.

Three signals, each optional (config ``drift``):

* ``error``: the per-event prequential error (0/1), event by event, into
  ``drift.detector`` (ADWIN by default; the binary detectors also raise warnings);
* ``loss``: the mean training loss of each micro-batch into ``drift.loss_detector``;
* ``input``: covariate drift without labels.  The standardised features are projected
  on ``drift.input_projections`` fixed random directions, averaged over
  ``drift.input_summary_events`` events, and each projection feeds its own
  ``drift.input_detector``.  Cost: one small matmul per batch and ``k * n / summary``
  detector updates.

Nothing is fed before ``drift.warmup_events`` labeled events were learned: the first
learning curve is a change of the error rate that is not a drift.  For the same reason a
detection on the error or the loss counts as a drift only when the signal *rose*:
ADWIN and Page-Hinkley are two-sided, and a model that keeps getting better is not a
changed world.  For ADWIN on the error, its own cut decides (the part it dropped against
the part it kept); otherwise the newest values against the older ones kept here.  Such a
detection is reported with ``kind="improvement"`` and exported nowhere.

>>> import numpy as np
>>> from stream_learner.config import Settings
>>> mon = DriftMonitor(Settings(drift={"warmup_events": 0}).drift)
>>> errs = np.r_[np.zeros(3000, bool), np.random.default_rng(0).random(3000) < 0.5]
>>> found = [s for i in range(0, 6000, 500) for s in mon.update(errs[i:i + 500], 0.1)]
>>> [(s.signal, s.kind, s.rising) for s in found if s.signal == "error"][:1]
[('error', 'drift', True)]
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..config import DriftSettings
from . import detectors
from .lagged import change_age

RECENT = 1_000        # error bits kept: "accuracy before the drift" and the direction test
DIRECTION_TAIL = 200  # the newest errors compared with the older ones of RECENT
LOSS_RECENT = 64      # batch losses kept for the loss signal's direction test
LOSS_TAIL = 8
DETECTORS_FORMAT = 2  # plain-data detector states (1, unmarked: pickle blobs, refused)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Signal:
    """One detection in a batch."""

    kind: str          # "drift" | "warning" | "improvement" (a fall; not a drift)
    signal: str        # "error" | "loss" | "input"
    detector: str      # config name, e.g. "adwin"
    rising: bool       # the error rate went up (error signal only; True otherwise)
    at: int = -1       # error signal: index in the batch of the event that fired it
    age: int = 0       # error signal: events from the estimated change to that event


class DriftMonitor:
    def __init__(self, cfg: DriftSettings, seed: int = 0) -> None:
        self.cfg = cfg
        self.seed = seed
        self.error = (None if cfg.detector == "none"
                      else detectors.make(cfg.detector, cfg.detector_params, seed))
        self.loss = (None if cfg.loss_detector == "none"
                     else detectors.make(cfg.loss_detector, None, seed))
        self.inputs: list[Any] = []              # one detector per projection, built lazily
        self._folded: tuple[torch.Tensor, torch.Tensor] | None = None   # derived, not saved
        self.projection: torch.Tensor | None = None   # [d, k]
        self.center: torch.Tensor | None = None       # frozen standardisation
        self.scale: torch.Tensor | None = None
        self.drifts: dict[str, int] = {}         # "signal:detector" -> count
        self.warnings: dict[str, int] = {}
        self.last_drift_time = 0.0               # epoch seconds of the last drift
        self.accuracy_before = float("nan")      # over RECENT events before the last drift
        self.since_events = 0                    # labeled events since the last drift
        self.since_hits = 0
        self._recent = np.zeros(0, dtype=bool)   # newest last
        self._losses: list[float] = []

    # -- feeding ------------------------------------------------------------------------
    def update(self, errors: np.ndarray, loss: float = float("nan")) -> list[Signal]:
        """One batch: its per-event prequential errors (bool) and, once it was learned, its
        mean training loss (NaN: none yet; see :meth:`update_loss`)."""
        found: list[Signal] = []
        det = self.error
        if det is None:
            self._track(errors)
            return found + self.update_loss(loss)
        start = 0
        for i, kind, rising in detectors.feed(det, errors.astype(np.float64).tolist()):
            if kind == "drift":
                found.append(self._on_error_drift(errors[start:i + 1], i, rising))
                start = i + 1
            else:
                found.append(self._count("warning", "error", self.cfg.detector))
        self._track(errors[start:])
        return found + self.update_loss(loss)

    def update_loss(self, loss: float) -> list[Signal]:
        found: list[Signal] = []
        if self.loss is not None and np.isfinite(loss):
            self.loss.update(float(loss))
            self._losses = (self._losses + [float(loss)])[-LOSS_RECENT:]
            if self.loss.drift_detected:
                old, new = self._losses[:-LOSS_TAIL], self._losses[-LOSS_TAIL:]
                if not old or np.mean(new) > np.mean(old):
                    found.append(self._count("drift", "loss", self.cfg.loss_detector))
                else:
                    found.append(Signal("improvement", "loss", self.cfg.loss_detector, False))
        return found

    def update_inputs(self, x: torch.Tensor, model_scaler: Any) -> list[Signal]:
        """A batch of features (labeled or not), on the model's device."""
        if self.cfg.input_detector == "none" or x.shape[0] == 0:
            return []
        if self.projection is None:
            self._build_projection(x, model_scaler)
        m = self.cfg.input_summary_events
        n = (x.shape[0] // m) * m
        if n == 0:
            return []
        if self._folded is None:
            assert self.projection is not None and self.center is not None \
                and self.scale is not None
            # ((x - c) / s) @ P == x @ (P / s) - (c / s) @ P: one addmm per batch.
            w = self.projection / self.scale[:, None]
            self._folded = (w, -((self.center / self.scale) @ self.projection))
        w, bias = self._folded
        z = torch.addmm(bias, x[:n], w)                                   # [n, k]
        summary = z.view(-1, m, z.shape[1]).mean(1).cpu().numpy()        # [n/m, k]
        fired = False
        for j, det in enumerate(self.inputs):
            fired = any(d.kind == "drift" for d in
                        detectors.feed(det, summary[:, j].tolist())) or fired
        return [self._count("drift", "input", self.cfg.input_detector)] if fired else []

    def restart_error(self) -> None:
        """The model was swapped (a recalled concept): the errors the detectors hold came
        from another model, so they start afresh instead of flagging the swap itself."""
        if self.error is not None:
            self.error = detectors.make(self.cfg.detector, self.cfg.detector_params, self.seed)
        if self.loss is not None:
            self.loss = detectors.make(self.cfg.loss_detector, None, self.seed)
        self._recent = np.zeros(0, dtype=bool)
        self._losses = []

    # -- bookkeeping --------------------------------------------------------------------
    def _on_error_drift(self, tail: np.ndarray, at: int, rising: bool | None = None
                        ) -> Signal:
        """``rising``: the detector's own verdict on the change's direction (ADWIN's cut);
        None: judged from the newest errors, which misses a change detected more than
        ``RECENT - DIRECTION_TAIL`` events late (both halves then follow it)."""
        self._track(tail)
        recent = self._recent
        if rising is None:
            rising = True
            if recent.size > DIRECTION_TAIL:
                rising = bool(recent[-DIRECTION_TAIL:].mean() > recent[:-DIRECTION_TAIL].mean())
        if not rising:
            return Signal("improvement", "error", self.cfg.detector, False, at)
        age = change_age(recent)
        self.accuracy_before = float(1.0 - recent[:recent.size - age].mean()) \
            if recent.size > age else float("nan")
        self.since_events = self.since_hits = 0
        self._recent = np.zeros(0, dtype=bool)
        self.last_drift_time = time.time()
        self.drifts[f"error:{self.cfg.detector}"] = self.drifts.get(
            f"error:{self.cfg.detector}", 0) + 1
        return Signal("drift", "error", self.cfg.detector, rising, at, age)

    def _count(self, kind: str, signal: str, detector: str) -> Signal:
        book = self.drifts if kind == "drift" else self.warnings
        key = f"{signal}:{detector}"
        book[key] = book.get(key, 0) + 1
        if kind == "drift" and signal != "input":
            self.last_drift_time = time.time()
        return Signal(kind, signal, detector, True)

    def _track(self, errors: np.ndarray) -> None:
        if errors.size:
            self._recent = np.concatenate([self._recent, errors])[-RECENT:]
            self.since_events += int(errors.size)
            self.since_hits += int(errors.size - errors.sum())

    def _build_projection(self, x: torch.Tensor, scaler: Any) -> None:
        d, k = x.shape[1], self.cfg.input_projections
        gen = torch.Generator().manual_seed(self.seed + 7919)
        r = torch.randn(d, k, generator=gen)
        self.projection = (r / r.norm(dim=0, keepdim=True)).to(x.device, x.dtype)
        if scaler is not None and float(scaler.count) > 1:
            var = scaler.m2 / scaler.count
            self.center = scaler.mean.to(x.dtype).clone()
            self.scale = var.clamp(min=1e-12).sqrt().clamp(min=1e-6).to(x.dtype)
        else:
            self.center = x.mean(0)
            self.scale = x.std(0).clamp(min=1e-6) if x.shape[0] > 1 else torch.ones_like(x[0])
        self.inputs = [detectors.make(self.cfg.input_detector, None, self.seed + j)
                       for j in range(k)]

    # -- reporting ----------------------------------------------------------------------
    @property
    def accuracy_since(self) -> float:
        return self.since_hits / self.since_events if self.since_events else float("nan")

    @property
    def window_events(self) -> float:
        """ADWIN's window width, or the events since the last drift for other detectors."""
        # Only ADWIN keeps a window; declared by detector name, not probed.
        if self.error is not None and detectors.name_of(self.error) == "adwin":
            return float(self.error.width)
        return float(self.since_events)

    # -- state --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        def opt(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.detach().cpu().clone()
        return {
            "error": None if self.error is None else detectors.dump(self.error),
            "loss": None if self.loss is None else detectors.dump(self.loss),
            "inputs": [detectors.dump(d) for d in self.inputs],
            "projection": opt(self.projection), "center": opt(self.center),
            "scale": opt(self.scale),
            "drifts": dict(self.drifts), "warnings": dict(self.warnings),
            "last_drift_time": self.last_drift_time, "accuracy_before": self.accuracy_before,
            "since_events": self.since_events, "since_hits": self.since_hits,
            "recent": torch.from_numpy(self._recent.copy()),
            "losses": torch.tensor(self._losses, dtype=torch.float64),
            "config": [self.cfg.detector, self.cfg.loss_detector, self.cfg.input_detector],
            "detectors_format": DETECTORS_FORMAT,
        }

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        same = list(state["config"]) == [self.cfg.detector, self.cfg.loss_detector,
                                         self.cfg.input_detector]
        self._folded = None
        if same:        # a changed detector config starts its detectors afresh
            legacy = state.get("detectors_format") is None
            self.error = self._load_detector(state["error"], self.error, self.cfg.detector,
                                             self.cfg.detector_params, self.seed, legacy)
            self.loss = self._load_detector(state["loss"], self.loss, self.cfg.loss_detector,
                                            None, self.seed, legacy)
            inputs = state["inputs"]
            if not isinstance(inputs, list) or len(inputs) > self.cfg.input_projections:
                raise detectors.BadState("drift.inputs: not a list of at most "
                                         f"{self.cfg.input_projections} detector states")
            loaded = [self._load_detector(b, None, self.cfg.input_detector, None,
                                          self.seed + j, legacy) for j, b in enumerate(inputs)]
            # A legacy blob left a gap: the projection's detectors start afresh together.
            self.inputs = [] if None in loaded else loaded
            for name in ("projection", "center", "scale"):
                t = state[name]
                setattr(self, name, None if t is None else t.to(device))
            if self.projection is not None and \
                    self.projection.shape[1] != self.cfg.input_projections:
                self.projection = self.center = self.scale = None
                self.inputs = []
        self.drifts = {str(k): int(v) for k, v in state["drifts"].items()}
        self.warnings = {str(k): int(v) for k, v in state["warnings"].items()}
        self.last_drift_time = float(state["last_drift_time"])
        self.accuracy_before = float(state["accuracy_before"])
        self.since_events, self.since_hits = int(state["since_events"]), int(state["since_hits"])
        self._recent = state["recent"].numpy().astype(bool)
        self._losses = [float(v) for v in state["losses"].tolist()]

    _legacy_logged = False

    def _load_detector(self, blob: Any, fresh: Any, name: str,
                       params: dict[str, Any] | None, seed: int, legacy: bool) -> Any:
        """A saved detector, or ``fresh`` where there is none to load.

        Old checkpoints hold detectors as pickle blobs (uint8 tensors).  Those are never
        unpickled: a checkpoint that predates the plain format (no ``detectors_format``)
        keeps its model and starts its detectors afresh, logged once; a blob in a
        checkpoint of the plain format cannot come from this code and is corrupt."""
        if blob is None:
            return None
        if isinstance(blob, torch.Tensor):
            if not legacy:
                raise detectors.BadState("drift detector state is a pickle blob in a "
                                         "plain-format checkpoint")
            if not DriftMonitor._legacy_logged:
                DriftMonitor._legacy_logged = True
                log.warning("checkpoint holds drift detectors in the old pickle format; "
                            "they are not unpickled (unsafe) and start afresh, the model "
                            "and the rest of the state are restored")
            return fresh
        if detectors.params_changed(blob, name, params, seed):
            return fresh if fresh is not None else detectors.make(name, params, seed)
        return detectors.load(name, params, blob, seed)
