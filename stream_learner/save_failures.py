"""What the daemon does while checkpoints cannot be written (disk full, read-only, EIO).

A failed write must not crash the loop (a restart would fail the same way and replay
more each time) and must not go unnoticed: every failure is counted by reason in
``stream_learner_checkpoint_failures_total``, logged once per reason until a write
succeeds again, and fails readiness with one line naming the directory. Writes are
retried with a backoff (a full model serialisation per loop turn would starve
learning); the daemon pauses consumption once ``checkpoint.max_unsaved_events`` events
wait unsaved, so a crash never replays more than that.

>>> from stream_learner.metrics import Health
>>> from prometheus_client import CollectorRegistry, Counter
>>> h = Health(60.0); h.ready = True
>>> c = Counter("f", "f", ["reason"], registry=CollectorRegistry())
>>> s = SaveFailures(h, c, "/ckpt", clock=lambda: 100.0)
>>> s.failed(OSError(28, "No space left on device"), unsaved=7)
>>> s.failing, s.may_retry(), h.is_ready(), c.labels("no_space")._value.get()
(True, False, False, 1.0)
>>> s.succeeded(); s.failing, h.is_ready()
(False, True)
"""

from __future__ import annotations

import errno
import logging
import time
from pathlib import Path
from typing import Callable, Protocol

from prometheus_client import Counter

log = logging.getLogger(__name__)

# errno -> reason label (a small fixed set: label values are declared up front).
_REASONS = {errno.ENOSPC: "no_space", errno.EDQUOT: "no_space", errno.EROFS: "read_only",
            errno.EACCES: "permission", errno.EPERM: "permission", errno.EIO: "io_error"}
CHECKPOINT_FAILURE_REASONS: tuple[str, ...] = ("no_space", "read_only", "permission",
                                               "io_error", "other")
_FIRST_RETRY_S = 1.0
_MAX_RETRY_S = 10.0


class Readiness(Protocol):
    def block(self, name: str, why: str | None) -> None: ...


def failure_reason(exc: OSError) -> str:
    return _REASONS.get(exc.errno or 0, "other")


class SaveFailures:
    """Backoff, counting, logging and readiness for failing checkpoint writes."""

    def __init__(self, health: Readiness, counter: Counter, directory: str | Path,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.health, self.counter, self.directory, self.clock = health, counter, directory, clock
        self._logged: set[str] = set()
        self._delay = 0.0
        self._retry_at = 0.0

    @property
    def failing(self) -> bool:
        return self._delay > 0

    def may_retry(self) -> bool:
        return self.clock() >= self._retry_at

    def failed(self, exc: OSError, unsaved: int) -> None:
        reason = failure_reason(exc)
        self.counter.labels(reason).inc()
        self._delay = min(max(self._delay * 2, _FIRST_RETRY_S), _MAX_RETRY_S)
        self._retry_at = self.clock() + self._delay
        line = (f"checkpoints fail in {self.directory} ({reason}: {exc.strerror or exc}); "
                f"{unsaved} events wait unsaved")
        self.health.block("checkpoint", line)
        if reason not in self._logged:      # once per reason until a write succeeds
            self._logged.add(reason)
            log.error("%s; retrying every <= %.0fs, consumption pauses at "
                      "checkpoint.max_unsaved_events", line, _MAX_RETRY_S)

    def succeeded(self) -> None:
        if self.failing:
            log.warning("checkpoints in %s succeed again", self.directory)
        self._logged.clear()
        self._delay = self._retry_at = 0.0
        self.health.block("checkpoint", None)
