"""Two replicas in one group split the partitions; hand-overs neither lose nor repeat."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import ROOT, DaemonProcess, latest_checkpoint, read_topic, unique, wait_for
from stream_learner.synth import ensure_topics

ENV = {"STREAM_LEARNER_CHECKPOINT__EVERY_SECONDS": "0.5"}


def _events_per_partition(bs: str, topic: str) -> dict[int, int]:
    """Records per partition, counted by reading (Tansu's ListOffsets answer can trail the
    log by a few records); each partition's offsets are checked to run 0..count-1."""
    offsets: dict[int, list[int]] = {}
    for r in read_topic(bs, topic, expected=10**9, timeout=15):
        offsets.setdefault(r.partition, []).append(r.offset)
    for p, offs in offsets.items():
        assert sorted(offs) == list(range(len(offs))), f"partition {p}: offsets not 0..n-1"
    return {p: len(offs) for p, offs in offsets.items()}


def _consumed(state: dict) -> int:
    return int(state["counters"]["consumed"])


def test_replicas_split_partitions_and_hand_over(broker, daemons, tmp_path: Path) -> None:
    bs = broker.bootstrap_servers
    topic, group = unique("rebal"), unique("g")
    ensure_topics(bs, {topic: 4, f"{topic}.dlq": 1, f"{topic}.predictions": 1})
    producer = subprocess.Popen(
        [sys.executable, "-m", "stream_learner", "produce", "--stream", "sea", "--count", "1000000",
         "--rate", "600", "--topic", topic, "--bootstrap-servers", bs],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt_a, ckpt_b = tmp_path / "a", tmp_path / "b"
    try:
        a = DaemonProcess(bs, ckpt_a, topic, group, extra_env=ENV)
        b = DaemonProcess(bs, ckpt_b, topic, group, extra_env=ENV)
        daemons += [a, b]
        # Both get a share of the partitions and learn from it.
        wait_for(lambda: a.metric("stream_learner_events_consumed_total") > 200
                 and b.metric("stream_learner_events_consumed_total") > 200, 90,
                 "both replicas consuming")
        assert a.terminate() == 0           # A hands its partitions over to B
        a_first = latest_checkpoint(ckpt_a)

        wait_for(lambda: b.metric("stream_learner_events_consumed_total")
                 > _consumed(latest_checkpoint(ckpt_b)) + 500
                 if list(ckpt_b.glob("ckpt-*")) else False, 60, "B alone")
        # A comes back with a checkpoint that is now behind the group's commits: it must
        # start from the commits, not re-learn what B learned meanwhile.
        a2 = DaemonProcess(bs, ckpt_a, topic, group, extra_env=ENV)
        daemons.append(a2)
        wait_for(lambda: a2.metric("stream_learner_events_consumed_total") > 200, 90,
                 "A consuming again")
        # Stop the stream; the topic's end offsets say how many events there are.
        producer.terminate()
        producer.wait(30)
        per_partition = _events_per_partition(bs, topic)
        assert sorted(per_partition) == [0, 1, 2, 3]
        n = sum(per_partition.values())
        assert b.terminate() == 0
        # A2 finishes the rest alone.
        def done() -> bool:
            a2.assert_alive()
            total = _consumed(latest_checkpoint(ckpt_b)) + _consumed(
                latest_checkpoint(ckpt_a)) if list(ckpt_a.glob("ckpt-*")) else 0
            return total >= n
        wait_for(done, 90, "all events processed by the group")
        assert a2.terminate() == 0
    finally:
        producer.kill()
    final_a, final_b = latest_checkpoint(ckpt_a), latest_checkpoint(ckpt_b)
    assert _consumed(final_a) > _consumed(a_first) > 0
    assert _consumed(final_b) > 0
    # Exactly once across the group: no event learned by both replicas, none skipped.
    assert _consumed(final_a) + _consumed(final_b) == n, (
        per_partition, final_a["offsets"][topic], final_b["offsets"][topic])
    # Positions, per partition: whichever replica owned it last ends exactly at its end
    # (not one short, not past it); no position anywhere lies beyond the end. With the
    # counts above, offsets 0..end-1 of every partition were processed once in all.
    # (A checkpoint also keeps positions of partitions it gave away: hints, superseded by
    # the group's commit when the partition comes back.)
    pa, pb = final_a["offsets"][topic], final_b["offsets"][topic]
    assert set(pa) | set(pb) == set(per_partition)
    for p, end in per_partition.items():
        assert max(pa.get(p, 0), pb.get(p, 0)) == end, (p, pa.get(p), pb.get(p), end)
    assert sum(max(pa.get(p, 0), pb.get(p, 0)) for p in per_partition) == n
