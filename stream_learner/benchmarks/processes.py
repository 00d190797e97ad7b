"""``stream-learner run`` as a child process: what the tests and the multi-daemon
benchmarks share.  Configured through env vars, as an operator would; observed through
its ``/metrics`` endpoint, never through its insides."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

from ..broker import free_port

ROOT = Path(__file__).resolve().parents[2]


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.1) -> Any:
    """``predicate()``'s first truthy value; ``AssertionError`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def http_get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def parse_metrics(text: str) -> dict[str, float]:
    """'name{labels}' -> value for every sample line.

    >>> parse_metrics('# HELP x y\\nx_total 3.0\\nx{a="b"} 1')
    {'x_total': 3.0, 'x{a="b"}': 1.0}
    """
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


class DaemonProcess:
    """``stream-learner run`` as a child process, configured through env vars."""

    def __init__(self, bootstrap: str, ckpt_dir: Path | None, topic: str, group: str,
                 extra_env: dict[str, str] | None = None, args: list[str] | None = None,
                 log_path: Path | None = None, module: str = "stream_learner") -> None:
        """``module``: what ``python -m`` runs (a benchmark-side wrapper of the CLI)."""
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_LEARNER_")}
        env.update({
            "STREAM_LEARNER_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
            "STREAM_LEARNER_KAFKA__TOPIC": topic,
            "STREAM_LEARNER_KAFKA__GROUP_ID": group,
            "STREAM_LEARNER_KAFKA__DLQ_TOPIC": f"{topic}.dlq",
            "STREAM_LEARNER_KAFKA__PREDICTIONS_TOPIC": f"{topic}.predictions",
            "STREAM_LEARNER_KAFKA__SESSION_TIMEOUT_MS": "6000",
            "STREAM_LEARNER_KAFKA__HEARTBEAT_INTERVAL_MS": "1000",
            "STREAM_LEARNER_METRICS__HOST": "127.0.0.1",
            "STREAM_LEARNER_METRICS__PORT": str(self.port),
            "STREAM_LEARNER_MODEL__DEVICE": "cpu",
        })
        if ckpt_dir is not None:   # None: the daemon's own default ($STATE_DIRECTORY, say)
            env["STREAM_LEARNER_CHECKPOINT__DIR"] = str(ckpt_dir)
        env.update(extra_env or {})
        if log_path is None:
            assert ckpt_dir is not None, "log_path is needed without ckpt_dir"
            log_path = ckpt_dir.parent / f"daemon-{self.port}.log"
        self.log_path = log_path
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.env = env
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", module, "run", *(args or [])],
                                     env=env, cwd=ROOT, stdout=self._log, stderr=self._log)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def metrics(self) -> dict[str, float]:
        try:
            code, text = http_get(self.url + "/metrics")
        except OSError:
            return {}
        return parse_metrics(text) if code == 200 else {}

    def metric(self, name: str, default: float = -1.0) -> float:
        return self.metrics().get(name, default)

    def wait_consumed(self, n: int, timeout: float = 90.0) -> None:
        def done() -> bool:
            self.assert_alive()
            return self.metric("stream_learner_events_consumed_total") >= n
        wait_for(done, timeout, f"{n} events consumed (log: {self.log_path})")

    def assert_alive(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(f"daemon exited with {self.proc.returncode}; "
                                 f"log:\n{self.log_path.read_text()[-3000:]}")

    def terminate(self, timeout: float = 60.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()
