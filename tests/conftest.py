"""Shared fixtures: a real Tansu broker process and daemons run as real processes."""

from __future__ import annotations

import os
import re
import shutil
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
from kafka import KafkaConsumer

# Re-exported for the tests: the benchmarks run daemons the same way.
from stream_learner.benchmarks.processes import DaemonProcess, http_get, wait_for  # noqa: F401
from stream_learner.broker import EmbeddedBroker
from stream_learner.checkpoint import CheckpointStore

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    log = tmp_path_factory.mktemp("broker") / "tansu.log"
    with EmbeddedBroker(log_file=log) as b:
        yield b


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Tiny matmuls: one intra-op thread is as fast alone and far faster on a busy box.

    Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``.
    """
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """No STREAM_LEARNER_* (or systemd) variable of the test run leaks into a config."""
    for name in list(os.environ):
        if name.startswith("STREAM_LEARNER_") or name == "STATE_DIRECTORY":
            monkeypatch.delenv(name)
    yield monkeypatch


PROMETHEUS = "`./dev setup` installs it (Debian's prometheus package)"
_COMPARISON = re.compile(r"\s(==|!=|>=|<=|>|<)\s+(?!bool\b)")


def require_tool(name: str, install: str) -> str:
    """The tool's path, from the venv or PATH; a missing tool fails the test, never skips."""
    venv = Path(sys.executable).parent / name
    found = str(venv) if venv.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found (in {venv.parent} or on PATH): {install}")
    return found


def with_bool(expr: str) -> str:
    """Every comparison as a 0/1 series: a condition then returns data whether it holds or not.

    >>> with_bool("a > 0.5 and on (job) b == 0")
    'a > bool 0.5 and on (job) b == bool 0'
    """
    return _COMPARISON.sub(lambda m: f" {m.group(1)} bool ", expr)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def daemons() -> Iterator[list[DaemonProcess]]:
    """Collects started daemons and makes sure none outlives its test."""
    started: list[DaemonProcess] = []
    yield started
    for d in started:
        d.close()


def read_topic(bootstrap: str, topic: str, expected: int, timeout: float = 30.0) -> list[Any]:
    """All records of a topic (at least ``expected`` of them), from the beginning."""
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             max_partition_fetch_bytes=8 * 1024 * 1024,
                             fetch_max_bytes=64 * 1024 * 1024)
    records: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and len(records) < expected:
            for recs in consumer.poll(timeout_ms=500).values():
                records.extend(recs)
        # A little longer, to catch anything beyond what was expected.
        for recs in consumer.poll(timeout_ms=1000).values():
            records.extend(recs)
    finally:
        consumer.close()
    return records


def latest_checkpoint(ckpt_dir: Path) -> dict[str, Any]:
    state = CheckpointStore(ckpt_dir).load_latest()
    assert state is not None, f"no checkpoint in {ckpt_dir}"
    return state


def checkpoint_offsets_sum(state: dict[str, Any]) -> int:
    return sum(o for parts in state["offsets"].values() for o in parts.values())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Leave out tests marked slow unless a ``-m`` expression was given.

    Not ``-m 'not slow'`` in addopts: a command-line ``-m slow`` replaces that one, and
    ``-m slow`` then ran the slow tests that also matched ... nothing else, while
    ``-m 'slow or not slow'`` was needed for everything. Here ``./dev test`` skips them,
    ``./dev test -m slow`` runs every slow test, ``-m 'slow or not slow'`` runs all.
    """
    if config.getoption("markexpr"):
        return
    slow = [item for item in items if item.get_closest_marker("slow") is not None]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if item.get_closest_marker("slow") is None]


def learner_worker_pid(daemon_pid: int) -> int:
    """The daemon's child that runs the model (not multiprocessing's resource tracker)."""
    children = Path(f"/proc/{daemon_pid}/task/{daemon_pid}/children").read_text().split()
    for pid in children:
        if "resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_text():
            return int(pid)
    raise AssertionError(f"no learner worker among {children}")
