"""The broker goes away and comes back: the daemon keeps serving /healthz and resumes."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from stream_learner.broker import EmbeddedBroker
from stream_learner.synth import ensure_topics, produce

from conftest import DaemonProcess, http_get, unique, wait_for


def test_broker_frozen_then_restarted(daemons, tmp_path: Path) -> None:
    broker = EmbeddedBroker(log_file=tmp_path / "tansu.log").start()
    try:
        bs = broker.bootstrap_servers
        topic = unique("outage")
        topics = {topic: 1, f"{topic}.dlq": 1, f"{topic}.predictions": 1}
        ensure_topics(bs, topics)
        produce(bs, topic, "sea", 1000)
        d = DaemonProcess(bs, tmp_path / "ckpt", topic, unique("g"),
                          extra_env={"STREAM_LEARNER_CHECKPOINT__EVERY_SECONDS": "1"})
        daemons.append(d)
        d.wait_consumed(1000)

        # 1. The broker stops answering (SIGSTOP: sockets stay open, nothing replies).
        assert broker.pid is not None
        os.kill(broker.pid, signal.SIGSTOP)
        try:
            for _ in range(5):
                time.sleep(1.0)
                d.assert_alive()
                assert http_get(d.url + "/healthz")[0] == 200
        finally:
            os.kill(broker.pid, signal.SIGCONT)
        produce(bs, topic, "sea", 500, start_id=1000)
        d.wait_consumed(1500, timeout=60)

        # 2. The broker process dies and a new, empty one starts on the same port.
        port = broker.port
        broker.stop()
        for _ in range(4):
            time.sleep(1.0)
            d.assert_alive()
            assert http_get(d.url + "/healthz")[0] == 200
        broker = EmbeddedBroker(port=port, log_file=tmp_path / "tansu2.log").start()
        ensure_topics(bs, topics)
        produce(bs, topic, "sea", 700, start_id=1500)
        # The topic restarted at offset 0, behind the checkpoint: the daemon notices the
        # out-of-range position, follows auto_offset_reset and learns the new events.
        d.wait_consumed(2200, timeout=90)
        assert http_get(d.url + "/healthz")[0] == 200
        assert d.terminate() == 0
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
