"""Crashes and stops lose nothing: kill -9 at random points, SIGTERM, restart."""

from __future__ import annotations

import random
import subprocess
import sys
import time
from pathlib import Path

from stream_learner.checkpoint import CheckpointStore
from stream_learner.synth import ensure_topics, produce

from conftest import (ROOT, DaemonProcess, checkpoint_offsets_sum, latest_checkpoint, unique,
                      wait_for)

FAST_CHECKPOINTS = {"STREAM_LEARNER_CHECKPOINT__EVERY_EVENTS": "1500",
                    "STREAM_LEARNER_CHECKPOINT__EVERY_SECONDS": "0.5"}


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


def test_kill9_at_random_points_loses_nothing(broker, daemons, tmp_path: Path) -> None:
    bs = broker.bootstrap_servers
    topic, group, n = unique("crash"), unique("g"), 24_000
    ensure_topics(bs, {topic: 2, f"{topic}.dlq": 1, f"{topic}.predictions": 1})
    # A live producer at a modest rate, so kills land mid-stream.
    producer = subprocess.Popen(
        [sys.executable, "-m", "stream_learner", "produce", "--stream", "sea", "--count", str(n),
         "--rate", "800", "--topic", topic, "--bootstrap-servers", bs],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = tmp_path / "ckpt"
    rng = random.Random(7)
    try:
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
            assert state["counters"]["consumed"] == checkpoint_offsets_sum(state)
            if before:
                assert state["counters"]["consumed"] >= before["consumed"]
            _all_checkpoints_consistent(ckpt)
        assert producer.wait(60) == 0
        final = DaemonProcess(bs, ckpt, topic, group, extra_env=FAST_CHECKPOINTS)
        daemons.append(final)
        resumed_from = (latest_checkpoint(ckpt)["counters"]["consumed"]
                        if CheckpointStore(ckpt).paths() else 0)
        # The restarted daemon only needs the events after its checkpoint (often none: the
        # last round may have checkpointed everything), so also wait until it consumes.
        wait_for(lambda: final.metric("stream_learner_ready") == 1, 60, "final daemon consuming")
        final.wait_consumed(n - resumed_from, timeout=120)
        assert final.terminate() == 0
    finally:
        producer.kill()
    state = latest_checkpoint(ckpt)
    assert state["counters"]["consumed"] == n == checkpoint_offsets_sum(state)
    assert state["counters"]["learned"] + state["counters"]["held_out"] == n
    _all_checkpoints_consistent(ckpt)


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
