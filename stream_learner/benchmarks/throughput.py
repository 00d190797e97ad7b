"""``stream-learner bench throughput``: end-to-end events/s, accuracy and latency, one run.

Everything is measured in the run that prints it, on the same data:

1. An embedded Tansu broker; ``N`` SEA-drift events (built once from one seed with
   :func:`stream_learner.synth.take`, so the Kafka paths and the learner core see
   identical float32 features) are produced to a 4-partition topic, event ``i`` to
   partition ``i % 4``.
2. Raw kafka-python consume rate of that topic (records only, no JSON decode).
3. The daemon, in-process (its learner in a worker process, as deployed; the worker's
   CPU counts as ours), for ``naive`` and ``replay`` (batch 1024, and 2048 for replay),
   each as a new consumer group reading the same topic from the start.
4. The learner core without Kafka, on the same events as numpy arrays, doing the
   daemon's prequential steps per micro-batch.
5. river baselines (ARF, scaled logistic regression), prequential, with our replay
   learner's accuracy on exactly the same events next to them.
6. The same accuracy comparison on Hyperplane and Agrawal.
7. ``event_to_update_seconds`` under an offered load from a producer subprocess.

Rates exclude the consumer-group join (a few seconds with Tansu): a Kafka rate runs
from the moment the first records were handed over to the moment the last one was
done, and counts every record, the first batch included.  An untimed learner-core
pass runs first, because torch's first steps in a process are several times slower.

The daemon reads the pre-produced backlog partition by partition (each fetch brings
megabytes of one partition), so its prequential accuracy is over a different event
order than the learner core's, which sees the stream in order.

Options (keyword arguments of :func:`main`, or ``STREAM_LEARNER_BENCH_<NAME>`` env
vars): the fields of :class:`BenchConfig`, e.g. ``STREAM_LEARNER_BENCH_N=50000`` or
``STREAM_LEARNER_BENCH_TORCH_THREADS=1``.  Each measurement also records the CPU it
used and the CPU other processes on the machine used meanwhile ("other load"):
on a shared 2-core machine that is what makes two runs differ.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from .common import DRIFT_OFF, apply_options, machine_info, progress, write_and_report

log = logging.getLogger(__name__)

DEFAULT_OUT = Path("bench-results/throughput.json")
STREAM = "sea"
PARTITIONS = 4
SEED = 42

# Bars (printed pass/fail; the run itself always completes).
BAR_E2E_RATE = 50_000.0
BAR_E2E_VS_RAW = 0.6
BAR_P99_SECONDS = 0.5
BAR_CONTINUAL_VS_REPLAY = 0.5      # daemon with the default forgetting-aware config
BAR_DRIFT_VS_NONE = 0.9            # daemon replay with vs without drift handling
CONTINUAL = "continual"            # strategy.name with its defaults (LwF + one-step MER)



@dataclass
class BenchConfig:
    """Sizes of one run; ``quick`` shrinks them, env vars / options override."""

    n: int = 300_000                   # SEA events through Kafka and the learner core
    arf_events: int = 50_000           # first K SEA events for ARF (and the fair comparison)
    accuracy_events: int = 50_000      # first K events of Hyperplane / Agrawal
    latency_events: int = 100_000      # events offered during the latency run
    latency_rate: float = 10_000.0     # offered events/s during the latency run
    batch_sizes: tuple[int, ...] = (1024, 2048)   # replay runs; naive runs at the first
    producers: int = 2                 # parallel producer processes for the pre-produce
    warmup_events: int = 20_000        # untimed learner-core pass first (torch's lazy init)
    torch_threads: int = 1             # torch.set_num_threads (0 = default); 1 matches model.threads
    seed: int = SEED
    stream: str = STREAM
    partitions: int = PARTITIONS

    @classmethod
    def build(cls, quick: bool, **overrides: Any) -> "BenchConfig":
        cfg = cls(n=30_000, arf_events=20_000, accuracy_events=10_000,
                  latency_events=30_000) if quick else cls()
        apply_options(cfg, overrides, "throughput")
        cfg.arf_events = min(cfg.arf_events, cfg.n)
        if cfg.n < 1 or cfg.arf_events < 1 or cfg.accuracy_events < 1 or cfg.latency_events < 1:
            raise ValueError("benchmark sizes must be positive")
        if not cfg.batch_sizes:
            raise ValueError("batch_sizes must not be empty")
        return cfg


class CpuMeter:
    """CPU used during a measurement: by us (this process, its children, the broker)
    and by everything else on the machine (other tenants make rates noisy)."""

    def __init__(self, extra_pids: list[int] | None = None) -> None:
        self.extra_pids = extra_pids or []
        self.tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def _machine(self) -> tuple[float, float] | None:
        try:
            fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        except (OSError, ValueError):
            return None
        user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
        return (user + nice + system + irq + softirq) / self.tick, steal / self.tick

    def _own(self) -> float:
        import resource
        total = 0.0
        for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
            r = resource.getrusage(who)
            total += r.ru_utime + r.ru_stime
        for pid in self.extra_pids:
            try:
                parts = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(parts[11]) + int(parts[12])) / self.tick
            except (OSError, IndexError, ValueError):
                pass
        return total

    def snapshot(self) -> tuple[float, tuple[float, float] | None, float]:
        return time.perf_counter(), self._machine(), self._own()

    def since(self, start: tuple[float, tuple[float, float] | None, float]) -> dict[str, Any]:
        t1, mach1, own1 = self.snapshot()
        t0, mach0, own0 = start
        wall = max(t1 - t0, 1e-9)
        out: dict[str, Any] = {"own_cpus": (own1 - own0) / wall}
        if mach0 is not None and mach1 is not None:
            busy = mach1[0] - mach0[0]
            out["machine_busy_cpus"] = busy / wall
            out["background_cpus"] = max(busy - (own1 - own0), 0.0) / wall
            out["steal_cpus"] = (mach1[1] - mach0[1]) / wall
        return out


# ----------------------------------------------------------------------------- produce

def build_values(X: np.ndarray, y: np.ndarray) -> list[bytes]:
    """Contract events of ``X``/``y``; float32 features survive the JSON round trip exactly."""
    from ..synth import encode_event

    ts = time.time()
    return [encode_event(row, label, event_id=str(i), ts=ts)
            for i, (row, label) in enumerate(zip(X.tolist(), y.tolist()))]


def _produce_worker(bootstrap: str, topic: str,
                    items: list[tuple[int, bytes]]) -> tuple[int, int, float]:
    """Send ``(partition, value)`` items in order; returns (acked, failed, seconds)."""
    from kafka import KafkaProducer

    from ..synth import PRODUCER_DEFAULTS

    ok = failed = 0
    lock = threading.Lock()

    def success(_: Any) -> None:
        nonlocal ok
        with lock:
            ok += 1

    def failure(_: BaseException) -> None:
        nonlocal failed
        with lock:
            failed += 1

    producer = KafkaProducer(bootstrap_servers=bootstrap, **PRODUCER_DEFAULTS)
    t0 = time.perf_counter()
    try:
        for partition, value in items:
            fut = producer.send(topic, value=value, partition=partition)
            fut.add_callback(success)
            fut.add_errback(failure)
        producer.flush()
    finally:
        producer.close()
    return ok, failed, time.perf_counter() - t0


def produce_values(bootstrap: str, topic: str, values: list[bytes], partitions: int,
                   processes: int) -> dict[str, Any]:
    """Event ``i`` → partition ``i % partitions``; ``processes`` producers split partitions."""
    processes = max(1, min(processes, partitions))
    shares: list[list[tuple[int, bytes]]] = [[] for _ in range(processes)]
    for i, value in enumerate(values):
        p = i % partitions
        shares[p % processes].append((p, value))
    t0 = time.perf_counter()
    if processes == 1:
        results = [_produce_worker(bootstrap, topic, shares[0])]
    else:
        with ProcessPoolExecutor(processes, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(_produce_worker, bootstrap, topic, share)
                       for share in shares]
            results = [f.result() for f in futures]
    wall = time.perf_counter() - t0
    acked = sum(r[0] for r in results)
    failed = sum(r[1] for r in results)
    if failed or acked != len(values):
        raise RuntimeError(f"pre-produce incomplete: {acked} acked, {failed} failed "
                           f"of {len(values)}")
    sending = max(r[2] for r in results)
    return {"events": acked, "processes": processes, "seconds": wall,
            "send_seconds": sending, "rate": acked / sending if sending else 0.0}


def end_offsets(bootstrap: str, topic: str) -> int:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        ends = consumer.end_offsets([TopicPartition(topic, p) for p in parts])
        return int(sum(ends.values()))
    finally:
        consumer.close()


# ----------------------------------------------------------------------------- raw consume

def raw_consume(bootstrap: str, topic: str, n: int, timeout_s: float,
                meter: CpuMeter | None = None) -> dict[str, Any]:
    """kafka-python alone: poll until ``n`` records, no decoding."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, group_id=f"bench-raw-{uuid.uuid4().hex[:8]}",
        enable_auto_commit=False, auto_offset_reset="earliest", session_timeout_ms=6000,
        heartbeat_interval_ms=2000, check_crcs=True, max_poll_records=1024,
        max_partition_fetch_bytes=8 * 1024 * 1024, fetch_max_bytes=64 * 1024 * 1024)
    try:
        start = time.perf_counter()
        consumer.subscribe([topic])
        deadline = start + timeout_s
        got, nbytes = 0, 0
        t_first = t_last = None
        mark = None
        while got < n and time.perf_counter() < deadline:
            polled = consumer.poll(timeout_ms=200)
            if not polled:
                continue
            now = time.perf_counter()
            if t_first is None:
                t_first = now
                mark = meter.snapshot() if meter else None
            for recs in polled.values():
                got += len(recs)
                for r in recs:
                    nbytes += len(r.value)
            t_last = time.perf_counter()
        if got < n or t_first is None or t_last is None:
            raise RuntimeError(f"raw consumer got {got} of {n} records in {timeout_s:.0f}s")
        seconds = t_last - t_first
        return {"events": got, "seconds": seconds, "rate": got / seconds,
                "join_seconds": t_first - start, "bytes": nbytes,
                "mb_per_s": nbytes / seconds / 1e6,
                "cpu": meter.since(mark) if meter and mark else {}}
    finally:
        consumer.unsubscribe()
        consumer.close(autocommit=False)


# ----------------------------------------------------------------------------- daemon

def daemon_settings(bootstrap: str, topic: str, strategy: str, batch_size: int,
                    checkpoint_dir: Path, **kafka: Any) -> Any:
    from ..config import Settings

    return Settings(
        kafka={"bootstrap_servers": bootstrap, "topic": topic,
               "group_id": f"bench-{strategy}-{batch_size}-{uuid.uuid4().hex[:8]}",
               "dlq_topic": f"{topic}.dlq", "predictions_topic": f"{topic}.predictions",
               "auto_offset_reset": "earliest", "session_timeout_ms": 6000,
               "heartbeat_interval_ms": 2000, **kafka},
        batch={"size": batch_size},
        checkpoint={"dir": checkpoint_dir},
        metrics={"host": "127.0.0.1", "port": 0},
        **strategy_sections(strategy),
    )


@dataclass
class _DaemonRun:
    """Times and counts recorded from inside the daemon's own loop (no polling thread)."""

    target: int
    t_start: float = 0.0
    t_first: float | None = None        # entry into the first process() call
    t_last: float | None = None         # exit of the process() call reaching the target
    batches: int = 0
    process_seconds: float = 0.0
    latencies: list[np.ndarray] = field(default_factory=list)
    timed_out: bool = False
    cpu: dict[str, Any] = field(default_factory=dict)


def run_daemon(settings: Any, target: int, timeout_s: float,
               on_ready: Callable[[Any], None] | None = None,
               record_latencies: bool = False,
               done: Callable[[], bool] | None = None,
               meter: CpuMeter | None = None) -> tuple[Any, _DaemonRun]:
    """Run a :class:`Daemon` in this thread until it has consumed ``target`` events.

    ``on_ready`` runs on a helper thread once partitions are assigned.  ``done``, when
    given, is asked by the watchdog whether to stop early (e.g. the producer died).
    """
    from ..daemon import Daemon

    daemon = Daemon(settings)
    run = _DaemonRun(target=target)
    worker = getattr(daemon.learner, "pid", None)
    if meter is not None and worker is not None:   # the learner worker's CPU is ours
        meter.extra_pids.append(worker)
    process = daemon.process
    marks: list[Any] = []

    def timed_process(records: list[Any]) -> None:
        t0 = time.perf_counter()
        if run.t_first is None:
            run.t_first = t0
            if meter is not None:
                marks.append(meter.snapshot())
        process(records)
        t1 = time.perf_counter()
        run.batches += 1
        run.process_seconds += t1 - t0
        if daemon.counters.consumed >= target and run.t_last is None:
            run.t_last = t1
            if marks:
                run.cpu = meter.since(marks[0])  # type: ignore[union-attr]
            daemon.request_stop()

    daemon.process = timed_process  # type: ignore[method-assign]
    if record_latencies:
        hist = daemon.metrics.event_to_update
        observe = hist.observe_many

        def observe_and_keep(values: np.ndarray) -> None:
            run.latencies.append(np.array(values, dtype=np.float64, copy=True))
            observe(values)

        hist.observe_many = observe_and_keep  # type: ignore[method-assign]

    stop_watch = threading.Event()

    def watchdog() -> None:
        deadline = time.perf_counter() + timeout_s
        readied = False
        last_progress, last_count = time.perf_counter(), -1
        try:
            while not stop_watch.wait(0.05):
                if not readied and on_ready is not None and daemon.health.ready:
                    readied = True
                    on_ready(daemon)
                now = time.perf_counter()
                count = daemon.counters.consumed
                if count != last_count:
                    last_progress, last_count = now, count
                stalled = done is not None and done() and now - last_progress > 15.0
                if now > deadline or stalled:
                    run.timed_out = True
                    daemon.request_stop()
                    return
        except BaseException:
            # Never leave the daemon running with nobody to stop it.
            log.exception("benchmark watchdog failed; stopping the daemon")
            run.timed_out = True
            daemon.request_stop()

    watcher = threading.Thread(target=watchdog, name="bench-watchdog", daemon=True)
    run.t_start = time.perf_counter()
    watcher.start()
    try:
        daemon.run()
    finally:
        stop_watch.set()
        watcher.join()
        if meter is not None and worker in meter.extra_pids:
            meter.extra_pids.remove(worker)
    return daemon, run


def daemon_throughput(bootstrap: str, topic: str, n: int, strategy: str, batch_size: int,
                      raw_rate: float, meter: CpuMeter | None = None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-ckpt-") as tmp:
        settings = daemon_settings(bootstrap, topic, strategy, batch_size, Path(tmp))
        daemon, run = run_daemon(settings, n, timeout_s=max(120.0, n / 2_000), meter=meter)
    if run.timed_out or run.t_first is None or run.t_last is None:
        raise RuntimeError(f"daemon ({strategy}, batch {batch_size}) consumed "
                           f"{daemon.counters.consumed} of {n} before the timeout")
    seconds = run.t_last - run.t_first
    consumed = daemon.counters.consumed
    rate = consumed / seconds
    return {"strategy": strategy, "batch_size": batch_size, "events": consumed,
            "learned": daemon.counters.learned, "held_out": daemon.counters.held_out,
            "rejected": daemon.counters.rejected_total,
            "seconds": seconds, "rate": rate, "ratio_to_raw": rate / raw_rate,
            "join_seconds": run.t_first - run.t_start, "batches": run.batches,
            "mean_batch": consumed / max(run.batches, 1),
            "process_share": run.process_seconds / seconds,
            "accuracy": daemon.accuracy.accuracy,
            "rolling_accuracy": daemon.accuracy.rolling_accuracy, "cpu": run.cpu}


# ----------------------------------------------------------------------------- learner core

NO_DRIFT = "-nodrift"
"""Suffix of a strategy label: the same strategy with no drift detection or adaptation."""


def strategy_sections(label: str) -> dict[str, Any]:
    """Settings sections of a run label (``replay``, ``replay-nodrift``, ...)."""
    if label.endswith(NO_DRIFT):
        return {"strategy": {"name": label[:-len(NO_DRIFT)]}, **DRIFT_OFF}
    return {"strategy": {"name": label}}


def core_settings(strategy: str) -> Any:
    from ..config import Settings

    # Probes off: every event is predicted, so hits line up with the stream.
    return Settings(probes={"per_class": 0}, **strategy_sections(strategy))


def learner_core(X: np.ndarray, y: np.ndarray, strategy: str, batch_size: int,
                 paced: bool = False) -> tuple[dict[str, Any], np.ndarray]:
    """The daemon's learner steps (``Learner.observe``: test, drift detection and
    adaptation, train) without Kafka or JSON.

    ``paced``: the step size the daemon's pacer picks for this stream as a backlog (the
    lag is the events not yet learned); otherwise the largest, the fastest rate.
    """
    from ..evaluation import PrequentialAccuracy
    from ..learner import Learner
    from ..pacing import StepPacer

    settings = core_settings(strategy)
    learner = Learner(settings)
    m = settings.model
    pacer = StepPacer(m.step_size, m.max_step_size, m.learn_budget, time.perf_counter(),
                      catch_up_seconds=m.catch_up_seconds)
    learner.step_size = m.max_step_size
    acc = PrequentialAccuracy(settings.metrics.rolling_window)
    labels = y.tolist()
    n = X.shape[0]
    hits = np.zeros(n, dtype=bool)
    t0 = time.perf_counter()
    for i in range(0, n, batch_size):
        if paced:
            learner.step_size = pacer.update(backlogged=True, now=time.perf_counter(),
                                             lag=n - i)
        x = learner.to_tensor(X[i:i + batch_size])
        yt = learner.encode_labels(labels[i:i + batch_size])
        t_batch = time.perf_counter()
        _, pred, _ = learner.observe(x, yt)
        pacer.learned(time.perf_counter() - t_batch, int(yt.shape[0]))
        yn, pn = yt.cpu().numpy(), pred.cpu().numpy()
        acc.update(yn, pn)
        hits[i:i + yn.shape[0]] = yn == pn
    seconds = time.perf_counter() - t0
    return ({"strategy": strategy, "batch_size": batch_size, "events": n,
             "seconds": seconds, "rate": n / seconds, "accuracy": acc.accuracy,
             "rolling_accuracy": acc.rolling_accuracy}, hits)


# ----------------------------------------------------------------------------- river

def _arf() -> Any:
    from river import forest
    return forest.ARFClassifier(seed=42)


def _logreg() -> Any:
    from river import linear_model, preprocessing
    return preprocessing.StandardScaler() | linear_model.LogisticRegression()


RIVER_MODELS: dict[str, Callable[[], Any]] = {
    "river ARFClassifier(seed=42)": _arf,
    "river StandardScaler|LogisticRegression": _logreg,
}


def river_prequential(factory: Callable[[], Any], X: np.ndarray, y: np.ndarray,
                      names: list[str]) -> tuple[float, np.ndarray]:
    """predict_one then learn_one per event; returns (seconds, hits).

    The dicts river wants are built before the clock starts.
    """
    model = factory()
    rows = [dict(zip(names, r)) for r in X.tolist()]
    truth = y.tolist()
    hits = np.zeros(len(truth), dtype=bool)
    t0 = time.perf_counter()
    for i, (x, yt) in enumerate(zip(rows, truth)):
        hits[i] = model.predict_one(x) == yt
        model.learn_one(x, yt)
    return time.perf_counter() - t0, hits


def river_run(model: str, factory: Callable[[], Any], stream: str, X: np.ndarray,
              y: np.ndarray, names: list[str],
              meter: CpuMeter | None = None) -> tuple[dict[str, Any], np.ndarray]:
    mark = meter.snapshot() if meter else None
    seconds, hits = river_prequential(factory, X, y, names)
    n = int(hits.size)
    return ({"model": model, "stream": stream, "events": n, "seconds": seconds,
             "rate": n / seconds if seconds else 0.0, "accuracy": float(hits.mean()),
             "cpu": meter.since(mark) if meter and mark else {}}, hits)


# ----------------------------------------------------------------------------- latency

_SENT = re.compile(r"sent (\d+) events .* in ([0-9.]+)s")


def _cli_command() -> list[str]:
    exe = Path(sys.executable).parent / "stream-learner"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("stream-learner")
    return [found] if found else [sys.executable, "-m", "stream_learner"]


def latency_run(bootstrap: str, count: int, rate: float, stream: str,
                seed: int, meter: CpuMeter | None = None) -> dict[str, Any]:
    """Replay daemon on a fresh topic while a separate process offers ``rate`` events/s."""
    from ..synth import ensure_topics

    topic = f"latency-{uuid.uuid4().hex[:6]}"
    ensure_topics(bootstrap, {topic: PARTITIONS})
    cmd = [*_cli_command(), "produce", "--stream", stream, "--count", str(count),
           "--rate", str(rate), "--topic", topic, "--bootstrap-servers", bootstrap,
           "--seed", str(seed)]
    state: dict[str, Any] = {}

    def start_producer(_daemon: Any) -> None:
        state["t_launch"] = time.perf_counter()
        state["proc"] = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         text=True)
        if meter is not None:   # the producer's CPU is ours, not "other load"
            meter.extra_pids.append(state["proc"].pid)

    def producer_done() -> bool:
        proc = state.get("proc")
        return proc is not None and proc.poll() is not None

    with tempfile.TemporaryDirectory(prefix="bench-ckpt-") as tmp:
        settings = daemon_settings(bootstrap, topic, "replay", 1024, Path(tmp))
        try:
            daemon, run = run_daemon(settings, count, timeout_s=max(120.0, 3 * count / rate),
                                     on_ready=start_producer, record_latencies=True,
                                     done=producer_done, meter=meter)
        finally:
            proc = state.get("proc")
            if proc is not None and proc.poll() is None:
                # The daemon can learn the last event before the producer has closed its
                # client and exited: give it time, or a clean run reads as a failure.
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=30)
                if proc.poll() is None:
                    proc.terminate()
    proc = state.get("proc")
    if proc is None:
        raise RuntimeError("latency run: the daemon never got a partition assignment")
    out, err = proc.communicate(timeout=60)
    if meter is not None and proc.pid in meter.extra_pids:
        meter.extra_pids.remove(proc.pid)
    match = _SENT.search(out or "")
    if proc.returncode != 0 or match is None:
        raise RuntimeError(f"latency producer failed (exit {proc.returncode}): "
                           f"{(err or out or '').strip()[-2000:]}")
    sent, produce_seconds = int(match.group(1)), float(match.group(2))
    if run.timed_out or run.t_first is None or run.t_last is None:
        raise RuntimeError(f"latency run: daemon consumed {daemon.counters.consumed} "
                           f"of {count}")
    hist = daemon.metrics.event_to_update
    lat = np.concatenate(run.latencies) if run.latencies else np.empty(0)
    consume_seconds = run.t_last - run.t_first
    return {
        "topic": topic, "strategy": "replay", "batch_size": settings.batch.size,
        "max_wait_ms": settings.batch.max_wait_ms,
        "events": daemon.counters.consumed, "offered_rate": rate,
        "produced": sent, "produce_seconds": produce_seconds,
        "achieved_produce_rate": sent / produce_seconds if produce_seconds else 0.0,
        "consume_seconds": consume_seconds,
        "achieved_consume_rate": daemon.counters.consumed / consume_seconds,
        "p50_bucket_seconds": hist.quantile(0.5), "p99_bucket_seconds": hist.quantile(0.99),
        "p50_seconds": float(np.quantile(lat, 0.5)) if lat.size else None,
        "p99_seconds": float(np.quantile(lat, 0.99)) if lat.size else None,
        "max_seconds": float(lat.max()) if lat.size else None,
        "observed": int(lat.size),
        "accuracy": daemon.accuracy.accuracy,
        "cpu": run.cpu,
    }


# ----------------------------------------------------------------------------- the run

def run(cfg: BenchConfig) -> dict[str, Any]:
    from ..broker import EmbeddedBroker
    from ..synth import ensure_topics, feature_names, take

    results: dict[str, Any] = {"benchmark": "throughput",
                               "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                               "config": asdict(cfg), "machine": machine_info()}
    wall0 = time.perf_counter()
    progress(f"building {cfg.n} {cfg.stream} events (seed {cfg.seed})")
    X, y = take(cfg.stream, cfg.n, seed=cfg.seed)
    values = build_values(X, y)
    results["config"]["event_bytes_mean"] = float(np.mean([len(v) for v in values]))
    names = feature_names(cfg.stream)

    if cfg.torch_threads > 0:
        import torch
        torch.set_num_threads(cfg.torch_threads)
        results["machine"]["torch_threads"] = torch.get_num_threads()
    if cfg.warmup_events > 0:
        # Torch's first steps in a process are slow (lazy init, first-touch of code and
        # allocator pages: ~2 s here); without this the first measurement pays for it.
        t0 = time.perf_counter()
        w = min(cfg.warmup_events, cfg.n)
        for strategy in ("naive", "replay"):
            learner_core(X[:w], y[:w], strategy, cfg.batch_sizes[0])
        results["warmup_seconds"] = time.perf_counter() - t0
        progress(f"warm-up on {w} events took {results['warmup_seconds']:.1f}s")

    meter = CpuMeter()
    run_mark = meter.snapshot()
    with EmbeddedBroker() as broker:
        if broker.pid is not None:
            meter.extra_pids.append(broker.pid)
        bs = broker.bootstrap_servers
        topic = f"bench-{cfg.stream}"
        ensure_topics(bs, {topic: cfg.partitions})
        progress(f"broker on {bs}; producing to {topic} ({cfg.partitions} partitions, "
                  f"{cfg.producers} producer processes)")
        results["produce"] = produce_values(bs, topic, values, cfg.partitions, cfg.producers)
        del values
        # Informational only: Tansu's ListOffsets(latest) can trail the records it holds
        # (seen: 1240 for 1250 records); the acks above and the raw consume count are checks.
        results["produce"]["broker_end_offsets_sum"] = end_offsets(bs, topic)
        progress(f"produced {cfg.n} at {results['produce']['rate']:,.0f}/s")

        raw = raw_consume(bs, topic, cfg.n, timeout_s=max(120.0, cfg.n / 2_000), meter=meter)
        results["raw_consume"] = raw
        progress(f"raw consume {raw['rate']:,.0f}/s")

        runs = [("naive", cfg.batch_sizes[0])] + [("replay", b) for b in cfg.batch_sizes] \
            + [("replay" + NO_DRIFT, cfg.batch_sizes[0]), (CONTINUAL, cfg.batch_sizes[0])]
        results["daemon"] = []
        for strategy, batch in runs:
            row = daemon_throughput(bs, topic, cfg.n, strategy, batch, raw["rate"], meter)
            results["daemon"].append(row)
            progress(f"daemon {strategy}/{batch}: {row['rate']:,.0f}/s "
                      f"({row['ratio_to_raw']:.2f}x raw), accuracy {row['accuracy']:.4f}")

        progress(f"latency: {cfg.latency_events} events offered at {cfg.latency_rate:,.0f}/s")
        results["latency"] = latency_run(bs, cfg.latency_events, cfg.latency_rate,
                                         cfg.stream, cfg.seed, meter)
        lat = results["latency"]
        progress(f"latency p99 {lat['p99_seconds']:.3f}s (bucket <= {lat['p99_bucket_seconds']}s)")

    # Learner core, no Kafka: same events, same batches.
    results["learner_core"] = []
    replay_hits: np.ndarray | None = None
    for strategy in ("naive", "replay", "replay" + NO_DRIFT, CONTINUAL):
        mark = meter.snapshot()
        row, hits = learner_core(X, y, strategy, cfg.batch_sizes[0])
        row["cpu"] = meter.since(mark)
        k = cfg.arf_events
        row["accuracy_first_k"] = float(hits[:k].mean())
        row["k"] = k
        results["learner_core"].append(row)
        if strategy == "replay":
            replay_hits = hits
        progress(f"learner core {strategy}: {row['rate']:,.0f}/s, accuracy {row['accuracy']:.4f}")
    assert replay_hits is not None

    # river baselines + the accuracy comparison on the same first K events.
    results["river"] = []
    comparison = []
    k = cfg.arf_events
    arf_name, lr_name = list(RIVER_MODELS)
    row, arf_hits = river_run(arf_name, _arf, cfg.stream, X[:k], y[:k], names, meter)
    results["river"].append(row)
    progress(f"ARF on {k}: {row['rate']:,.0f}/s, accuracy {row['accuracy']:.4f}")
    row, lr_hits = river_run(lr_name, _logreg, cfg.stream, X, y, names, meter)
    results["river"].append(row)
    progress(f"LogReg on {cfg.n}: {row['rate']:,.0f}/s, accuracy {row['accuracy']:.4f}")
    comparison.append({"stream": cfg.stream, "events": k,
                       "replay_accuracy": float(replay_hits[:k].mean()),
                       "arf_accuracy": float(arf_hits.mean()),
                       "logreg_accuracy": float(lr_hits[:k].mean())})

    for stream in ("hyperplane", "agrawal"):
        kk = cfg.accuracy_events
        progress(f"{stream}: generating {kk} events")
        Xs, ys = take(stream, kk, seed=cfg.seed)
        # Paced: the accuracy the daemon reaches on this stream as a backlog.
        core, _ = learner_core(Xs, ys, "replay", cfg.batch_sizes[0], paced=True)
        fnames = feature_names(stream)
        arf_row, arf_h = river_run(arf_name, _arf, stream, Xs, ys, fnames, meter)
        lr_row, lr_h = river_run(lr_name, _logreg, stream, Xs, ys, fnames, meter)
        results["river"] += [arf_row, lr_row]
        comparison.append({"stream": stream, "events": kk,
                           "replay_accuracy": core["accuracy"],
                           "replay_rate": core["rate"],
                           "arf_accuracy": float(arf_h.mean()),
                           "logreg_accuracy": float(lr_h.mean())})
        progress(f"{stream}: replay {core['accuracy']:.4f} vs ARF {arf_h.mean():.4f}")
    results["accuracy_comparison"] = comparison
    results["bars"] = bars(results)
    results["cpu"] = meter.since(run_mark)
    results["wall_seconds"] = time.perf_counter() - wall0
    return results


def bars(results: dict[str, Any]) -> list[dict[str, Any]]:
    e2e = next(r for r in results["daemon"]
               if r["strategy"] == "replay" and r["batch_size"] == results["config"]["batch_sizes"][0])
    raw = results["raw_consume"]["rate"]
    sea = results["accuracy_comparison"][0]
    lat = results["latency"]
    p99 = lat["p99_seconds"] if lat["p99_seconds"] is not None else lat["p99_bucket_seconds"]
    cont = next((r for r in results["daemon"] if r["strategy"] == CONTINUAL
                 and r["batch_size"] == e2e["batch_size"]), None)
    extra = [] if cont is None else [
        {"name": f"end-to-end {CONTINUAL} (default forgetting-aware) >= "
                 f"{BAR_CONTINUAL_VS_REPLAY}x end-to-end replay",
         "value": cont["rate"] / e2e["rate"], "threshold": BAR_CONTINUAL_VS_REPLAY,
         "unit": "x", "passed": cont["rate"] >= BAR_CONTINUAL_VS_REPLAY * e2e["rate"]}]
    bare = next((r for r in results["daemon"] if r["strategy"] == "replay" + NO_DRIFT), None)
    if bare is not None:
        extra.append({
            "name": f"drift handling costs <= {1 - BAR_DRIFT_VS_NONE:.0%} of end-to-end replay",
            "value": e2e["rate"] / bare["rate"], "threshold": BAR_DRIFT_VS_NONE, "unit": "x",
            "passed": e2e["rate"] >= BAR_DRIFT_VS_NONE * bare["rate"]})
    return [
        {"name": f"end-to-end replay (batch {e2e['batch_size']}) >= {BAR_E2E_RATE:,.0f} events/s",
         "value": e2e["rate"], "threshold": BAR_E2E_RATE, "unit": "events/s",
         "passed": e2e["rate"] >= BAR_E2E_RATE},
        {"name": f"end-to-end replay >= {BAR_E2E_VS_RAW}x raw consume",
         "value": e2e["rate"] / raw, "threshold": BAR_E2E_VS_RAW, "unit": "x",
         "passed": e2e["rate"] >= BAR_E2E_VS_RAW * raw},
        {"name": f"replay accuracy >= ARF on the first {sea['events']:,} {sea['stream']} events",
         "value": sea["replay_accuracy"], "threshold": sea["arf_accuracy"], "unit": "accuracy",
         "passed": sea["replay_accuracy"] >= sea["arf_accuracy"]},
        {"name": f"event_to_update p99 < {BAR_P99_SECONDS}s at "
                 f"{lat['offered_rate']:,.0f} events/s offered",
         "value": p99, "threshold": BAR_P99_SECONDS, "unit": "s",
         "passed": p99 < BAR_P99_SECONDS},
    ] + extra


# ----------------------------------------------------------------------------- output

def _fmt_rate(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}"


def _fmt_acc(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"


def _cpu(row: dict[str, Any]) -> tuple[str, str]:
    """(CPUs this benchmark used, CPUs other processes on the machine used) in a window."""
    cpu = row.get("cpu") or {}
    own, other = cpu.get("own_cpus"), cpu.get("background_cpus")
    return ("-" if own is None else f"{own:.2f}", "-" if other is None else f"{other:.2f}")


def print_report(results: dict[str, Any], out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    probe = Console()
    # Wide enough for the tables when piped to a file; a terminal keeps its own width.
    console = Console(width=probe.width if probe.is_terminal else 130)
    m = results["machine"]
    console.print(f"[bold]stream-learner throughput[/] — {m['cpu_count']} CPUs "
                  f"({m['cpu_model']}), device {m['device']}, torch {m['torch']} "
                  f"({m['torch_threads']} threads), Python {m['python']}")

    t = Table(title=f"Throughput: {results['config']['n']:,} {results['config']['stream']} "
                    f"events, {results['config']['partitions']} partitions, embedded Tansu")
    for col, just in (("measurement", "left"), ("events", "right"), ("seconds", "right"),
                      ("events/s", "right"), ("vs raw", "right"), ("accuracy", "right"),
                      ("CPUs used", "right"), ("other load", "right")):
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    p, raw = results["produce"], results["raw_consume"]
    t.add_row(f"produce ({p['processes']} kafka-python producers)", f"{p['events']:,}",
              f"{p['send_seconds']:.2f}", _fmt_rate(p["rate"]), "", "", "", "")
    t.add_row("raw kafka-python consume (no decode)", f"{raw['events']:,}",
              f"{raw['seconds']:.2f}", _fmt_rate(raw["rate"]), "1.00x", "", *_cpu(raw))
    for r in results["daemon"]:
        t.add_row(f"daemon {r['strategy']} (batch {r['batch_size']})", f"{r['events']:,}",
                  f"{r['seconds']:.2f}", _fmt_rate(r["rate"]), f"{r['ratio_to_raw']:.2f}x",
                  _fmt_acc(r["accuracy"]), *_cpu(r))
    for r in results["learner_core"]:
        t.add_row(f"learner core {r['strategy']} (batch {r['batch_size']}, no Kafka)",
                  f"{r['events']:,}", f"{r['seconds']:.2f}", _fmt_rate(r["rate"]),
                  f"{r['rate'] / raw['rate']:.2f}x", _fmt_acc(r["accuracy"]), *_cpu(r))
    for r in results["river"]:
        if r["stream"] != results["config"]["stream"]:
            continue
        t.add_row(f"{r['model']}", f"{r['events']:,}", f"{r['seconds']:.2f}",
                  _fmt_rate(r["rate"]), f"{r['rate'] / raw['rate']:.2f}x",
                  _fmt_acc(r["accuracy"]), *_cpu(r))
    console.print(t)
    console.print("Kafka rates run from the first records handed over to the last one done "
                  "(group join excluded). CPUs used = this process + broker + children; "
                  "other load = CPUs busy with other processes on the machine meanwhile. "
                  "The daemon reads the backlog partition by partition, so its accuracy is "
                  "over another event order than the learner core's (in stream order).")

    a = Table(title="Prequential accuracy on the same first K events (learner core vs river)")
    for col in ("stream", "K events", "replay (ours)", "ARF", "LogReg", "replay - ARF"):
        a.add_column(col, justify="left" if col == "stream" else "right")
    for r in results["accuracy_comparison"]:
        a.add_row(r["stream"], f"{r['events']:,}", _fmt_acc(r["replay_accuracy"]),
                  _fmt_acc(r["arf_accuracy"]), _fmt_acc(r["logreg_accuracy"]),
                  f"{r['replay_accuracy'] - r['arf_accuracy']:+.4f}")
    console.print(a)
    rr = Table(title="river rates per stream")
    for col in ("model", "stream", "events", "events/s", "accuracy"):
        rr.add_column(col, justify="left" if col in ("model", "stream") else "right")
    for r in results["river"]:
        rr.add_row(r["model"], r["stream"], f"{r['events']:,}", _fmt_rate(r["rate"]),
                   _fmt_acc(r["accuracy"]))
    console.print(rr)

    lat = results["latency"]
    lt = Table(title="event_to_update_seconds (replay daemon, producer in a separate process)")
    for col in ("offered/s", "produced/s", "consumed/s", "events", "p50", "p99",
                "p99 bucket", "max"):
        lt.add_column(col, justify="right")
    sec = lambda v: "-" if v is None else f"{v:.3f}s"  # noqa: E731
    lt.add_row(_fmt_rate(lat["offered_rate"]), _fmt_rate(lat["achieved_produce_rate"]),
               _fmt_rate(lat["achieved_consume_rate"]), f"{lat['events']:,}",
               sec(lat["p50_seconds"]), sec(lat["p99_seconds"]),
               f"<= {lat['p99_bucket_seconds']:g}s", sec(lat["max_seconds"]))
    console.print(lt)

    b = Table(title="Bars")
    b.add_column("bar")
    b.add_column("measured", justify="right")
    b.add_column("result")
    for bar in results["bars"]:
        v, unit = bar["value"], bar["unit"]
        shown = (f"{v:,.0f}/s" if unit == "events/s" else f"{v:.2f}x" if unit == "x"
                 else f"{v:.4f} vs {bar['threshold']:.4f}" if unit == "accuracy"
                 else f"{v:.3f}s")
        b.add_row(bar["name"], shown, "[green]PASS[/]" if bar["passed"] else "[red]FAIL[/]")
    console.print(b)
    console.print(f"wrote {out} ({results['wall_seconds']:.0f}s in all)")


def main(out: Path | None = None, quick: bool = False, **options: Any) -> int:
    return write_and_report(run(BenchConfig.build(quick, **options)), out or DEFAULT_OUT,
                            quick, print_report)
