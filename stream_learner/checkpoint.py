"""Atomic, rotating checkpoints of plain state_dicts (no pickled objects).

Files load with ``torch.load(weights_only=True)``: tensors, numbers, strings, lists
and dicts only, so a checkpoint survives code and torch upgrades, and nothing in one is
ever unpickled into an object (river's drift detectors too: plain data, see
:mod:`stream_learner.drift.detectors`).  A file that loads but is not a state this code
wrote (:func:`validate_checkpoint`, plus the caller's ``validate``: the daemon's trial
restore, :mod:`stream_learner.restore_check`) counts as corrupt: :meth:`load_latest`
logs one line naming the file and the reason and falls back to the next older one.

>>> import tempfile
>>> store = CheckpointStore(tempfile.mkdtemp(), keep=2)
>>> for n in (1, 2, 3): _ = store.save({"n": n})
>>> [p.name for p in store.paths()], store.load_latest()["n"]
(['ckpt-000000000002.pt', 'ckpt-000000000003.pt'], 3)
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from pathlib import Path
from typing import Any, Callable

import torch

from .checkpoint_codec import to_file

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
_NAME = re.compile(r"^ckpt-(\d{12})\.pt$")
MAX_DEPTH = 32            # nesting of dicts and lists; the daemon's state has < 10
MAX_NODES = 5_000_000     # dict/list entries (tensors count one each)
_SCALARS = (bool, int, float, str, type(None))


class CorruptCheckpoint(ValueError):
    """A checkpoint that loads but is not a state the daemon wrote."""


def validate_checkpoint(state: Any) -> None:
    """Plain data only, within sane nesting and size; raises :class:`CorruptCheckpoint`.

    ``weights_only`` already refuses arbitrary objects; this bounds what later code walks
    and names the offending path in the error."""
    if not isinstance(state, dict):
        raise CorruptCheckpoint(f"state is a {type(state).__name__}, not a dict")
    nodes = 0
    stack: list[tuple[Any, str, int]] = [(state, "", 0)]
    while stack:
        value, path, depth = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            raise CorruptCheckpoint(f"more than {MAX_NODES} values")
        if isinstance(value, (_SCALARS, torch.Tensor)):
            continue
        if depth >= MAX_DEPTH:
            raise CorruptCheckpoint(f"{path or '/'} is nested deeper than {MAX_DEPTH}")
        if isinstance(value, dict):
            for k, v in value.items():
                if not isinstance(k, (str, int)) or isinstance(k, bool):
                    raise CorruptCheckpoint(f"{path}: key of type {type(k).__name__}")
                stack.append((v, f"{path}/{k}", depth + 1))
        elif isinstance(value, (list, tuple)):
            stack.extend((v, f"{path}/{i}", depth + 1) for i, v in enumerate(value))
        else:
            raise CorruptCheckpoint(f"{path}: unexpected {type(value).__name__}")


class CheckpointStore:
    def __init__(self, directory: str | Path, keep: int = 3) -> None:
        self.directory = Path(directory)
        self.keep = keep
        self.directory.mkdir(parents=True, exist_ok=True)
        existing = self.paths()
        self.skipped: list[Path] = []      # newer files the last load_latest passed over
        self._seq = int(_NAME.match(existing[-1].name).group(1)) if existing else 0  # type: ignore[union-attr]

    def paths(self) -> list[Path]:
        """Checkpoint files, oldest first."""
        return sorted(p for p in self.directory.iterdir() if _NAME.match(p.name))

    def save(self, state: dict[str, Any]) -> Path:
        """Write to a temp file, fsync it, rename over, fsync the directory, prune."""
        self._seq += 1
        final = self.directory / f"ckpt-{self._seq:012d}.pt"
        tmp = final.with_suffix(".tmp")
        try:
            with open(tmp, "wb") as fh:
                # numpy arrays (the Kafka loop's parts) go to disk as tensors: the
                # format weights_only loads stays what it was.
                torch.save({"format": FORMAT_VERSION, "state": to_file(state)}, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, final)
        except BaseException:
            # A half-written file on a full disk holds the space the next try needs.
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        for old in self.paths()[: -self.keep]:
            old.unlink(missing_ok=True)
        return final

    def load_latest(self, validate: Callable[[dict[str, Any]], None] | None = None
                    ) -> dict[str, Any] | None:
        """The newest checkpoint that loads and passes :func:`validate_checkpoint` and
        ``validate``; corrupt ones are skipped with one warning each and listed in
        :attr:`skipped` (the caller must not trust what only those had committed)."""
        found = self.latest(validate)
        return None if found is None else found[1]

    def latest(self, validate: Callable[[dict[str, Any]], None] | None = None
               ) -> tuple[Path, dict[str, Any]] | None:
        """:meth:`load_latest`, with the file it chose (the exporter names it)."""
        self.skipped = []
        for path in reversed(self.paths()):
            try:
                state = load_checkpoint_file(path)
                if validate is not None:
                    validate(state)
                return path, state      # the caller logs what it restored
            except Exception as exc:  # noqa: BLE001 - any unreadable file means "try older"
                log.warning("checkpoint %s is unreadable (%s); trying an older one", path,
                            one_line(exc))
                self.skipped.append(path)
        return None


def load_checkpoint_file(path: str | Path) -> dict[str, Any]:
    """One checkpoint file's state: ``weights_only`` load, format check and
    :func:`validate_checkpoint`; raises (:class:`CorruptCheckpoint`, torch's or the OS's
    error) when it is not a state this code wrote."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(blob, dict):
        raise CorruptCheckpoint(f"file holds a {type(blob).__name__}, not a dict")
    if blob.get("format") != FORMAT_VERSION:
        raise CorruptCheckpoint(f"unknown checkpoint format {blob.get('format')!r:.40}")
    validate_checkpoint(blob["state"])
    return blob["state"]


def one_line(exc: BaseException, limit: int = 300) -> str:
    """The reason on one line of bounded length (torch's shape errors span many lines;
    a hostile file chooses its error text)."""
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[:limit] + "..."
