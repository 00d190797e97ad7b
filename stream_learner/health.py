"""What /healthz and /readyz report: alive (the loop ticked recently) and ready
(consuming, with nothing blocking it).

Apart from the registry and the server: the loop, the checkpoint coordinator and the
save-failure rule set it, the HTTP server only reads it.
"""

from __future__ import annotations

import time


class Health:
    """What /healthz and /readyz report; the daemon loop ticks it."""

    def __init__(self, stall_seconds: float) -> None:
        self.stall_seconds = stall_seconds
        self.last_tick = time.monotonic()
        self.ready = False          # consuming with an assignment
        # Why the daemon is not fit to serve although consuming (name -> one line),
        # e.g. a full undeliverable.jsonl: /readyz fails and says so.
        self.blockers: dict[str, str] = {}

    def block(self, name: str, why: str | None) -> None:
        """Set (``why``) or clear (None) one reason for failing readiness."""
        if why is None:
            self.blockers.pop(name, None)
        else:
            self.blockers[name] = why

    def is_ready(self) -> bool:
        return self.ready and not self.blockers

    def readiness_text(self) -> bytes:
        if self.is_ready():
            return b"ready\n"
        if not self.ready:
            return b"not consuming\n"
        return "".join(f"{why}\n" for why in self.blockers.values()).encode()

    def tick(self) -> None:
        self.last_tick = time.monotonic()

    def alive(self) -> bool:
        return time.monotonic() - self.last_tick < self.stall_seconds
