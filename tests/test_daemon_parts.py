"""The daemon's collaborators alone, without Kafka: pure logic with tiny fakes.

End-to-end behaviour (real brokers) is covered by test_delivery, test_rebalance,
test_checkpoint_failures and friends; these pin the rules each part owns.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from kafka import TopicPartition
from kafka.structs import OffsetAndMetadata

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
from stream_learner.systemd import Notifier

TP = TopicPartition("events", 0)


class FakeConsumer:
    """What ConsumerSide and the coordinator call: committed, seek, assignment, commit."""

    def __init__(self, committed: dict[TopicPartition, int]) -> None:
        self._committed = committed
        self.seeks: list[tuple[TopicPartition, int]] = []
        self.commits: list[dict[TopicPartition, OffsetAndMetadata]] = []

    def committed(self, tp: TopicPartition) -> int | None:
        return self._committed.get(tp)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))

    def assignment(self) -> set[TopicPartition]:
        return {TP}

    def commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        self.commits.append(offsets)

    def highwater(self, tp: TopicPartition) -> int | None:
        return None                       # nothing fetched yet: the log's end is unknown

    def commit_async(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> str:
        self.commits.append(offsets)
        return "future"


class FakeProducer:
    """The ReliableProducer surface the sink uses for a flush."""

    def __init__(self, acknowledges: bool) -> None:
        self.acknowledges = acknowledges
        self.pending = 0 if acknowledges else 3

    def flush(self, timeout_s: float) -> bool:
        return self.acknowledges


class Record:
    def __init__(self, offset: int) -> None:
        self.topic, self.partition, self.offset = TP.topic, TP.partition, offset


def _positions(committed: int, mine: int) -> tuple[ConsumerSide, FakeConsumer]:
    positions = ConsumerSide(Settings(), Metrics())
    consumer = FakeConsumer({TP: committed})
    positions.consumer = consumer  # type: ignore[assignment]
    positions.offsets[TP] = mine
    positions.unverified.add(TP)
    return positions, consumer


def test_a_commit_ahead_of_the_checkpoint_moves_us_forward() -> None:
    """Another replica learned up to the commit: seek there, drop what came before."""
    positions, consumer = _positions(committed=10, mine=4)
    kept = positions.verify_assignment([Record(o) for o in range(4, 12)])
    assert [r.offset for r in kept] == [10, 11]
    assert consumer.seeks == [(TP, 10)] and positions.offsets[TP] == 10
    assert not positions.unverified


def test_after_a_fallback_the_commit_does_not_move_us_forward(
        caplog: pytest.LogCaptureFixture) -> None:
    """The commit may be the unreadable newer checkpoint's: replay, skip nothing."""
    positions, consumer = _positions(committed=10, mine=4)
    positions.restored({TP: 4}, fallback=True)
    positions.unverified.add(TP)
    with caplog.at_level(logging.WARNING):
        kept = positions.verify_assignment([Record(o) for o in range(4, 12)])
    assert [r.offset for r in kept] == list(range(4, 12))
    assert consumer.seeks == [] and positions.offsets[TP] == 4
    assert "none skipped" in caplog.text
    assert not positions.replay_from_checkpoint    # only the first assignment replays


def _coordinator(tmp_path: Path, acknowledges: bool, order: list[str],
                 export: dict[str, Any] | None = None
                 ) -> tuple[CheckpointCoordinator, FakeConsumer, CheckpointStore]:
    settings = Settings(checkpoint={"dir": tmp_path}, export=export or {})
    metrics = Metrics()
    sink = OutputSink(settings, metrics, Counters())
    sink.producer = FakeProducer(acknowledges)  # type: ignore[assignment]
    positions = ConsumerSide(settings, metrics)
    consumer = FakeConsumer({})
    positions.consumer = consumer  # type: ignore[assignment]
    positions.offsets[TP] = 7
    store = CheckpointStore(tmp_path, 3)

    def snapshot() -> dict[str, Any]:
        order.append("save")
        return {"offsets": {TP.topic: {TP.partition: positions.offsets[TP]}}}

    coordinator = CheckpointCoordinator(settings, metrics, Health(60.0), store, sink,
                                        positions, drain=lambda: order.append("drain"),
                                        snapshot=snapshot)
    coordinator.consumed(5)
    return coordinator, consumer, store


def test_checkpoint_drains_flushes_saves_then_commits(tmp_path: Path) -> None:
    order: list[str] = []
    coordinator, consumer, store = _coordinator(tmp_path, acknowledges=True, order=order)
    assert coordinator.checkpoint(commit="sync")
    assert order == ["drain", "save"]
    assert coordinator.since_checkpoint == 0 and coordinator.last_checkpoint_path
    assert consumer.commits == [{TP: OffsetAndMetadata(7, "", -1)}]
    loaded = store.load_latest()
    assert loaded is not None and loaded["offsets"] == {TP.topic: {TP.partition: 7}}


def test_the_periodic_export_runs_after_the_commit_and_a_failure_is_counted(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    order: list[str] = []
    coordinator, consumer, store = _coordinator(
        tmp_path, acknowledges=True, order=order,
        export={"every_seconds": 1e-9, "dir": tmp_path / "exports"})
    exporter = coordinator.exporter
    real = exporter.after_checkpoint

    def recording(path: str) -> bool:
        order.append(f"export after {len(consumer.commits)} commit(s) of {Path(path).name}")
        return real(path)

    exporter.after_checkpoint = recording  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING):
        assert coordinator.checkpoint(commit="sync")
    saved = store.paths()[-1].name
    assert order == ["drain", "save", f"export after 1 commit(s) of {saved}"]
    # This snapshot holds no model: the export fails, is logged once, and the checkpoint
    # (and its commit) stand.
    failed = coordinator.metrics.registry.get_sample_value(
        "stream_learner_model_exports_total", {"outcome": "failed"})
    assert failed == 1.0 and caplog.text.count("model export of") == 1
    assert consumer.commits == [{TP: OffsetAndMetadata(7, "", -1)}]


def test_an_unacknowledged_flush_defers_the_checkpoint_and_the_commit(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    order: list[str] = []
    coordinator, consumer, store = _coordinator(tmp_path, acknowledges=False, order=order)
    with caplog.at_level(logging.WARNING):
        assert not coordinator.checkpoint(commit="sync")
    assert order == ["drain"]                     # drained, never saved
    assert "checkpoint deferred" in caplog.text
    assert store.load_latest() is None and consumer.commits == []
    assert coordinator.since_checkpoint == 5
    # Unsaved events keep their offsets from the group, whatever asks for a commit.
    assert coordinator.commit("sync") is None and consumer.commits == []


def test_the_unsaved_limit_pauses(tmp_path: Path) -> None:
    coordinator, _, _ = _coordinator(tmp_path, acknowledges=True, order=[])
    assert not coordinator.too_many_unsaved()
    coordinator.consumed(Settings().checkpoint.max_unsaved_events)
    assert coordinator.too_many_unsaved()


class RecordingNotifier(Notifier):
    """Keeps what would go to systemd instead of sending it."""

    def __init__(self) -> None:
        super().__init__(env={})
        self.sent: list[tuple[str, ...]] = []

    def notify(self, *fields: str) -> bool:
        self.sent.append(fields)
        return True


def _housekeeping(tmp_path: Path) -> tuple[Housekeeping, RecordingNotifier, Health]:
    coordinator, _, _ = _coordinator(tmp_path, acknowledges=True, order=[])
    coordinator.sink.producer = None          # not connected: no spill to watch
    notifier, health = RecordingNotifier(), Health(60.0)
    return Housekeeping(coordinator.metrics, health, notifier, coordinator.sink,
                        coordinator.positions, Counters(), PrequentialAccuracy(10),
                        refresh_gauges=lambda: None), notifier, health


def test_ready_is_announced_once_and_shutdown_takes_readiness_away(tmp_path: Path) -> None:
    """A rebalance assigns again: that is no start-up, so systemd hears READY=1 once."""
    housekeeping, notifier, health = _housekeeping(tmp_path)
    housekeeping.ready("consuming events")
    housekeeping.ready("consuming events")
    assert [f for f in notifier.sent if "READY=1" in f] == [("READY=1",
                                                             "STATUS=consuming events")]
    assert health.ready
    housekeeping.not_ready()
    assert not health.ready and notifier.sent[-1][0] == "STOPPING=1"


def test_the_status_line_follows_ready_and_housekeeping_comes_once_a_second(
        tmp_path: Path) -> None:
    housekeeping, notifier, _ = _housekeeping(tmp_path)
    assert housekeeping.due()
    housekeeping.run()
    assert notifier.sent == [] and not housekeeping.due()   # not ready yet: no STATUS
    housekeeping.ready("consuming events")
    housekeeping.run()                                        # the loop calls it when due
    assert notifier.sent[-1][0].startswith("STATUS=0 events learned, 0 rejected, lag 0")


def _membership(tmp_path: Path, acknowledges: bool, order: list[str]
                ) -> tuple[GroupMembership, FakeConsumer]:
    coordinator, consumer, _ = _coordinator(tmp_path, acknowledges=acknowledges, order=order)
    housekeeping, _, _ = _housekeeping(tmp_path)
    return GroupMembership(coordinator.settings, coordinator.metrics, coordinator.positions,
                           coordinator.sink, coordinator, None, housekeeping,
                           stopping=lambda: False), consumer


def test_a_revocation_checkpoints_then_hands_back_the_commit_to_await(
        tmp_path: Path) -> None:
    order: list[str] = []
    membership, consumer = _membership(tmp_path, acknowledges=True, order=order)
    assert membership.on_revoked({TP}, commit=True) == "future"
    assert order == ["drain", "save"] and consumer.commits == [{TP: OffsetAndMetadata(7, "", -1)}]


def test_a_revocation_whose_checkpoint_is_deferred_commits_nothing(tmp_path: Path) -> None:
    membership, consumer = _membership(tmp_path, acknowledges=False, order=[])
    assert membership.on_revoked({TP}, commit=True) is None
    assert consumer.commits == []
