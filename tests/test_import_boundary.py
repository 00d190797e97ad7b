"""The process boundary is the import boundary (issue 15, item 7).

With ``model.worker=process`` the Kafka loop owns no model: its process imports neither
torch nor avalanche (~500 MB of resident memory for ``import torch`` alone), the worker
writes and reads the checkpoint files, and a checkpoint still loses nothing. Inline, the
model is in the daemon's process, and the files are the same: either mode resumes the
other's.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from stream_learner.synth import ensure_topics, produce

from conftest import (DaemonProcess, checkpoint_offsets_sum, latest_checkpoint,
                      learner_worker_pid, unique)

TESTS = Path(__file__).resolve().parent
MAX_LOOP_RSS = 300 * 2**20
MAX_BOTH_RSS = int(1.1 * 2**30)
SLOW = {"STREAM_LEARNER_CHECKPOINT__EVERY_EVENTS": "1000000",
        "STREAM_LEARNER_CHECKPOINT__EVERY_SECONDS": "3600"}

REFUSE = """
import sys
class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'avalanche'):
            raise ImportError('the Kafka loop imported ' + name)
sys.meta_path.insert(0, Refuse())
import stream_learner.cli, stream_learner.daemon, stream_learner.learner_host
"""


def test_the_loop_modules_import_without_torch() -> None:
    """Every import chain of the loop's modules: a finder refuses torch and avalanche."""
    done = subprocess.run([sys.executable, "-c", REFUSE], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(TESTS.parent)}, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]


def _maps_torch(pid: int) -> bool:
    return "libtorch" in Path(f"/proc/{pid}/maps").read_text()


def test_worker_process_loop_holds_no_torch_and_checkpoints_lose_nothing(
        broker, daemons, tmp_path: Path) -> None:
    bs = broker.bootstrap_servers
    topic, group = unique("imports"), unique("g")
    ensure_topics(bs, {topic: 2, f"{topic}.dlq": 1, f"{topic}.predictions": 1})
    ckpt = tmp_path / "ckpt"
    produce(bs, topic, "sea", 2000)
    # Inline first: its checkpoint is the one the worker must restore (one format).
    inline = DaemonProcess(bs, ckpt, topic, group,
                           extra_env={**SLOW, "STREAM_LEARNER_MODEL__WORKER": "inline"})
    daemons.append(inline)
    inline.wait_consumed(2000)
    assert inline.terminate() == 0
    assert latest_checkpoint(ckpt)["counters"]["consumed"] == 2000

    produce(bs, topic, "sea", 1000, start_id=2000)
    modules = tmp_path / "loop-modules.txt"
    env = {**SLOW, "STREAM_LEARNER_MODEL__WORKER": "process",
           "LOOP_MODULES_FILE": str(modules),
           "PYTHONPATH": os.pathsep.join([str(TESTS.parent), str(TESTS)])}
    loop = DaemonProcess(bs, ckpt, topic, group, extra_env=env, module="loop_modules")
    daemons.append(loop)
    loop.wait_consumed(1000)
    metrics = loop.metrics()
    assert metrics["stream_learner_events_consumed_total"] == 1000   # resumed, no replay
    worker = learner_worker_pid(loop.proc.pid)
    assert _maps_torch(worker) and not _maps_torch(loop.proc.pid)
    loop_rss = metrics["process_resident_memory_bytes"]
    worker_rss = metrics["stream_learner_worker_process_resident_memory_bytes"]
    assert 0 < loop_rss <= MAX_LOOP_RSS, loop_rss
    assert 0 < worker_rss and loop_rss + worker_rss <= MAX_BOTH_RSS, (loop_rss, worker_rss)
    assert loop.terminate() == 0

    names = set(modules.read_text().split())
    assert "stream_learner.daemon" in names          # the file is the loop's, written last
    assert not {n for n in names if n.split(".")[0] in ("torch", "avalanche")}
    state = latest_checkpoint(ckpt)
    assert state["counters"]["consumed"] == 3000 == checkpoint_offsets_sum(state)
    assert state["learner"]["labels"]["labels"]       # the worker's part is in the file
