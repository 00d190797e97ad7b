"""systemd's notify protocol (sd_notify(3)), self-contained: one datagram per message.

Under ``Type=notify`` systemd passes ``NOTIFY_SOCKET`` (and ``WATCHDOG_USEC`` when the
unit sets ``WatchdogSec``). Outside systemd every call is a no-op, so the daemon calls
these unconditionally.

>>> import socket, tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "notify")
>>> listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); listener.bind(path)
>>> n = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000"})
>>> n.ready("consuming"), n.watchdog_interval_s
(True, 1.0)
>>> listener.recv(4096).decode().split("\\n")
['READY=1', 'STATUS=consuming']
>>> Notifier({}).ready("nobody listens")
False
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Mapping

log = logging.getLogger(__name__)


class Notifier:
    """Sends READY, WATCHDOG, STATUS and STOPPING to systemd when it is listening."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self._address = _socket_address(env.get("NOTIFY_SOCKET", ""))
        self._sock: socket.socket | None = None
        self.watchdog_interval_s: float | None = None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        # WATCHDOG_PID names the process systemd watches; a child that inherited our
        # environment must not ping for us.
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_interval_s = int(usec) / 2e6   # ping at half the timeout (sd_notify(3))
        self._next_ping = 0.0
        self._failed = False

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, *fields: str) -> bool:
        """Send ``KEY=value`` fields in one datagram; False when nobody listens."""
        if self._address is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._sock.setblocking(False)   # the loop must never wait on systemd
            self._sock.sendto("\n".join(fields).encode(), self._address)
            return True
        except OSError as exc:
            if not self._failed:   # once: systemd gone is not worth a log line per loop
                log.warning("systemd notification to %s failed: %s", self._address, exc)
                self._failed = True
            return False

    def ready(self, status: str) -> bool:
        return self.notify("READY=1", f"STATUS={status}")

    def status(self, status: str) -> bool:
        return self.notify(f"STATUS={status}")

    def stopping(self, status: str = "stopping: final checkpoint") -> bool:
        return self.notify("STOPPING=1", f"STATUS={status}")

    def watchdog(self, now: float | None = None) -> bool:
        """Ping the watchdog if half its timeout has passed since the last ping.

        Called from the main loop only: a stuck loop stops pinging and systemd restarts
        the service (``Restart=on-failure`` counts a watchdog timeout as a failure).
        """
        if self.watchdog_interval_s is None:
            return False
        now = time.monotonic() if now is None else now
        if now < self._next_ping:
            return False
        self._next_ping = now + self.watchdog_interval_s
        return self.notify("WATCHDOG=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _socket_address(value: str) -> str | None:
    """A path, or ``@name`` for an abstract socket; None for unset or unsupported ones."""
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    if value:
        log.warning("NOTIFY_SOCKET=%s not supported (only unix sockets); not notifying", value)
    return None
