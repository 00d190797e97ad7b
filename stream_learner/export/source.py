"""A checkpoint as the arrays and names the exported graph needs (torch only, no onnx).

The standardiser's forward is ``(x - mean) / std`` with ``std`` derived from the running
moments exactly as :meth:`stream_learner.model.Standardizer.forward` derives it; its
clipping (winsorising) applies only to *updates*, never to inference, so the graph has
none.  The head's rows past ``n_classes`` are spare capacity the model slices off; the
exporter drops them from the weights instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__
from ..checkpoint import CheckpointStore, CorruptCheckpoint, load_checkpoint_file

META = "stream_learner."     # prefix of every metadata_props key


class ExportError(ValueError):
    """A checkpoint that cannot be exported (unreadable, corrupt or without a model)."""


@dataclass(frozen=True)
class ModelArrays:
    mean: np.ndarray                         # float32 [n_features]
    std: np.ndarray                          # float32 [n_features]
    # (weight [out, in], bias [out]) per Linear, in order; the last is the head.
    layers: tuple[tuple[np.ndarray, np.ndarray], ...]
    labels: tuple[Any, ...]
    feature_names: tuple[str, ...] | None
    events_learned: int
    checkpoint: str                          # file name of the checkpoint exported
    checkpoint_version: str                  # stream_learner version that wrote it

    @property
    def n_features(self) -> int:
        return int(self.mean.shape[0])

    @property
    def n_classes(self) -> int:
        return len(self.labels)

    def metadata(self) -> dict[str, str]:
        meta = {"labels": json.dumps(list(self.labels)),
                "events_learned": str(self.events_learned),
                "checkpoint": self.checkpoint,
                "checkpoint_version": self.checkpoint_version,
                "version": __version__}
        if self.feature_names is not None:
            meta["feature_names"] = json.dumps(list(self.feature_names))
        return {META + k: v for k, v in sorted(meta.items())}


def read_checkpoint(path: str | Path) -> ModelArrays:
    """A directory: its newest valid checkpoint (:meth:`CheckpointStore.latest`); a file:
    that file, validated.  Raises :class:`ExportError` with a one-line reason."""
    p = Path(path)
    if p.is_dir():
        found = CheckpointStore(p).latest()
        if found is None:
            raise ExportError(f"no valid checkpoint in {p}")
        p, state = found
    else:
        try:
            state = load_checkpoint_file(p)
        except FileNotFoundError:
            raise ExportError(f"no such checkpoint: {p}") from None
        except (CorruptCheckpoint, OSError) as exc:
            raise ExportError(f"{p} is not a valid checkpoint: {_short(exc)}") from None
        except Exception as exc:  # noqa: BLE001 - torch's unpickler raises many types
            # Not torch's text: it suggests weights_only=False, which is never safe here.
            raise ExportError(f"{p} is not a valid checkpoint: not a torch file this code "
                              f"wrote ({type(exc).__name__})") from None
    try:
        return from_state(state, p.name)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise ExportError(f"{p} does not hold a model state: {_short(exc)}") from None


def from_state(state: dict[str, Any], name: str) -> ModelArrays:
    """The arrays of ``Daemon.state_dict``'s learner part."""
    learner = state["learner"]
    model = learner["model"]
    if model is None:
        raise ExportError("the checkpoint has no model yet (no valid event was learned)")
    labels = tuple(learner["labels"]["labels"])
    if not labels:
        raise ExportError("the model knows no class yet")
    n_classes = int(model["n_classes_t"])
    if n_classes != len(labels):
        raise CorruptCheckpoint(f"{n_classes} head classes but {len(labels)} labels")
    count, mean, m2 = model["scaler.count"], model["scaler.mean"], model["scaler.m2"]
    # Standardizer.forward, step for step: float64 statistics, cast to float32 last.
    var = m2 / count.clamp(min=1.0)
    std = var.clamp(min=1e-12).sqrt().clamp(min=1e-6)
    weights = sorted((k for k in model if k.startswith("body.") and k.endswith(".weight")),
                     key=lambda k: int(k.split(".")[1]))
    layers = [(_f32(model[k]), _f32(model[k[: -len("weight")] + "bias"])) for k in weights]
    layers.append((_f32(model["head.weight"][:n_classes]), _f32(model["head.bias"][:n_classes])))
    names = (state.get("decoder") or {}).get("feature_names")
    return ModelArrays(mean=_f32(mean), std=_f32(std), layers=tuple(layers), labels=labels,
                       feature_names=tuple(names) if names else None,
                       events_learned=int(learner.get("seen", 0)), checkpoint=name,
                       checkpoint_version=str(state.get("version", "")))


def _f32(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(torch.float32).contiguous().numpy()


def _short(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[:limit] + "..."
