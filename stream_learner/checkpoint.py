"""Atomic, rotating checkpoints of plain state_dicts (no pickled objects).

Files load with ``torch.load(weights_only=True)``: tensors, numbers, strings, lists
and dicts only, so a checkpoint survives code and torch upgrades.

>>> import tempfile
>>> store = CheckpointStore(tempfile.mkdtemp(), keep=2)
>>> for n in (1, 2, 3): _ = store.save({"n": n})
>>> [p.name for p in store.paths()], store.load_latest()["n"]
(['ckpt-000000000002.pt', 'ckpt-000000000003.pt'], 3)
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
_NAME = re.compile(r"^ckpt-(\d{12})\.pt$")


class CheckpointStore:
    def __init__(self, directory: str | Path, keep: int = 3) -> None:
        self.directory = Path(directory)
        self.keep = keep
        self.directory.mkdir(parents=True, exist_ok=True)
        existing = self.paths()
        self._seq = int(_NAME.match(existing[-1].name).group(1)) if existing else 0  # type: ignore[union-attr]

    def paths(self) -> list[Path]:
        """Checkpoint files, oldest first."""
        return sorted(p for p in self.directory.iterdir() if _NAME.match(p.name))

    def save(self, state: dict[str, Any]) -> Path:
        """Write to a temp file, fsync it, rename over, fsync the directory, prune."""
        self._seq += 1
        final = self.directory / f"ckpt-{self._seq:012d}.pt"
        tmp = final.with_suffix(".tmp")
        with open(tmp, "wb") as fh:
            torch.save({"format": FORMAT_VERSION, "state": state}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        for old in self.paths()[: -self.keep]:
            old.unlink(missing_ok=True)
        return final

    def load_latest(self) -> dict[str, Any] | None:
        """The newest checkpoint that loads; corrupt ones are skipped with a warning."""
        for path in reversed(self.paths()):
            try:
                blob = torch.load(path, map_location="cpu", weights_only=True)
                if blob.get("format") != FORMAT_VERSION:
                    raise ValueError(f"unknown checkpoint format {blob.get('format')!r}")
                log.info("restored checkpoint %s", path)
                return blob["state"]
            except Exception as exc:  # noqa: BLE001 - any unreadable file means "try older"
                log.warning("checkpoint %s is unreadable (%s); trying an older one", path, exc)
        return None
