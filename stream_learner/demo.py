"""``stream-learner demo``: embedded broker + drifting producer + daemon, watched live."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from .broker import EmbeddedBroker
from .config import Settings
from .daemon import Daemon
from .events import TOO_LARGE
from .logs import configure_logging
from .synth import BAD_REASONS, ensure_topics

DRIFT_EVERY = 50_000
EXPLAIN = (
    "A synthetic SEA stream (3 features, 2 classes) is published to Kafka. Every "
    f"{DRIFT_EVERY:,} events the concept changes (the rule mapping features to labels), "
    "so accuracy dips and recovers. About 5% of events are malformed on purpose: they go "
    "to the dead-letter topic with a reason. 1% arrive unlabeled and get predictions.")


def run_demo(seconds: float, metrics_port: int, stream: str = "mixed",
             rate: float = 5000.0) -> int:
    console = Console()
    workdir = Path(tempfile.mkdtemp(prefix="stream-learner-demo-"))
    log_file = workdir / "daemon.log"
    configure_logging("INFO", stream=open(log_file, "a"))
    with console.status("starting the embedded Kafka-compatible broker (Tansu)..."):
        broker = EmbeddedBroker(log_file=workdir / "broker.log").start()
    producer: subprocess.Popen[bytes] | None = None
    try:
        bs = broker.bootstrap_servers
        ensure_topics(bs, {"events": 4, "events.dlq": 1, "events.predictions": 1})
        # Oversize events are left out: at demo rates they would fill the in-memory broker.
        reasons = ",".join(r for r in BAD_REASONS if r != TOO_LARGE)
        producer = subprocess.Popen(
            [sys.executable, "-m", "stream_learner", "produce", "--stream", stream,
             "--count", str(int(rate * (seconds + 30))), "--rate", str(rate),
             "--topic", "events", "--bootstrap-servers", bs, "--unlabeled-fraction", "0.01",
             "--bad-reasons", reasons, "--drift-every", str(DRIFT_EVERY)],
            stdout=subprocess.DEVNULL, stderr=open(workdir / "producer.log", "wb"))
        settings = Settings(
            kafka={"bootstrap_servers": bs, "session_timeout_ms": 6000,
                   "heartbeat_interval_ms": 2000},
            checkpoint={"dir": workdir / "checkpoints", "every_seconds": 5.0},
            metrics={"host": "127.0.0.1", "port": metrics_port})
        daemon = Daemon(settings)
        daemon.install_signal_handlers()
        port = daemon.start_http()
        console.print(Panel(Text(EXPLAIN), title="stream-learner demo"))
        console.print(f"broker {bs} | metrics http://127.0.0.1:{port}/metrics | "
                      f"logs and checkpoints in {workdir}")
        stop_at = time.monotonic() + seconds
        threading.Thread(target=_stop_later, args=(daemon, stop_at), daemon=True).start()
        view = _View(daemon, stop_at)
        with Live(view.render(), console=console, refresh_per_second=2) as live:
            threading.Thread(target=view.follow, args=(live,), daemon=True).start()
            code = daemon.run()
        console.print(view.render())
        console.print(f"stopped cleanly: final checkpoint {daemon.last_checkpoint_path}")
        return code
    finally:
        if producer is not None:
            producer.terminate()
            producer.wait()
        broker.stop()


def _stop_later(daemon: Daemon, stop_at: float) -> None:
    while time.monotonic() < stop_at and not daemon.stopping:
        time.sleep(0.2)
    daemon.request_stop()


class _View:
    """Reads the daemon's counters from another thread; plain ints and floats only."""

    def __init__(self, daemon: Daemon, stop_at: float) -> None:
        self.daemon = daemon
        self.stop_at = stop_at
        self.rate = 0.0
        self._last = (time.monotonic(), 0)

    def follow(self, live: Live) -> None:
        while not self.daemon.stopping:
            time.sleep(1.0)
            now, consumed = time.monotonic(), self.daemon.counters.consumed
            t0, c0 = self._last
            self.rate = (consumed - c0) / max(now - t0, 1e-9)
            self._last = (now, consumed)
            live.update(self.render())

    def render(self) -> Group:
        d = self.daemon
        c = d.counters
        table = Table(show_header=False, box=None, padding=(0, 2))
        table.add_column(style="bold")
        table.add_column()
        table.add_row("events/s", f"{self.rate:,.0f}")
        table.add_row("consumed", f"{c.consumed:,}  (learned {c.learned:,}, "
                                  f"held out as probes {c.held_out:,}, "
                                  f"predicted {c.predicted:,})")
        table.add_row("prequential accuracy", f"{d.accuracy.accuracy:.3f}  (since start)")
        table.add_row("rolling accuracy", f"{d.accuracy.rolling_accuracy:.3f}  "
                                          f"(last {d.accuracy.window:,} events)")
        table.add_row("forgetting", f"{d.forgetting:.3f}  (probe "
                                    "accuracy lost since its best)")
        table.add_row("drift", _drift_line(d))
        rejected = ", ".join(f"{k} {v}" for k, v in sorted(c.rejected.items())) or "none"
        table.add_row("rejected → DLQ", f"{c.rejected_total:,}  ({rejected})")
        table.add_row("consumer lag", f"{d.lag_total:,} events")
        table.add_row("classes", ", ".join(map(str, d.learner.info.labels)) or "none yet")
        ckpt = d.last_checkpoint_path
        age = time.time() - d.checkpoints.last_checkpoint_time
        table.add_row("last checkpoint", f"{Path(ckpt).name} ({age:.0f}s ago)" if ckpt
                      else "none yet")
        left = max(self.stop_at - time.monotonic(), 0.0)
        return Group(table, Text(f"stopping in {left:.0f}s (Ctrl-C stops now)", style="dim"))


def _drift_line(d: Daemon) -> str:
    r = d.drift
    if r is None:
        return "watching (after the warm-up)"
    drifts = sum(v for k, v in r.drifts.items() if not k.startswith("input:"))
    if not drifts:
        return "none detected yet"
    ago = time.time() - r.last_drift_time
    acted = ", ".join(f"{k} {v}" for k, v in sorted(r.adaptations.items())) or "none"
    return (f"{drifts} detected (last {ago:.0f}s ago); adapted: {acted}; on concept "
            f"{r.concept_id} of {r.concepts_known} known, {r.concept_reuse} recalled")
