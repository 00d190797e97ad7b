"""Crashes and stops lose nothing: kill -9 at random points, SIGTERM, restart."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

from stream_learner.checkpoint import CheckpointStore
from stream_learner.synth import ensure_topics, produce

from accounting import Sent, check_checkpoint, check_lineage, check_outputs, send_mixed
from conftest import DaemonProcess, checkpoint_offsets_sum, latest_checkpoint, unique, wait_for

FAST_CHECKPOINTS = {"STREAM_LEARNER_CHECKPOINT__EVERY_EVENTS": "1500",
                    "STREAM_LEARNER_CHECKPOINT__EVERY_SECONDS": "0.5"}


def _kept(ckpt: Path) -> list[dict]:
    """Every checkpoint still on disk, oldest first."""
    import torch
    return [torch.load(path, weights_only=True)["state"] for path in CheckpointStore(ckpt).paths()]


def _all_checkpoints_consistent(ckpt: Path) -> int:
    """Counters in every kept checkpoint equal its offsets: nothing skipped, nothing twice."""
    store = CheckpointStore(ckpt)
    import torch
    checked = 0
    for path in store.paths():
        state = torch.load(path, weights_only=True)["state"]
        c = state["counters"]
        assert c["consumed"] == checkpoint_offsets_sum(state), path
        assert (c["learned"] + c["held_out"] + sum(c["rejected"].values()) + c["predicted"]
                == c["consumed"]), path
        checked += 1
    return checked


class Producer(threading.Thread):
    """A live, mixed stream (valid, poison, unlabeled) at a modest rate, so kills land
    mid-stream and mid-flush of DLQ and prediction records; every ack's offset kept."""

    def __init__(self, bootstrap: str, topic: str, n: int, partitions: int) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.n, self.partitions = bootstrap, n, partitions
        self.sent = Sent(topic)
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            # A third poison or unlabeled: a skipped event and a repeated one on another
            # partition are of different kinds (so the counts by kind differ) most times.
            send_mixed(self.bootstrap, self.sent.topic, self.n, self.sent, rate=800,
                       partitions=self.partitions, seed=7, bad_fraction=0.15,
                       unlabeled_fraction=0.2)
        except BaseException as exc:  # noqa: BLE001 - re-raised by finish()
            self.error = exc

    def finish(self, timeout: float) -> Sent:
        self.join(timeout)
        assert not self.is_alive(), "producer still running"
        if self.error is not None:
            raise self.error
        assert len(self.sent) == self.n
        return self.sent


def test_kill9_at_random_points_loses_nothing(broker, daemons, tmp_path: Path) -> None:
    bs = broker.bootstrap_servers
    topic, group, n = unique("crash"), unique("g"), 24_000
    dlq, predictions = f"{topic}.dlq", f"{topic}.predictions"
    ensure_topics(bs, {topic: 2, dlq: 1, predictions: 1})
    producer = Producer(bs, topic, n, partitions=2)
    producer.start()
    ckpt = tmp_path / "ckpt"
    rng = random.Random(7)
    lineage: list[dict] = []      # the newest checkpoint after each kill
    for round_ in range(3):
        d = DaemonProcess(bs, ckpt, topic, group, extra_env=FAST_CHECKPOINTS)
        daemons.append(d)
        before = len(CheckpointStore(ckpt).paths()) and latest_checkpoint(ckpt)["counters"]
        wait_for(lambda: d.metric("stream_learner_ready") == 1, 60,
                 f"round {round_} consuming")
        time.sleep(rng.uniform(0.3, 2.5))
        d.kill9()
        if not CheckpointStore(ckpt).paths():
            continue   # killed before its first checkpoint: the restart starts over
        state = latest_checkpoint(ckpt)
        lineage.append(state)
        assert state["counters"]["consumed"] == checkpoint_offsets_sum(state)
        if before:
            assert state["counters"]["consumed"] >= before["consumed"]
        _all_checkpoints_consistent(ckpt)
    sent = producer.finish(timeout=90)
    assert sent.kinds()["unlabeled"] > 0 and sent.poison(), "the stream must mix kinds"
    final = DaemonProcess(bs, ckpt, topic, group, extra_env=FAST_CHECKPOINTS)
    daemons.append(final)
    # The restarted daemon only needs the events after its checkpoint; wait until a
    # checkpoint covers them all (consumed is restored from the checkpoint, not a replay).
    def everything_checkpointed() -> bool:
        final.assert_alive()
        if not CheckpointStore(ckpt).paths():
            return False
        consumed = latest_checkpoint(ckpt)["counters"]["consumed"]
        assert consumed <= n, f"{consumed} consumed of {n} sent: events counted twice"
        return consumed == n
    wait_for(lambda: final.metric("stream_learner_ready") == 1, 60, "final daemon consuming")
    wait_for(everything_checkpointed, 120, f"a checkpoint of all {n} events")
    assert final.terminate() == 0
    # By identity: the final checkpoint's positions cover each partition's offsets
    # 0..end-1 exactly, its counters match the kinds sent (by reject reason), and every
    # poison offset is in the DLQ with its reason, every unlabeled id in predictions
    # (at least once each: kills land between a send and its checkpoint).
    state = latest_checkpoint(ckpt)
    check_checkpoint(state, sent)
    check_outputs(bs, sent, dlq, predictions)
    _all_checkpoints_consistent(ckpt)
    check_lineage(lineage + _kept(ckpt), sent)


def test_sigterm_checkpoints_and_restart_resumes(broker, daemons, tmp_path: Path) -> None:
    bs = broker.bootstrap_servers
    topic, group = unique("term"), unique("g")
    ensure_topics(bs, {topic: 2, f"{topic}.dlq": 1, f"{topic}.predictions": 1})
    produce(bs, topic, "sea", 2000)
    ckpt = tmp_path / "ckpt"
    # Checkpoint intervals far away: only the SIGTERM path writes one.
    slow = {"STREAM_LEARNER_CHECKPOINT__EVERY_EVENTS": "1000000",
            "STREAM_LEARNER_CHECKPOINT__EVERY_SECONDS": "3600"}
    first = DaemonProcess(bs, ckpt, topic, group, extra_env=slow)
    daemons.append(first)
    first.wait_consumed(2000)
    assert first.terminate() == 0
    state = latest_checkpoint(ckpt)
    assert state["counters"]["consumed"] == 2000 == checkpoint_offsets_sum(state)
    n_classes_before = len(state["learner"]["labels"]["labels"])

    produce(bs, topic, "sea", 1000, start_id=2000)
    second = DaemonProcess(bs, ckpt, topic, group, extra_env=slow)
    daemons.append(second)
    second.wait_consumed(1000)
    time.sleep(1.0)   # would reveal a replay of the first 2000 events
    assert second.metric("stream_learner_events_consumed_total") == 1000
    assert second.terminate() == 0
    state = latest_checkpoint(ckpt)
    assert state["counters"]["consumed"] == 3000 == checkpoint_offsets_sum(state)
    assert len(state["learner"]["labels"]["labels"]) == n_classes_before
