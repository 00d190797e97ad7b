"""Whether a loaded checkpoint state restores: a trial restore into fresh objects.

The daemon applies a checkpoint to its learner, decoder, metrics and counters, whose
``load_state_dict`` methods trust their input: a hostile or damaged dict can fail deep
inside (a ``KeyError``, a shape mismatch from torch) after half the daemon was
overwritten, or restore a model with NaN weights.  :func:`check_restorable` restores the
state into throw-away objects first and turns any failure into a
:class:`~stream_learner.checkpoint.CorruptCheckpoint`, so
:meth:`~stream_learner.checkpoint.CheckpointStore.load_latest` falls back to an older
file instead.  It costs one extra restore at start-up, and leaves the process's torch
RNG as it found it.  It runs where the model is (the worker, with ``model.worker=process``:
:mod:`~stream_learner.checkpoint_keeper`), before any part is applied.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .checkpoint import CorruptCheckpoint
from .config import Settings
from .counters import Counters
from .evaluation import PrequentialAccuracy, RollingMean
from .events import EventDecoder, Limits
from .label_side import LabelSide
from .learner import Learner
from .lineage import Lineage
from .metrics import Metrics

_KEYS = ("learner", "decoder", "accuracy", "loss", "counters", "offsets")


def check_restorable(settings: Settings, state: dict[str, Any]) -> None:
    """Raises :class:`CorruptCheckpoint` unless ``state`` restores a daemon for
    ``settings`` with finite model and optimiser tensors."""
    rng = torch.get_rng_state()
    try:
        _trial(settings, state)
    except CorruptCheckpoint:
        raise
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # noqa: BLE001 - whatever a hostile dict makes fail is
        # "corrupt"; BaseException too: a panic in river's Rust code is a pyo3
        # PanicException, which derives from BaseException.
        raise CorruptCheckpoint(f"does not restore: {type(exc).__name__}: {exc}") from exc
    finally:
        torch.set_rng_state(rng)


def _trial(settings: Settings, state: dict[str, Any]) -> None:
    missing = [k for k in _KEYS if k not in state]
    if missing:
        raise CorruptCheckpoint(f"missing {missing}")
    _check_offsets(state["offsets"])
    created = state.get("created", 0.0)
    if type(created) not in (int, float) or not math.isfinite(created):
        raise CorruptCheckpoint(f"created is {created!r}, not a time")
    learner = Learner(settings)
    learner.load_state_dict(state["learner"])
    if learner.model is not None:
        _check_finite("model", list(learner.model.state_dict().values()))
    if learner.optimizer is not None:
        _check_finite("optimizer", [v for s in learner.optimizer.state_dict()["state"].values()
                                    for v in s.values() if torch.is_tensor(v)])
    m = settings.model
    decoder = EventDecoder(m.n_features, m.feature_names, settings.kafka.max_event_bytes)
    decoder.load_state_dict(state["decoder"])
    if "lineage" in state:
        Lineage().load_state_dict(state["lineage"])
    PrequentialAccuracy(settings.metrics.rolling_window).load_state_dict(state["accuracy"])
    RollingMean(half_life=settings.metrics.rolling_window).load_state_dict(state["loss"])
    Counters().load_state_dict(state["counters"])
    if "labels" in state:         # older checkpoints have none
        side = LabelSide(settings, Metrics().labels, Limits())
        side.load_state_dict(state["labels"])
        width = side.store.width
        if width is not None and width != decoder.n_features:
            raise CorruptCheckpoint(f"label join store holds {width} features per event, "
                                    f"the decoder {decoder.n_features}")


def _check_offsets(offsets: Any) -> None:
    ok = isinstance(offsets, dict) and all(
        isinstance(t, str) and isinstance(parts, dict) and all(
            type(p) is int and type(o) is int and p >= 0 and o >= 0
            for p, o in parts.items())
        for t, parts in offsets.items())
    if not ok:
        raise CorruptCheckpoint("offsets are not {topic: {partition: offset}} of "
                                "non-negative ints")


def _check_finite(what: str, tensors: list[torch.Tensor]) -> None:
    for t in tensors:
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise CorruptCheckpoint(f"{what} holds non-finite values")
