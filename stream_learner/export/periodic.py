"""The daemon's optional periodic export (``export.every_seconds`` > 0): after a
checkpoint is saved and committed, the checkpoint just written is exported as the next
version and old versions past ``export.keep`` are removed.  A failure (onnx missing,
disk full) is logged on one line and counted; it never stops the loop."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from prometheus_client import Counter

from ..config import ExportSettings

log = logging.getLogger(__name__)


class PeriodicExporter:
    def __init__(self, settings: ExportSettings, exports: Counter) -> None:
        self.settings = settings
        self.exports = exports
        self.last_export = float("-inf")
        self._last_version = 0

    def _root(self) -> Path:
        s = self.settings
        return s.dir / s.name if s.layout == "triton" else s.dir

    def due(self, now: float) -> bool:
        every = self.settings.every_seconds
        return every > 0 and now - self.last_export >= every

    def after_checkpoint(self, checkpoint: str | Path) -> bool:
        """Exports ``checkpoint`` when due; True when an export was written."""
        now = time.monotonic()
        if not self.due(now):
            return False
        self.last_export = now
        try:
            path = self.export(Path(checkpoint))
        except Exception as exc:  # noqa: BLE001 - an export must never stop learning
            self.exports.labels("failed").inc()
            log.warning("model export of %s failed: %s", checkpoint,
                        " ".join(str(exc).split())[:300] or type(exc).__name__)
            return False
        self.exports.labels("ok").inc()
        log.info("exported %s to %s", checkpoint, path)
        return True

    def export(self, checkpoint: Path) -> Path:
        # Imported here: onnx is the optional [export] extra, and the daemon without
        # periodic export must not need it.
        from .layout import prune, versions, write
        from .source import read_checkpoint
        s = self.settings
        root = self._root()
        version = max([self._last_version, *versions(root)]) + 1
        arrays = read_checkpoint(checkpoint)
        if s.layout == "triton":
            path = write(arrays, s.dir, "triton", s.name, version)
        else:
            path = write(arrays, root / str(version), "plain")
        self._last_version = version
        prune(root, s.keep)
        return path
