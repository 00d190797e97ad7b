"""Writes an exported graph: ``plain`` (``model.onnx`` + ``labels.json``) or ``triton``
(``<name>/<version>/model.onnx`` + ``<name>/config.pbtxt``, Triton's model repository).

Files are written to a temporary name and renamed, so a server polling the directory
never loads half a model.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Literal

from .graph import INPUT, LABEL_INDEX, PROBABILITIES, build_model, serialize
from .source import ModelArrays

Layout = Literal["plain", "triton"]
MAX_BATCH_SIZE = 4096


def triton_config(name: str, arrays: ModelArrays, max_batch_size: int = MAX_BATCH_SIZE) -> str:
    # With max_batch_size > 0 Triton's dims leave the batch dimension out; label_index is
    # [N], so it is declared [1] and reshaped to a scalar per row.
    return (f'name: "{name}"\n'
            'platform: "onnxruntime_onnx"\n'
            f"max_batch_size: {max_batch_size}\n"
            "input [\n"
            f'  {{ name: "{INPUT}" data_type: TYPE_FP32 dims: [ {arrays.n_features} ] }}\n'
            "]\n"
            "output [\n"
            f'  {{ name: "{PROBABILITIES}" data_type: TYPE_FP32 dims: [ {arrays.n_classes} ] }},\n'
            f'  {{ name: "{LABEL_INDEX}" data_type: TYPE_INT64 dims: [ 1 ] '
            "reshape: { shape: [ ] } }\n"
            "]\n")


def versions(directory: Path) -> list[int]:
    """Numbered version directories, oldest first."""
    if not directory.is_dir():
        return []
    return sorted(int(p.name) for p in directory.iterdir() if p.is_dir() and p.name.isdigit())


def write(arrays: ModelArrays, out: Path, layout: Layout = "plain", name: str = "stream_learner",
          version: int | None = None) -> Path:
    """Writes one export; returns the ``model.onnx`` path.  ``version`` (triton) defaults
    to one past the newest present."""
    blob = serialize(build_model(arrays))
    if layout == "plain":
        out.mkdir(parents=True, exist_ok=True)
        _atomic(out / "labels.json", json.dumps(list(arrays.labels)).encode() + b"\n")
        _atomic(out / "model.onnx", blob)
        return out / "model.onnx"
    root = out / name
    if version is None:
        version = (versions(root) or [0])[-1] + 1
    if version < 1:
        raise ValueError(f"version must be >= 1, not {version}")
    target = root / str(version)
    target.mkdir(parents=True, exist_ok=True)
    _atomic(target / "model.onnx", blob)
    _atomic(root / "config.pbtxt", triton_config(name, arrays).encode())
    return target / "model.onnx"


def prune(directory: Path, keep: int) -> list[int]:
    """Removes all but the ``keep`` newest version directories; returns those removed."""
    removed = versions(directory)[:-keep] if keep > 0 else []
    for v in removed:
        shutil.rmtree(directory / str(v), ignore_errors=True)
    return removed


def _atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
