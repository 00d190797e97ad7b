"""The daemon's collaborators one at a time, on a real broker: each test drives one part
(consumer side, checkpoint coordinator, housekeeping, group membership) with a real
kafka-python consumer and producer against the embedded Tansu process, and reads what
reached the broker (positions, committed offsets) back from it.

The whole daemon is covered by test_delivery, test_rebalance, test_checkpoint_failures
and friends; these pin the rules each part owns.  An unacknowledged flush is a real one:
a broker of the test's own, frozen with SIGSTOP after the producer knows its metadata.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.future import Future
from kafka.structs import OffsetAndMetadata

from stream_learner.broker import EmbeddedBroker
from stream_learner.checkpoint import CheckpointStore
from stream_learner.checkpoint_coordinator import CheckpointCoordinator
from stream_learner.config import Settings
from stream_learner.consumer_side import ConsumerSide
from stream_learner.counters import Counters
from stream_learner.evaluation import PrequentialAccuracy
from stream_learner.group_membership import GroupMembership
from stream_learner.housekeeping import Housekeeping
from stream_learner.metrics import Health, Metrics
from stream_learner.output_sink import OutputSink
from stream_learner.synth import ensure_topics
from stream_learner.systemd import Notifier
from stream_learner.undeliverable import OutputRecord

from conftest import unique

RECORDS = 12          # events in each test's topic


def _topic(bs: str) -> TopicPartition:
    """A fresh one-partition topic holding RECORDS events (offsets 0..RECORDS-1)."""
    topic = unique("parts")
    ensure_topics(bs, {topic: 1, f"{topic}.dlq": 1})
    producer = KafkaProducer(bootstrap_servers=bs, acks="all")
    for i in range(RECORDS):
        producer.send(topic, f"e{i}".encode(), partition=0)
    producer.flush(30)
    producer.close()
    return TopicPartition(topic, 0)


def _consumer(bs: str, tp: TopicPartition) -> KafkaConsumer:
    """A member of a fresh group (nothing committed yet), assigned ``tp``."""
    consumer = KafkaConsumer(bootstrap_servers=bs, group_id=unique("g"),
                             enable_auto_commit=False, consumer_timeout_ms=5000)
    consumer.assign([tp])
    return consumer


def _poll(consumer: KafkaConsumer, n: int) -> list[Any]:
    records: list[Any] = []
    deadline = time.monotonic() + 20
    while len(records) < n and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=200).values():
            records.extend(batch)
    return records


def _positions(bs: str, committed: int, mine: int
               ) -> tuple[ConsumerSide, KafkaConsumer, TopicPartition]:
    """A replica restored at ``mine`` while its group has committed ``committed``."""
    tp = _topic(bs)
    consumer = _consumer(bs, tp)
    consumer.commit({tp: OffsetAndMetadata(committed, "", -1)})
    consumer.seek(tp, mine)                        # what the daemon does after a restore
    positions = ConsumerSide(Settings(), Metrics())
    positions.consumer = consumer
    positions.offsets[tp] = mine
    positions.unverified.add(tp)
    return positions, consumer, tp


def test_a_commit_ahead_of_the_checkpoint_moves_us_forward(broker: EmbeddedBroker) -> None:
    """Another replica learned up to the commit: seek there, drop what came before."""
    positions, consumer, tp = _positions(broker.bootstrap_servers, committed=10, mine=4)
    kept = positions.verify_assignment(_poll(consumer, RECORDS - 4))
    assert [r.offset for r in kept] == [10, 11]
    assert consumer.position(tp) == 10 and positions.offsets[tp] == 10
    assert not positions.unverified


def test_after_a_fallback_the_commit_does_not_move_us_forward(
        broker: EmbeddedBroker, caplog: pytest.LogCaptureFixture) -> None:
    """The commit may be the unreadable newer checkpoint's: replay, skip nothing."""
    positions, consumer, tp = _positions(broker.bootstrap_servers, committed=10, mine=4)
    positions.restored({tp: 4}, fallback=True)
    positions.unverified.add(tp)
    records = _poll(consumer, RECORDS - 4)
    with caplog.at_level(logging.WARNING):
        kept = positions.verify_assignment(records)
    assert [r.offset for r in kept] == list(range(4, RECORDS))
    assert consumer.position(tp) == RECORDS and positions.offsets[tp] == 4   # no seek back to 10
    assert "none skipped" in caplog.text
    assert not positions.replay_from_checkpoint    # only the first assignment replays


class Parts:
    """A coordinator wired to a real consumer (a fresh group) and a real producer."""

    def __init__(self, bs: str, tmp_path: Path, order: list[str],
                 export: dict[str, Any] | None = None) -> None:
        self.tp = tp = _topic(bs)
        self.settings = Settings(checkpoint={"dir": tmp_path}, export=export or {},
                                 kafka={"bootstrap_servers": bs, "topic": tp.topic,
                                        "dlq_topic": f"{tp.topic}.dlq"})
        metrics = Metrics()
        self.sink = OutputSink(self.settings, metrics, Counters())
        self.sink.connect(lambda topic: True)
        self.positions = ConsumerSide(self.settings, metrics)
        self.consumer = self.positions.consumer = _consumer(bs, tp)
        self.positions.offsets[tp] = 7
        self.store = CheckpointStore(tmp_path, 3)

        def snapshot() -> dict[str, Any]:
            order.append("save")
            return {"offsets": {tp.topic: {tp.partition: self.positions.offsets[tp]}}}

        self.coordinator = CheckpointCoordinator(
            self.settings, metrics, Health(60.0), self.store, self.sink, self.positions,
            drain=lambda: order.append("drain"), snapshot=snapshot)
        self.coordinator.consumed(5)

    def committed(self) -> int | None:
        return self.consumer.committed(self.tp)

    def close(self) -> None:
        self.sink.close()
        self.consumer.close()


@pytest.fixture
def parts(broker: EmbeddedBroker, tmp_path: Path) -> Iterator[tuple[Parts, list[str]]]:
    order: list[str] = []
    p = Parts(broker.bootstrap_servers, tmp_path, order)
    yield p, order
    p.close()


@pytest.fixture
def frozen_parts(tmp_path: Path) -> Iterator[tuple[Parts, list[str], EmbeddedBroker]]:
    """Parts whose broker stopped answering with one DLQ record in flight: a flush cannot
    be acknowledged.  The broker is the test's own, resumed before it is torn down."""
    with EmbeddedBroker(log_file=tmp_path / "tansu.log") as own:
        order: list[str] = []
        p = Parts(own.bootstrap_servers, tmp_path / "state", order)
        assert p.committed() is None
        p.sink.producer.send(OutputRecord(p.settings.kafka.dlq_topic, b"warm-up"))
        assert p.sink.flush(10.0)                      # metadata known, then frozen
        assert own.pid is not None
        os.kill(own.pid, signal.SIGSTOP)
        try:
            p.sink.producer.send(OutputRecord(p.settings.kafka.dlq_topic, b"in flight"))
            yield p, order, own
        finally:
            os.kill(own.pid, signal.SIGCONT)
            p.close()


def test_checkpoint_drains_flushes_saves_then_commits(parts: tuple[Parts, list[str]]) -> None:
    p, order = parts
    assert p.committed() is None
    assert p.coordinator.checkpoint(commit="sync")
    assert order == ["drain", "save"]
    assert p.coordinator.since_checkpoint == 0 and p.coordinator.last_checkpoint_path
    assert p.committed() == 7                      # as the broker answers it
    loaded = p.store.load_latest()
    assert loaded is not None and loaded["offsets"] == {p.tp.topic: {p.tp.partition: 7}}


def test_the_periodic_export_runs_after_the_commit_and_a_failure_is_counted(
        broker: EmbeddedBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    order: list[str] = []
    p = Parts(broker.bootstrap_servers, tmp_path, order,
              export={"every_seconds": 1e-9, "dir": tmp_path / "exports"})
    try:
        exporter = p.coordinator.exporter
        real = exporter.after_checkpoint

        def recording(path: str) -> bool:
            order.append(f"export with {p.committed()} committed, of {Path(path).name}")
            return real(path)

        exporter.after_checkpoint = recording  # type: ignore[method-assign]
        with caplog.at_level(logging.WARNING):
            assert p.coordinator.checkpoint(commit="sync")
        saved = p.store.paths()[-1].name
        assert order == ["drain", "save", f"export with 7 committed, of {saved}"]
        # This snapshot holds no model: the export fails, is logged once, and the
        # checkpoint (and its commit) stand.
        failed = p.coordinator.metrics.registry.get_sample_value(
            "stream_learner_model_exports_total", {"outcome": "failed"})
        assert failed == 1.0 and caplog.text.count("model export of") == 1
        assert p.committed() == 7
    finally:
        p.close()


def test_an_unacknowledged_flush_defers_the_checkpoint_and_the_commit(
        frozen_parts: tuple[Parts, list[str], EmbeddedBroker],
        caplog: pytest.LogCaptureFixture) -> None:
    p, order, own = frozen_parts
    with caplog.at_level(logging.WARNING):
        assert not p.coordinator.checkpoint(commit="sync", flush_timeout_s=1.0)
    assert order == ["drain"]                     # drained, never saved
    assert "checkpoint deferred" in caplog.text
    assert p.store.load_latest() is None
    assert p.coordinator.since_checkpoint == 5
    # Unsaved events keep their offsets from the group, whatever asks for a commit.
    assert p.coordinator.commit("sync") is None
    assert own.pid is not None
    os.kill(own.pid, signal.SIGCONT)
    assert p.committed() is None                  # the broker, answering again, has none


def test_the_unsaved_limit_pauses(parts: tuple[Parts, list[str]]) -> None:
    coordinator = parts[0].coordinator
    assert not coordinator.too_many_unsaved()
    coordinator.consumed(Settings().checkpoint.max_unsaved_events)
    assert coordinator.too_many_unsaved()


class RecordingNotifier(Notifier):
    """Keeps what would go to systemd instead of sending it (test_systemd checks the
    real socket protocol against a listening datagram socket)."""

    def __init__(self) -> None:
        super().__init__(env={})
        self.sent: list[tuple[str, ...]] = []

    def notify(self, *fields: str) -> bool:
        self.sent.append(fields)
        return True


def _housekeeping(p: Parts) -> tuple[Housekeeping, RecordingNotifier, Health]:
    notifier, health = RecordingNotifier(), Health(60.0)
    return Housekeeping(p.coordinator.metrics, health, notifier, p.sink, p.positions,
                        Counters(), PrequentialAccuracy(10),
                        refresh_gauges=lambda: None), notifier, health


def test_ready_is_announced_once_and_shutdown_takes_readiness_away(
        parts: tuple[Parts, list[str]]) -> None:
    """A rebalance assigns again: that is no start-up, so systemd hears READY=1 once."""
    housekeeping, notifier, health = _housekeeping(parts[0])
    housekeeping.ready("consuming events")
    housekeeping.ready("consuming events")
    assert [f for f in notifier.sent if "READY=1" in f] == [("READY=1",
                                                             "STATUS=consuming events")]
    assert health.ready
    housekeeping.not_ready()
    assert not health.ready and notifier.sent[-1][0] == "STOPPING=1"


def test_the_status_line_follows_ready_and_housekeeping_comes_once_a_second(
        parts: tuple[Parts, list[str]]) -> None:
    housekeeping, notifier, _ = _housekeeping(parts[0])
    assert housekeeping.due()
    housekeeping.run()
    assert notifier.sent == [] and not housekeeping.due()   # not ready yet: no STATUS
    housekeeping.ready("consuming events")
    housekeeping.run()                                        # the loop calls it when due
    assert notifier.sent[-1][0].startswith("STATUS=0 events learned, 0 rejected, lag 0")


def _membership(p: Parts) -> GroupMembership:
    housekeeping, _, _ = _housekeeping(p)
    return GroupMembership(p.settings, p.coordinator.metrics, p.positions, p.sink,
                           p.coordinator, None, housekeeping, stopping=lambda: False)


def test_a_revocation_checkpoints_then_hands_back_the_commit_to_await(
        parts: tuple[Parts, list[str]]) -> None:
    p, order = parts
    future = _membership(p).on_revoked({p.tp}, commit=True)
    assert order == ["drain", "save"] and isinstance(future, Future)
    deadline = time.monotonic() + 10
    while not future.is_done and time.monotonic() < deadline:
        p.consumer.poll(timeout_ms=100)           # the commit completes inside poll
    assert future.succeeded() and p.committed() == 7


def test_a_revocation_whose_checkpoint_is_deferred_commits_nothing(
        frozen_parts: tuple[Parts, list[str], EmbeddedBroker]) -> None:
    p, order, own = frozen_parts
    assert _membership(p).on_revoked({p.tp}, commit=True) is None
    assert order == ["drain"]
    assert own.pid is not None
    os.kill(own.pid, signal.SIGCONT)
    assert p.committed() is None
