"""The broker goes away and comes back: the daemon keeps serving /healthz and resumes,
and afterwards every event is accounted for once, by offset and id."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from stream_learner.broker import EmbeddedBroker
from stream_learner.synth import ensure_topics

from accounting import Sent, check_checkpoint, check_outputs, send_mixed
from conftest import DaemonProcess, http_get, latest_checkpoint, unique, wait_for

# /healthz turns 503 after this long without a loop tick: well under each outage below,
# so a loop that blocks on the missing broker fails the test (with the default 60 s, a
# 5 s outage could not show it).
STALL_S = 2.0
FREEZE_S = 8.0


def wait_consumed_exactly(d: DaemonProcess, n: int, timeout: float = 90.0) -> None:
    """consumed reaches ``n`` and stays there (a replay would push it past)."""
    def reached() -> bool:
        d.assert_alive()
        got = d.metric("stream_learner_events_consumed_total")
        assert got <= n, f"consumed {got} > {n} sent: events processed twice"
        return got == n
    wait_for(reached, timeout, f"exactly {n} events consumed (log: {d.log_path})")
    time.sleep(2.0)
    assert d.metric("stream_learner_events_consumed_total") == n


def assert_healthy_for(d: DaemonProcess, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.5)
        d.assert_alive()
        assert http_get(d.url + "/healthz")[0] == 200, "loop stalled while the broker was out"


def checkpoint_covering(ckpt: Path, consumed: int) -> dict:
    return wait_for(lambda: (s := latest_checkpoint(ckpt))["counters"]["consumed"] == consumed
                    and s, 30, f"a checkpoint after {consumed} events")


def test_broker_frozen_then_restarted(daemons, tmp_path: Path) -> None:
    broker = EmbeddedBroker(log_file=tmp_path / "tansu.log").start()
    try:
        bs = broker.bootstrap_servers
        topic = unique("outage")
        dlq, predictions = f"{topic}.dlq", f"{topic}.predictions"
        topics = {topic: 1, dlq: 1, predictions: 1}
        ensure_topics(bs, topics)
        first = Sent(topic)
        send_mixed(bs, topic, 1000, first)
        ckpt = tmp_path / "ckpt"
        d = DaemonProcess(bs, ckpt, topic, unique("g"),
                          extra_env={"STREAM_LEARNER_CHECKPOINT__EVERY_SECONDS": "1",
                                     "STREAM_LEARNER_METRICS__STALL_SECONDS": str(STALL_S)})
        daemons.append(d)
        wait_consumed_exactly(d, 1000)

        # 1. The broker stops answering (SIGSTOP: sockets stay open, nothing replies).
        assert broker.pid is not None
        os.kill(broker.pid, signal.SIGSTOP)
        try:
            assert_healthy_for(d, FREEZE_S)
        finally:
            os.kill(broker.pid, signal.SIGCONT)
        send_mixed(bs, topic, 500, first, start_id=1000, seed=43)
        wait_consumed_exactly(d, 1500, timeout=60)
        check_checkpoint(checkpoint_covering(ckpt, 1500), first)
        check_outputs(bs, first, dlq, predictions)

        # 2. The broker process dies and a new, empty one starts on the same port.
        port = broker.port
        broker.stop()
        assert_healthy_for(d, 4.0)
        broker = EmbeddedBroker(port=port, log_file=tmp_path / "tansu2.log").start()
        ensure_topics(bs, topics)
        second = Sent(topic)
        send_mixed(bs, topic, 700, second, start_id=1500, seed=44)
        # The topic restarted at offset 0, behind the checkpoint: the daemon notices the
        # out-of-range position, follows auto_offset_reset and learns the new events.
        wait_consumed_exactly(d, 2200, timeout=90)
        assert http_get(d.url + "/healthz")[0] == 200
        assert d.terminate() == 0
        check_checkpoint(latest_checkpoint(ckpt), second, first)
        check_outputs(bs, second, dlq, predictions)    # the new broker's topics only
    finally:
        broker.stop()


def test_sigterm_while_the_broker_does_not_answer_at_start_up(daemons, tmp_path: Path) -> None:
    """A daemon starting against a frozen broker (sockets accept, nothing replies) is in
    kafka-python's bootstrap; a SIGTERM there is served within one bootstrap attempt
    (``kafka.bootstrap_timeout_ms``), not after kafka-python's 30 s per client."""
    broker = EmbeddedBroker(log_file=tmp_path / "tansu.log").start()
    assert broker.pid is not None
    try:
        os.kill(broker.pid, signal.SIGSTOP)
        d = DaemonProcess(broker.bootstrap_servers, tmp_path / "ckpt", unique("frozen"),
                          unique("g"), extra_env={"STREAM_LEARNER_KAFKA__BOOTSTRAP_TIMEOUT_MS":
                                                  "2000"})
        daemons.append(d)
        # The metrics server comes up before Kafka is reached; then give the daemon time
        # to be inside the bootstrap.
        def serving() -> bool:
            d.assert_alive()
            try:
                return http_get(d.url + "/metrics")[0] == 200
            except OSError:
                return False
        wait_for(serving, 60, "/metrics while connecting")
        time.sleep(1.0)
        assert d.metric("stream_learner_ready") == 0
        t0 = time.monotonic()
        assert d.terminate(timeout=20) == 0
        waited = time.monotonic() - t0
        assert waited < 10, f"SIGTERM took {waited:.1f}s while connecting"
        log = d.log_path.read_text()
        assert "Traceback" not in log, log[-3000:]
    finally:
        os.kill(broker.pid, signal.SIGCONT)
        broker.stop()
