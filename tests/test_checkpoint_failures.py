"""Checkpoints that cannot be written or read back: the daemon keeps its promises.

* The checkpoint disk fills up (a real tmpfs, filled to ENOSPC): the loop keeps running
  and /healthz stays 200, /readyz fails naming the directory, failures are counted by
  reason, consumption pauses at ``checkpoint.max_unsaved_events``, nothing half-written
  is left behind; once space is freed it checkpoints and resumes by itself, and every
  event is accounted for once.
* The newest checkpoint is corrupt: the daemon restores the older one and replays from
  its offsets, although the group's committed offset (the lost checkpoint's) is ahead.
  Every event is accounted for (before the fix it jumped to the committed offset and the
  events in between were never learned).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest

from stream_learner.checkpoint import CheckpointStore
from stream_learner.synth import ensure_topics

from accounting import Sent, check_checkpoint, check_outputs, send_mixed
from conftest import DaemonProcess, http_get, latest_checkpoint, unique, wait_for

BATCH = 64
MAX_UNSAVED = 300


def wait_consumed_exactly(d: DaemonProcess, n: int, timeout: float = 90.0) -> None:
    def reached() -> bool:
        d.assert_alive()
        got = d.metric("stream_learner_events_consumed_total")
        assert got <= n, f"consumed {got} > {n} sent: events processed twice"
        return got == n
    wait_for(reached, timeout, f"exactly {n} events consumed (log: {d.log_path})")


def checkpoint_covering(ckpt: Path, consumed: int) -> dict:
    def covering() -> dict | None:
        state = CheckpointStore(ckpt).load_latest()     # None: the first is not written yet
        return state if state is not None and state["counters"]["consumed"] == consumed \
            else None
    return wait_for(covering, 30, f"a checkpoint after {consumed} events")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs: a real filesystem that fills up and answers ENOSPC."""
    where = tmp_path / "ckpt"
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(where)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"mounting a tmpfs needs CAP_SYS_ADMIN: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(directory: Path) -> Path:
    filler = directory / "filler"
    with open(filler, "wb") as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        except OSError:
            pass
    return filler


def test_disk_full_pauses_then_resumes(small_disk: Path, broker, daemons) -> None:
    bs, topic = broker.bootstrap_servers, unique("diskfull")
    dlq, predictions = f"{topic}.dlq", f"{topic}.predictions"
    ensure_topics(bs, {topic: 1, dlq: 1, predictions: 1})
    sent = Sent(topic)
    send_mixed(bs, topic, 500, sent)
    d = DaemonProcess(bs, small_disk, topic, unique("g"), extra_env={
        "STREAM_LEARNER_CHECKPOINT__EVERY_SECONDS": "0.5",
        "STREAM_LEARNER_CHECKPOINT__MAX_UNSAVED_EVENTS": str(MAX_UNSAVED),
        "STREAM_LEARNER_BATCH__SIZE": str(BATCH)}, log_path=small_disk.parent / "daemon.log")
    daemons.append(d)
    wait_consumed_exactly(d, 500)
    checkpoint_covering(small_disk, 500)
    assert d.metric('stream_learner_checkpoint_failures_total{reason="no_space"}') == 0

    filler = fill(small_disk)
    send_mixed(bs, topic, 1000, sent, start_id=500, seed=43)
    wait_for(lambda: d.metric('stream_learner_checkpoint_failures_total{reason="no_space"}')
             >= 2, 30, "checkpoint failures counted as no_space")
    # Paused after max_unsaved_events (the batch that crossed it is still processed).
    wait_for(lambda: d.metric("stream_learner_events_consumed_total") >= 500 + MAX_UNSAVED,
             30, "consumption up to max_unsaved_events")
    time.sleep(3.0)
    consumed = d.metric("stream_learner_events_consumed_total")
    assert 500 + MAX_UNSAVED <= consumed < 500 + MAX_UNSAVED + BATCH, consumed
    time.sleep(2.0)
    assert d.metric("stream_learner_events_consumed_total") == consumed, "not paused"
    d.assert_alive()
    assert http_get(d.url + "/healthz")[0] == 200
    status, body = http_get(d.url + "/readyz")
    assert status == 503 and f"checkpoints fail in {small_disk} (no_space" in body, body
    assert d.metric("stream_learner_ready") == 0
    assert not [e.name for e in os.scandir(small_disk) if e.name.endswith(".tmp")]
    log_text = d.log_path.read_text(errors="replace")
    assert log_text.count("checkpoints fail in") == 1, "logged once per reason"
    assert "Traceback" not in log_text

    filler.unlink()
    wait_consumed_exactly(d, 1500)
    checkpoint_covering(small_disk, 1500)
    wait_for(lambda: http_get(d.url + "/readyz")[0] == 200, 10, "ready again")
    assert d.terminate() == 0
    check_checkpoint(latest_checkpoint(small_disk), sent)
    check_outputs(bs, sent, dlq, predictions)


def test_corrupt_newest_checkpoint_replays_instead_of_skipping(tmp_path: Path, broker,
                                                                daemons) -> None:
    bs, topic = broker.bootstrap_servers, unique("corrupt")
    dlq, predictions = f"{topic}.dlq", f"{topic}.predictions"
    ensure_topics(bs, {topic: 1, dlq: 1, predictions: 1})
    ckpt, group = tmp_path / "ckpt", unique("g")
    env = {"STREAM_LEARNER_CHECKPOINT__EVERY_SECONDS": "0.5"}
    sent = Sent(topic)
    send_mixed(bs, topic, 500, sent)
    d = DaemonProcess(bs, ckpt, topic, group, extra_env=env)
    daemons.append(d)
    wait_consumed_exactly(d, 500)
    checkpoint_covering(ckpt, 500)
    send_mixed(bs, topic, 500, sent, start_id=500, seed=43)
    wait_consumed_exactly(d, 1000)
    checkpoint_covering(ckpt, 1000)
    assert d.terminate() == 0          # committed: offset 1000, the newest checkpoint's

    files = sorted(ckpt.glob("ckpt-*.pt"))
    files[-1].write_bytes(b"\x80\x04 not a checkpoint")
    older = latest_checkpoint(ckpt)    # what the restart will fall back to
    behind = older["offsets"][topic][0]
    assert behind < 1000, "the fallback checkpoint must be behind the committed offset"

    d = DaemonProcess(bs, ckpt, topic, group, extra_env=env)
    daemons.append(d)
    wait_consumed_exactly(d, 1000 - behind)      # the metric counts this process's events
    checkpoint_covering(ckpt, 1000)
    assert d.terminate() == 0
    log_text = d.log_path.read_text(errors="replace")
    assert f"replaying from {behind}" in log_text and "none skipped" in log_text
    final = latest_checkpoint(ckpt)
    # Every offset, so every event id, in the surviving model's lineage, once.
    assert final["lineage"]["ranges"] == {topic: {0: [[0, 1000]]}}, final["lineage"]
    assert final["lineage"]["overlapping_events"] == 0
    check_checkpoint(final, sent)
    check_outputs(bs, sent, dlq, predictions)
