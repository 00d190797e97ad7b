"""Prometheus series (listed in docs/metrics.md) and the HTTP endpoint.

One port serves ``/metrics``, ``/healthz`` (alive and the loop is not stuck) and
``/readyz`` (consuming), with per-connection deadlines and a bound on open connections. Each daemon has its own registry, so several can share a
process in tests without clashing.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram,
                               Info, ProcessCollector, generate_latest)
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from .drift.export import DriftMetrics
from .federation.export import FederationMetrics
from .label_metrics import LabelMetrics
from .events import DLQ_REASONS
from .outputs import OUTPUT_FAILURE_REASONS
from .save_failures import CHECKPOINT_FAILURE_REASONS

log = logging.getLogger(__name__)

PREFIX = "stream_learner_"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                   300.0)
UPDATE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class BulkHistogram:
    """A histogram that takes a whole numpy array per call.

    prometheus_client's ``Histogram.observe`` costs a lock and a bucket search per
    value; at 100k events/s that is a visible share of the loop. Here one
    ``searchsorted`` + ``bincount`` handles a micro-batch. Exposition is standard.
    """

    def __init__(self, name: str, documentation: str, buckets: Sequence[float],
                 registry: CollectorRegistry) -> None:
        self.name = name
        self.documentation = documentation
        self._upper = np.array([*buckets, np.inf])
        self._counts = np.zeros(self._upper.size, dtype=np.int64)
        self._sum = 0.0
        self._lock = threading.Lock()
        registry.register(self)

    def observe_many(self, values: np.ndarray) -> None:
        if values.size == 0:
            return
        counts = np.bincount(np.searchsorted(self._upper, values, side="left"),
                             minlength=self._upper.size)
        with self._lock:
            self._counts += counts
            self._sum += float(values.sum())

    def quantile(self, q: float) -> float:
        """Upper bucket bound holding the q-quantile (what histogram_quantile bounds)."""
        with self._lock:
            cum = np.cumsum(self._counts)
        if cum[-1] == 0:
            return float("nan")
        return float(self._upper[np.searchsorted(cum, q * cum[-1], side="left")])

    def describe(self) -> Iterable[Metric]:
        return [HistogramMetricFamily(self.name, self.documentation)]

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            cum = np.cumsum(self._counts).tolist()
            total = self._sum
        buckets = [(floatToGoString(u), c) for u, c in zip(self._upper.tolist(), cum)]
        yield HistogramMetricFamily(self.name, self.documentation, buckets=buckets,
                                    sum_value=total)


class Metrics:
    """Every series the daemon exports, registered on its own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        p = PREFIX
        self.events_consumed = Counter(p + "events_consumed_total",
                                       "Events read from Kafka.", registry=r)
        self.events_learned = Counter(p + "events_learned_total",
                                      "Labeled events the model learned from.", registry=r)
        self.events_rejected = Counter(p + "events_rejected_total",
                                       "Events sent to the dead-letter topic.", ["reason"],
                                       registry=r)
        for reason in DLQ_REASONS:
            self.events_rejected.labels(reason)
        self.predictions = Counter(p + "predictions_total",
                                   "Predictions published for unlabeled events.", registry=r)
        self.consumer_lag = Gauge(p + "consumer_lag", "Messages behind the partition's end.",
                                  ["partition"], registry=r)
        self.last_event_ts = Gauge(p + "last_event_processed_timestamp_seconds",
                                   "When the last event was processed.", registry=r)
        self.update_duration = Histogram(p + "update_duration_seconds",
                                         "Time to predict and learn one micro-batch.",
                                         buckets=UPDATE_BUCKETS, registry=r)
        self.event_to_update = BulkHistogram(p + "event_to_update_seconds",
                                             "From the event's ts to the end of its update.",
                                             LATENCY_BUCKETS, r)
        self.prequential_accuracy = Gauge(p + "prequential_accuracy",
                                          "Test-then-train accuracy since start or restore.",
                                          registry=r)
        self.rolling_accuracy = Gauge(p + "rolling_accuracy",
                                      "Test-then-train accuracy over the recent window.",
                                      registry=r)
        self.loss = Gauge(p + "loss", "Training loss of the last update.", registry=r)
        self.replay_buffer_events = Gauge(p + "replay_buffer_events",
                                          "Events held in the replay buffer.", registry=r)
        self.model_classes = Gauge(p + "model_classes", "Classes the model knows.", registry=r)
        self.step_size = Gauge(p + "step_size_events", "New events per gradient step: "
                               "model.step_size while keeping up, more under backlog.",
                               registry=r)
        self.events_held_out = Counter(p + "events_held_out_total",
                                       "Events kept as forgetting probes, never learned.",
                                       registry=r)
        self.forgetting = Gauge(p + "forgetting", "Mean drop from each probe's best accuracy "
                                "to its accuracy now (0..1).", registry=r)
        self.backward_transfer = Gauge(p + "backward_transfer", "Mean change of closed "
                                       "periods' probe accuracy since their period closed.",
                                       registry=r)
        self.probe_accuracy = Gauge(p + "probe_accuracy", "Accuracy of each forgetting probe "
                                    "(slot 0 = oldest; bounded by probes.max_probes).",
                                    ["probe"], registry=r)
        self.steps_skipped = Counter(p + "steps_skipped_total", "Gradient steps not applied "
                                     "because the loss or a gradient was NaN/inf.", registry=r)
        self.checkpoint_last_success = Gauge(p + "checkpoint_last_success_timestamp_seconds",
                                             "When the last checkpoint was written.", registry=r)
        self.checkpoint_failures = Counter(
            p + "checkpoint_failures_total", "Checkpoint writes that failed (no_space, "
            "read_only, permission, io_error, other); retried with a backoff.", ["reason"],
            registry=r)
        for reason in CHECKPOINT_FAILURE_REASONS:
            self.checkpoint_failures.labels(reason)
        self.model_exports = Counter(p + "model_exports_total", "Periodic ONNX model "
                                     "exports (export.every_seconds), by outcome (ok, failed).",
                                     ["outcome"], registry=r)
        for outcome in ("ok", "failed"):
            self.model_exports.labels(outcome)
        self.checkpoint_duration = Histogram(p + "checkpoint_duration_seconds",
                                             "Time to write a checkpoint and commit offsets.",
                                             registry=r)
        self.kafka_errors = Counter(p + "kafka_errors_total",
                                    "Kafka operations that failed and will be retried.",
                                    ["operation"], registry=r)
        for op in ("connect", "poll", "commit", "produce"):
            self.kafka_errors.labels(op)
        self.output_failures = Counter(
            p + "output_failures_total", "DLQ and prediction records Kafka refused for good "
            "(too large, not authorised, unknown topic), spilled to undeliverable.jsonl "
            "after kafka.output_retry_seconds.", ["topic", "reason"], registry=r)
        self.output_pending_bytes = Gauge(
            p + "output_pending_bytes", "Bytes of DLQ and prediction records not yet "
            "acknowledged by Kafka (consumption pauses at kafka.max_pending_bytes).",
            registry=r)
        self.ready = Gauge(p + "ready", "1 while /readyz answers 200: consuming with an "
                           "assignment, and nothing blocks it (a full undeliverable.jsonl).",
                           registry=r)
        self.build_info = Info(p + "build", "Version of stream-learner.", registry=r)
        self.model_info = Info(p + "model", "Strategy and device of the model.", registry=r)
        self.drift = DriftMetrics(r, p)
        self.federation = FederationMetrics(r, p)
        self.labels = LabelMetrics(r, p, BulkHistogram)
        # process_cpu_seconds_total, process_resident_memory_bytes, process_start_time_seconds
        # (the restart-loop alert watches the last) under the standard names.
        ProcessCollector(registry=r)
        self.gpu_allocated: Gauge | None = None
        self.gpu_reserved: Gauge | None = None

    def declare_outputs(self, topics: Iterable[str]) -> None:
        """Every (topic, reason) of output_failures_total at 0: alerts need the series."""
        for topic in topics:
            for reason in OUTPUT_FAILURE_REASONS:
                self.output_failures.labels(topic, reason)

    def declare_worker(self, pid: Callable[[], int | None]) -> None:
        """CPU and memory of the learner worker process (stream_learner_worker_process_*)."""
        ProcessCollector(namespace=PREFIX + "worker", pid=lambda: pid() or "no-worker",
                         registry=self.registry)

    def declare_gpu(self) -> None:
        """GPU memory series; registered only when the model is on CUDA."""
        r, p = self.registry, PREFIX
        self.gpu_allocated = Gauge(p + "gpu_memory_allocated_bytes", "GPU memory held by "
                                   "tensors (torch.cuda.memory_allocated).", registry=r)
        self.gpu_reserved = Gauge(p + "gpu_memory_reserved_bytes", "GPU memory reserved by "
                                  "torch's caching allocator (memory_reserved).", registry=r)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


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


class MetricsServer:
    """/metrics, /healthz and /readyz on one port, served by one asyncio loop thread.

    Not http.server's thread per connection: there an idle socket holds a thread forever
    (no timeouts) and a backlog of 5 leaves new connections waiting behind them, so a few
    hundred idle connections (a port scan, a stuck scraper) kept the kubelet's probe from
    getting through and a healthy daemon was restarted. Here an open connection costs a
    file descriptor, not a thread; each has a deadline (``timeout``: the whole request
    must arrive, and the answer be taken, within it) and at most ``max_connections`` are
    held: a new one beyond that closes the connection idle longest, or, when every held
    connection is mid-answer, is answered 503 and closed at once. Nothing waits in a
    queue, so /healthz answers within its own round trip however many sockets are open.
    Exposition runs on one worker thread, so a slow scrape never delays /healthz.
    """

    def __init__(self, metrics: Metrics, health: Health, host: str, port: int,
                 max_connections: int = 32, timeout: float = 5.0) -> None:
        self.max_connections = max_connections
        self.timeout = timeout
        self._routes = _Routes(metrics, health)
        family = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                    flags=socket.AI_PASSIVE)[0][0]
        # Bound here, not in start(): a taken port fails the caller at once (cli reports it).
        self._sock = socket.create_server((host, port), family=family, backlog=LISTEN_BACKLOG)
        self._port = int(self._sock.getsockname()[1])
        self._loop = asyncio.new_event_loop()
        self._held: set[asyncio.StreamWriter] = set()
        self._idle: dict[asyncio.StreamWriter, None] = {}   # insertion order: oldest first
        self._scrape = ThreadPoolExecutor(max_workers=1, thread_name_prefix="metrics-scrape")
        self._started = threading.Event()
        self._stopping: asyncio.Event | None = None
        self._last_full_warning = -math.inf
        self._thread = threading.Thread(target=self._run, name="metrics-http", daemon=True)

    @property
    def port(self) -> int:
        return self._port

    def start(self) -> "MetricsServer":
        self._thread.start()
        if not self._started.wait(10.0):
            raise OSError("metrics server did not start within 10 s")
        return self

    def stop(self) -> None:
        if self._thread.is_alive() and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
            self._thread.join(10.0)
        elif not self._thread.is_alive():
            self._sock.close()
        self._scrape.shutdown(wait=False, cancel_futures=True)

    # -- the loop thread -------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._loop.run_until_complete(self._main())
        finally:
            self._loop.close()
            self._sock.close()

    async def _main(self) -> None:
        self._stopping = asyncio.Event()
        server = await asyncio.start_server(self._connection, sock=self._sock,
                                            limit=MAX_REQUEST_HEAD_BYTES)
        self._started.set()
        await self._stopping.wait()
        server.close()
        for writer in list(self._held):
            writer.transport.abort()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _admit(self, writer: asyncio.StreamWriter) -> bool:
        """Hold ``writer`` if there is room, making room by closing the longest-idle one."""
        if len(self._held) >= self.max_connections:
            if not self._idle:
                return False
            oldest = next(iter(self._idle))
            self._release(oldest)
            oldest.transport.abort()
            self._warn_full("closing the longest-idle connection")
        self._held.add(writer)
        return True

    def _release(self, writer: asyncio.StreamWriter) -> None:
        self._held.discard(writer)
        self._idle.pop(writer, None)

    def _warn_full(self, action: str) -> None:
        now = time.monotonic()
        if now - self._last_full_warning >= 60.0:      # one line a minute, not one per socket
            self._last_full_warning = now
            log.warning("metrics server: %d connections open (metrics.max_connections): %s",
                        len(self._held), action)

    async def _connection(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        try:
            if not self._admit(writer):
                self._warn_full("answering 503")
                writer.write(_response(503, b"too many connections\n", keep_alive=False))
                # Read what the client sent before closing: closing with unread bytes
                # makes the kernel send RST, which can discard the 503 on the way.
                writer.write_eof()
                await asyncio.wait_for(reader.read(MAX_REQUEST_HEAD_BYTES), REJECT_LINGER_S)
                return
            keep_alive = True
            while keep_alive:
                self._idle[writer] = None
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.timeout)
                self._idle.pop(writer, None)             # mid-answer: not to be evicted
                keep_alive = await self._answer(head, writer)
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, OSError):
            pass                                         # deadline, peer gone or evicted
        except asyncio.LimitOverrunError:
            writer.write(_response(431, b"request head too large\n", keep_alive=False))
        finally:
            self._release(writer)
            writer.close()

    async def _answer(self, head: bytes, writer: asyncio.StreamWriter) -> bool:
        """Write the answer to one request head; False when the connection must close."""
        request = _parse(head)
        if request is None:
            writer.write(_response(400, b"not an HTTP request\n", keep_alive=False))
            return False
        method, path, keep_alive = request
        if method not in ("GET", "HEAD"):
            writer.write(_response(405, b"GET only\n", keep_alive=False,
                                   extra=b"Allow: GET, HEAD\r\n"))
            return False
        if path == "/metrics":
            code, body, ctype = await self._loop.run_in_executor(self._scrape,
                                                                 self._routes.metrics)
        else:
            code, body, ctype = self._routes.get(path)
        writer.write(_response(code, body, keep_alive, ctype=ctype,
                               send_body=method == "GET"))
        await asyncio.wait_for(writer.drain(), self.timeout)
        return keep_alive


LISTEN_BACKLOG = 512            # the kernel caps it at net.core.somaxconn
MAX_REQUEST_HEAD_BYTES = 16 * 1024
REJECT_LINGER_S = 0.5           # how long a refused connection may take to send its request
TEXT = "text/plain; charset=utf-8"
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            431: "Request Header Fields Too Large", 503: "Service Unavailable"}


class _Routes:
    """What each path answers: (status, body, content type)."""

    def __init__(self, metrics: Metrics, health: Health) -> None:
        self._metrics, self._health = metrics, health

    def metrics(self) -> tuple[int, bytes, str]:
        return 200, self._metrics.exposition(), CONTENT_TYPE_LATEST

    def get(self, path: str) -> tuple[int, bytes, str]:
        if path == "/healthz":
            ok = self._health.alive()
            return (200, b"ok\n", TEXT) if ok else (503, b"loop stalled\n", TEXT)
        if path == "/readyz":
            ok = self._health.is_ready()
            return (200 if ok else 503), self._health.readiness_text(), TEXT
        return 404, b"try /metrics, /healthz or /readyz\n", TEXT


def _parse(head: bytes) -> tuple[str, str, bool] | None:
    """(method, path, keep-alive) of a request head, or None when it is not HTTP/1.x.

    A request with a body (Content-Length or Transfer-Encoding) is answered and the
    connection closed, as its unread body would otherwise be taken for the next request.
    """
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        return None
    method, target, version = parts
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip().lower()
    connection = headers.get("connection", "")
    keep_alive = "keep-alive" in connection if version == "HTTP/1.0" else "close" not in connection
    if headers.get("content-length", "0") != "0" or "transfer-encoding" in headers:
        keep_alive = False
    return method, target.split("?", 1)[0], keep_alive


def _response(code: int, body: bytes, keep_alive: bool, ctype: str = TEXT,
              send_body: bool = True, extra: bytes = b"") -> bytes:
    head = (f"HTTP/1.1 {code} {_REASONS[code]}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\n"
            f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n").encode("latin-1")
    return head + extra + b"\r\n" + (body if send_body else b"")
